#!/usr/bin/env bash
# One device call: NASNet r=3 s=8 lazy, cold, 3 actors sharing the H200 (MATH=fp32|tf32|both).  carry: .whl
set -uo pipefail
OUT=${OUT:-/tmp/ios_ray_out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 IOS_RAY_CACHE=/tmp/ios_ray_cache PATH=/tmp/site/bin:$PATH
nproc; nvidia-smi --query-gpu=name --format=csv,noheader
python3 benchmarks/optimize_cost.py --cost gpu --models nasnet --math ${MATH:-both} --workers 3 --workers-per-gpu 3 \
    --no-final-check --budget-s ${BUDGET:-250} --out "$OUT/optimize_cost_nasnet.json" 2>&1 | grep -v '^\s*\[' | tail -12
