#!/usr/bin/env bash
# One call on the lent H200 machine (no internet, no Ray there): install the carried wheels, run the whole
# test suite (GPU tests included), the README main command through Ray with a GPU actor, a cold
# Inception-v3 optimization on the GPU, and the one-GPU scaling runs. Results land in $OUT.
#   carry: .whl (../shared/device/ray_wheels.sh) and .gpuwhl (nvidia-cudnn-frontend 1.32.0, cp312)
set -uo pipefail
OUT=${OUT:-/tmp/ios_ray_out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 IOS_RAY_CACHE=/tmp/ios_ray_cache
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl .gpuwhl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH
python3 -c "import ray, cudnn, cupy; print('ray', ray.__version__, 'cudnn', cudnn.backend_version(), 'cupy', cupy.__version__)"
t0=$(date +%s)
# the GPU tests and everything whose behaviour changes with a GPU present (the runtime picks it); the
# CPU-only rest runs in CI. pytest-timeout (installed there) turns a hang into a failure.
echo "== tests ==" ; python3 -m pytest -q -p no:cacheprovider --timeout 150 -rfE \
    tests/test_gpu.py tests/test_optimize.py tests/test_optimize_distributed.py tests/test_distributed.py \
    2>&1 | tee "$OUT/pytest.log" | tail -8
echo "== main command: ios-ray optimize (defaults) ==" ; cd /tmp
python3 -m ios_ray.cli optimize --no-progress 2>&1 | tee "$OUT/main.log" | grep -v '^\s*\[' | head -20
python3 -m ios_ray.cli run squeezenet_schedule.json 2>&1 | tail -2 | tee -a "$OUT/main.log"
cd - >/dev/null
echo "== inception_v3 cold on the GPU through one Ray GPU actor ==" 
python3 -m ios_ray.cli optimize inception_v3 --cost gpu --table /tmp/t_inc --out "$OUT/inception_v3_schedule.json" --no-progress 2>&1 \
    | tee "$OUT/inception.log" | grep -v '^\s*\[' | head -12
python3 -m ios_ray.cli run "$OUT/inception_v3_schedule.json" --repeat 10 --number 20 2>&1 | tail -2 | tee -a "$OUT/inception.log"
echo "== one-GPU scaling (cold + warm) ==" 
for m in nasnet randwire; do
  python3 benchmarks/scaling.py --model $m --cost gpu --workers 1 --max-stages 2000 --out "$OUT/scaling_${m}_gpu1.json" 2>&1 | tail -6
done
echo "total $(( $(date +%s) - t0 )) s"
