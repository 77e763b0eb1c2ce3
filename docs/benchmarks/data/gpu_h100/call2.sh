source .gpu/setup.sh || exit 1
timeout 110 python3 -m pytest -p no:cacheprovider -q -x tests/test_cuda_graphs.py tests/test_cuda.py tests/test_calculator.py tests/test_inference.py -k "not compiled_cuda" 2>&1 | tee $OUT/pytest_cuda2.log | tail -25
ST="python3 -m ase_so3.benchmark.speed_table --device cuda --reference mace"
timeout 220 $ST --system aspirin --system aspirin:4 --json $OUT/speed_aspirin_cuda2.json \
  --model escn ours escn-rmd17-aspirin \
  --model escn-cudagraphs ours escn-rmd17-aspirin cuda_graphs=true \
  --model mace mace .gpu/mace_aspirin.model \
  --model mace-compiled mace .gpu/mace_aspirin.model compile_mode=default 2>$OUT/speed_aspirin_cuda2.err | tee $OUT/speed_aspirin_cuda2.md
tail -2 $OUT/speed_aspirin_cuda2.err | cut -c1-400
timeout 110 $ST --system ethanol:5 --system ethanol:10 --system ethanol:11 --json $OUT/speed_boxes_cuda.json \
  --model escn ours escn-rmd17-ethanol \
  --model mace mace .gpu/mace_ethanol.model 2>$OUT/speed_boxes_cuda.err | tee $OUT/speed_boxes_cuda.md
tail -2 $OUT/speed_boxes_cuda.err | cut -c1-400
timeout 95 python3 -m ase_so3.benchmark.scaling --device cuda --edges 100000 --channels 16 --lmax 2 4 6 --repeats 5 --timeout 60 --json $OUT/scaling_cuda_100k.json 2>&1 | tee $OUT/scaling_cuda_100k.log | tail -12
