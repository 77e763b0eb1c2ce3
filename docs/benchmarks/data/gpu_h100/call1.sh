source .gpu/setup.sh || exit 1
timeout 200 python3 -m pytest -p no:cacheprovider -q tests/test_cuda.py tests/test_calculator.py tests/test_inference.py 2>&1 | tee $OUT/pytest_cuda.log | tail -15
A=ase_so3/pretrained/escn-rmd17-aspirin.pt
timeout 330 python3 -m ase_so3.benchmark.speed_table --device cuda --system aspirin --reference mace --json $OUT/speed_aspirin_cuda.json \
  --model escn ours escn-rmd17-aspirin \
  --model escn-compiled ours escn-rmd17-aspirin compile=true \
  --model escn-cudagraphs ours escn-rmd17-aspirin compile=reduce-overhead \
  --model mace mace .gpu/mace_aspirin.model \
  --model mace-compiled mace .gpu/mace_aspirin.model compile_mode=default 2>$OUT/speed_aspirin_cuda.err | tee $OUT/speed_aspirin_cuda.md
tail -3 $OUT/speed_aspirin_cuda.err | cut -c1-600
