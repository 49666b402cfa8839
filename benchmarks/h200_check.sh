#!/usr/bin/env bash
# One device call on the lent H200: carried wheels installed, the GPU tests and every test whose behaviour
# changes with a GPU present, then the latency table of the small models. Results land in $OUT.
#   carry: .whl (../shared/device/ray_wheels.sh nvidia-cudnn-frontend==1.32.0, plus threadpoolctl; then
#   python3 benchmarks/trim_ray_wheel.py, so the tree and the wheels fit the 64 MiB a call carries)
#   usage: bash benchmarks/h200_check.sh [tests|latency|all]
set -uo pipefail
OUT=${OUT:-/tmp/ios_ray_out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 IOS_RAY_CACHE=/tmp/ios_ray_cache
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH
python3 -c "import ray, cudnn, cupy, threadpoolctl; print('ray', ray.__version__, 'cudnn', cudnn.backend_version(), 'cupy', cupy.__version__)"
what=${1:-all}
t0=$(date +%s)
if [[ $what == tests || $what == all ]]; then
  echo "== GPU tests =="
  python3 -m pytest -q -p no:cacheprovider --timeout 240 -rfE tests/test_gpu.py tests/test_final_check.py \
      tests/test_trace.py tests/test_engines.py tests/test_threads.py tests/test_optimize.py ${EXTRA_TESTS:-} \
      2>&1 | tee "$OUT/pytest.log" | tail -15
fi
if [[ $what == latency || $what == all ]]; then
  echo "== latency: squeezenet, inception_v3 (b1, b16), fp32 and tf32 =="
  python3 benchmarks/gpu_latency.py --models squeezenet,inception_v3 --big inception_v3:16 --no-compile \
      --budget-s ${BUDGET_S:-200} --out "$OUT/gpu_latency_small.json" 2>&1 | tee "$OUT/latency.log" | tail -30
fi
echo "total $(( $(date +%s) - t0 )) s"
