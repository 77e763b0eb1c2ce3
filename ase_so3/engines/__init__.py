"""ase_so3 potentials inside other MD engines: i-PI (socket client and in-process driver) and
torch-sim (a batched model interface). Each engine is an optional extra (``ipi``, ``torchsim``)."""
