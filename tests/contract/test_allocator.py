"""Allocator settings (allocator.py): what each ASE_SO3_MALLOC mode turns on, and that results
are bit-identical with and without them. Each case runs in a fresh process, since the settings
belong to the process."""

import os
import platform
import subprocess
import sys

import numpy as np
import pytest

REPORT = ("import os, ase_so3, ase_so3.allocator as a; "
          "print(os.environ.get('THP_MEM_ALLOC_ENABLE'), '|', a.configure_from_environment())")


def _run(code, malloc=None, thp=None, *args):
    env = {k: v for k, v in os.environ.items() if k not in ("ASE_SO3_MALLOC", "THP_MEM_ALLOC_ENABLE")}
    env.update({k: v for k, v in (("ASE_SO3_MALLOC", malloc), ("THP_MEM_ALLOC_ENABLE", thp))
                if v is not None})
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env, check=True).stdout.strip()


def _glibc() -> bool:
    return sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def test_import_leaves_the_environment_alone():
    code = "import os; before = dict(os.environ); import ase_so3; print(dict(os.environ) == before)"
    assert _run(code) == "True"
    assert _run(REPORT) == "None | system default"


def test_the_command_asks_for_huge_pages_before_torch_loads():
    """``ase-so3`` (ase_so3_command.py) sets THP_MEM_ALLOC_ENABLE before anything imports
    PyTorch, which reads it once at its first allocation."""
    code = ("import sys; sys.argv = ['ase-so3', 'info']; import ase_so3_command; "
            "assert 'torch' not in sys.modules; ase_so3_command.main()")
    assert "allocator: huge pages" in _run(code)
    assert "allocator: system default" in _run(code, "system")


def test_system_mode_leaves_the_allocator_alone():
    assert _run(REPORT, malloc="system") == "None | system default"


def test_user_setting_of_the_torch_variable_wins():
    assert _run(REPORT, thp="0") == "0 | system default"


@pytest.mark.skipif(not _glibc(), reason="mallopt is glibc's")
def test_keep_mode_keeps_freed_memory_on_glibc():
    assert _run(REPORT, malloc="keep") == "None | freed memory kept"
    assert _run(REPORT, malloc="keep", thp="1") == "1 | huge pages + freed memory kept"


def test_results_identical_whatever_the_allocator(tmp_path):
    code = ("import sys, numpy as np, ase_so3, ase_so3.allocator as a\n"
            "from ase.build import molecule\n"
            "from ase_so3.calculator import SO3Calculator\n"
            "a.configure_from_environment()\n"
            "atoms = molecule('CH3CH2OH')\n"
            "atoms.calc = SO3Calculator('escn-rmd17-ethanol', dtype='float64')\n"
            "np.save(sys.argv[1], np.concatenate([[atoms.get_potential_energy()],"
            " atoms.get_forces().ravel()]))\n")
    results = []
    for mode in ("system", "keep"):
        path = tmp_path / f"{mode}.npy"
        _run(code, mode, None, str(path))
        results.append(np.load(path))
    assert np.isfinite(results[0]).all()
    np.testing.assert_array_equal(results[0], results[1])


REUSE = ("import os, resource, torch, ase_so3, ase_so3.allocator as a\n"
         "a.configure_from_environment()\n"
         "faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
         "rss = lambda: int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE')\n"
         "refaults = []\n"
         "for _ in range(20):\n"  # a 100 MB tensor, made and freed 20 times
         "    before = faults(); x = torch.ones(25_000_000); refaults.append(faults() - before); del x\n"
         "big = torch.ones(150_000_000); held = rss(); del big\n"  # 600 MB, above 512 MiB
         "print(sum(f > 20 for f in refaults[1:]), min(refaults[1:]), (held - rss()) / 2 ** 20)")


@pytest.mark.skipif(not _glibc(), reason="mallopt is glibc's")
def test_keep_mode_reuses_freed_blocks_and_returns_large_ones():
    """keep: a freed 100 MB block is reused without page faults; a 600 MB block (above the
    512 MiB threshold) still goes back to the system on free. Without keep, every one of the 19
    reallocations faults its pages in again: ~900 faults here with huge pages (the default; at
    least 48 where every 2 MiB page is huge), ~24,000 in 4 KiB pages (system). A reused block
    takes 0-1 faults, so more than 20 counts as faulting.

    Huge-page tensors are 2 MiB-aligned (posix_memalign), and glibc serves an aligned request
    from a block of size + alignment: a freed block can be just too small for the next request,
    so the heap may grow a few times before every request fits (seen here: at most 4 faulting
    reallocations of 11 in 150 runs, most runs none; CI once caught one on the first reuse)."""
    faulting, _, returned_mb = map(float, _run(REUSE, "keep").split())
    assert faulting <= 9, f"{faulting:.0f} of 19 reallocations faulted with freed memory kept"
    assert returned_mb > 500
    faulting_default, fewest_default, _ = map(float, _run(REUSE, None).split())
    assert faulting_default == 19 and fewest_default > 20
    faulting_system, fewest_system, _ = map(float, _run(REUSE, "system").split())
    assert faulting_system == 19 and fewest_system > 10_000  # 100 MB in 4 KiB pages: ~24,000
