"""Atomic file writes (write to a temporary file in the same folder, fsync, then rename) and one
writer per output folder (:func:`folder_lock`)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import time
from pathlib import Path

from ase_so3.errors import ASESO3Error

LOCK_NAME = ".ase_so3.lock"


class FolderInUseError(ASESO3Error, RuntimeError):
    """Another process writes into this output folder."""


@contextlib.contextmanager
def folder_lock(folder, command: str):
    """Hold ``folder/.ase_so3.lock`` while the block runs: a second process that asks for the same
    folder gets :class:`FolderInUseError` at once, naming the holder. The lock is the kernel's
    (``flock``), so it goes with its process: a process killed with ``kill -9`` leaves a file that
    no longer blocks anyone (``--resume`` takes over). Without ``fcntl`` (Windows) nothing is
    locked."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    handle = open(path, "a+")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            try:
                holder = json.loads(handle.read() or "{}")
            except ValueError:
                holder = {}
            raise FolderInUseError(
                f"{folder} is in use by another {holder.get('command', 'ase_so3')} process (pid "
                f"{holder.get('pid', '?')} on {holder.get('host', '?')}, started "
                f"{holder.get('started', '?')}); wait for it to end or stop it, or write into "
                "another folder (output=...)") from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"command": command, "pid": os.getpid(),
                                 "host": socket.gethostname(),
                                 "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}))
        handle.flush()
        yield
    finally:
        handle.close()  # releases the lock


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path; on success it replaces ``path`` in one rename, on error it is removed
    and ``path`` keeps its previous content."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; use the usual mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
