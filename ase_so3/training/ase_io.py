"""ASE I/O format ``ase_so3_h5`` (entry-point group ``ase.ioformats``):
``ase.io.read("data.h5", ":")`` and ``ase.io.write("data.h5", images)``.

Read structures carry their labels as a SinglePointCalculator (energy, forces, stress: those the
file holds). Writing takes the labels each structure's calculator holds, any of them may be
missing; ``append=True`` adds to an existing file (its splits kept), and an existing file is
replaced only with ``overwrite=True``. Written files have no splits of their own; use
``ase-so3 convert`` for files with train/val/test splits.
"""

from __future__ import annotations

from ase.utils.plugins import ExternalIOFormat

ase_so3_h5_format = ExternalIOFormat(
    desc="ase_so3 HDF5 data set", code="+S", module="ase_so3.training.ase_io", ext="h5",
    magic=b"\x89HDF\r\n\x1a\n")


def read_ase_so3_h5(filename, index=slice(None)):
    from ase_so3.training.hdf5 import HDF5Dataset
    ds = HDF5Dataset(filename)
    try:
        for i in range(len(ds))[index]:
            yield ds[i].to_atoms()
    finally:
        ds.close()


def write_ase_so3_h5(filename, images, append: bool = False, overwrite: bool = False):
    from pathlib import Path

    from ase import Atoms

    from ase_so3.training.hdf5 import Structure, append_structures, write_dataset
    if isinstance(images, Atoms):
        images = [images]
    new = [Structure.from_atoms(a) for a in images]
    path = Path(filename)
    if path.exists() and append:
        append_structures(path, new, provenance=f"{len(new)} structures appended through "
                                                "ase.io.write")
        return
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass append=True to add the structures to it or "
                              "overwrite=True to replace it")
    write_dataset(path, new, {}, provenance="written through ase.io.write")
