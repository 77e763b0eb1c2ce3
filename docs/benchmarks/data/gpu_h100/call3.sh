source .gpu/setup.sh || exit 1
timeout 60 python3 -m pytest -p no:cacheprovider -q tests/test_calculator.py tests/test_inference.py 2>&1 | tail -3
timeout 60 python3 .gpu/prof_mace.py 2>&1 | grep -v Warning | tee $OUT/prof_mace.log | tail -40
ST="python3 -m ase_so3.benchmark.speed_table --device cuda --reference mace --timeout 150"
PYTORCH_JIT=0 timeout 60 $ST --system ethanol:5 --system ethanol:10 --json $OUT/speed_mace_nojit.json --model mace mace .gpu/mace_ethanol.model 2>/dev/null
timeout 300 $ST --system ethanol:5 --system ethanol:10 --json $OUT/speed_boxes_cuda3.json \
  --model escn ours escn-rmd17-ethanol --model escn-cudagraphs ours escn-rmd17-ethanol cuda_graphs=true \
  --model mace mace .gpu/mace_ethanol.model --model mace-compiled mace .gpu/mace_ethanol.model compile_mode=default 2>$OUT/speed_boxes_cuda3.err
