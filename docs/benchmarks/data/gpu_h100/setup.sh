# sourced at the start of every device call: wheels, the package, versions
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . >/tmp/install.log 2>&1 || { tail -5 /tmp/install.log; export PYTHONPATH=/tmp/site:$PWD; }
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv,noheader
python3 -c "import ase_so3, torch, e3nn, ase, vesin, mace; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'e3nn', e3nn.__version__, 'ase', ase.__version__, 'mace', getattr(mace, '__version__', '?'), torch.cuda.get_device_name(0))"
