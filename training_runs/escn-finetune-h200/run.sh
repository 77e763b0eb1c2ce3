#!/usr/bin/env bash
# Fine-tuning of the shipped eSCN potentials on one NVIDIA H200, all at once (one process per
# run, one CPU thread each): the from-scratch weights (init_from), the recommended config, a new
# cosine_budget schedule from LR over BUDGET minutes. Run in the repository root with
# runs/rmd17_X_01.h5 converted as in configs/escn-rmd17.yaml and, where the machine reaches no
# package index, .whl/ holding the wheels of ase and vesin. Writes $OUT/finetune.tar.gz.
set -u
OUT=${OUT:-out}; BUDGET=${BUDGET:-6.5}; LIMIT=${LIMIT:-500}; LRS=${LRS:-"0.003 0.001"}
# INIT: a folder of X.pt files to start from (default: training_runs/escn-rmd17-X/potential.pt)
mkdir -p "$OUT" /tmp/ft
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; nproc; git rev-parse HEAD 2>/dev/null
  python3 -c "import sys, torch, e3nn, ase, vesin, h5py, numpy; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'e3nn', e3nn.__version__, 'ase', ase.__version__, 'vesin', vesin.__version__, 'numpy', numpy.__version__)"
} > /tmp/ft/machine.txt 2>&1
cat /tmp/ft/machine.txt
run() {  # name molecule lr
    local init=${INIT:+$INIT/$2.pt}  # default: the from-scratch potential of training_runs/
    timeout "$LIMIT" python3 -m ase_so3 train configs/escn-rmd17.yaml data="runs/rmd17_$2_01.h5" \
        output="/tmp/ft/$1" time_budget_minutes="$BUDGET" threads=1 seed=0 device=cuda \
        init_from="${init:-training_runs/escn-rmd17-$2/potential.pt}" lr="$3" progress=false > "/tmp/ft/$1.log" 2>&1
    echo "$1 rc=$?" >> /tmp/ft/status.txt
}
set -- $LRS  # the first rate for every molecule, the second for the three nearest their targets
for m in aspirin azobenzene benzene ethanol malonaldehyde naphthalene paracetamol salicylic toluene uracil; do
    run "escn-$m-lr$1" "$m" "$1" &
done
for m in aspirin malonaldehyde paracetamol; do
    run "escn-$m-lr$2" "$m" "$2" &
done
if [ "${CUDA_TESTS:-1}" = 1 ]; then
    timeout "$LIMIT" python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_cuda_graphs.py \
        tests/test_calculator.py -k "cuda or gpu" > /tmp/ft/pytest_cuda.log 2>&1
    echo "pytest rc=$?" >> /tmp/ft/status.txt
fi
wait
nvidia-smi >> /tmp/ft/machine.txt 2>&1
rm -f /tmp/ft/*/checkpoint_*.pt
tar czf "$OUT/finetune.tar.gz" -C /tmp/ft .
cat /tmp/ft/status.txt; tail -n 3 /tmp/ft/*.log
