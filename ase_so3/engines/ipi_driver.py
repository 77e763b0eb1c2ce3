"""An i-PI Python driver for ase_so3 potentials, evaluated in batches in one model pass.

Use it inside the i-PI process (no sockets) with a ``<ffdirect>`` force field::

    <ffdirect name="so3" pbc="false">
      <pes>custom</pes>
      <pes_path>PATH</pes_path>   <!-- python -m ase_so3.engines.ipi_driver -->
      <batch_size>8</batch_size>  <!-- e.g. the number of beads -->
      <parameters>{template: init.xyz, potential: escn-rmd17-ethanol}</parameters>
    </ffdirect>

or as a separate process, ``i-pi-py_driver -m custom -P PATH -u -a NAME -o
template=init.xyz,potential=escn-rmd17-ethanol``, where PATH is this file (printed by
``python -m ase_so3.engines.ipi_driver``), so nothing is copied into i-PI. Parameters:
``template`` (structure file with i-PI's atoms in i-PI's order), ``potential`` (file or shipped
name), ``device`` (default cpu), ``dtype`` (default float64), ``batch_size`` (structures per model
pass, default 32). The virial is returned for 3-D periodic templates only (zero otherwise).
"""

import numpy as np
from ipi.pes._ase import ASEDriver

__DRIVER_NAME__ = "ase_so3"
__DRIVER_CLASS__ = "SO3Driver"


class SO3Driver(ASEDriver):
    """i-PI's ASE driver with an :class:`~ase_so3.SO3Calculator`, batched through
    ``calculate_many`` when i-PI sends several structures at once."""

    def __init__(self, template, potential, device="cpu", dtype="float64", batch_size=32,
                 *args, **kwargs):
        self.potential, self.device, self.dtype = potential, device, dtype
        self.batch_size = int(batch_size)
        super().__init__(template, *args, **kwargs)

    def check_parameters(self):
        from ase_so3.calculator import SO3Calculator
        super().check_parameters()
        self.ase_calculator = SO3Calculator(self.potential, device=self.device, dtype=self.dtype)
        self.periodic = bool(self.template_ase.pbc.all())

    def compute_structure(self, cell, pos):
        return self.compute([cell], [pos])[0]

    def compute(self, cell, pos):
        if not isinstance(cell, list):
            return self.compute_structure(cell, pos)
        images = []
        for c, p in zip(cell, pos):
            c, p = self.convert_units(c, p)
            atoms = self.template_ase.copy()
            atoms.positions[:] = np.asarray(p).reshape(-1, 3)
            atoms.cell[:] = c
            images.append(atoms)
        results = self.ase_calculator.calculate_many(images, batch_size=self.batch_size)
        out = []
        for atoms, r in zip(images, results):
            # molecules and slabs: zero virial (i-PI always asks for one)
            props = {"energy": r["energy"], "forces": r["forces"],
                     "stress": np.asarray(r["stress"]) if self.periodic else np.zeros((3, 3))}
            out.append(self.post_process(props, atoms))
        return out


if __name__ == "__main__":
    print(__file__)
