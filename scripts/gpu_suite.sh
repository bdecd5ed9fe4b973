#!/usr/bin/env bash
# One call on the GPU machine: environment, gpu tests, compute-sanitizer, benchmark.
# Usage: OUT=/some/dir [STAGES="env tests sanitize bench train"] [TEST_PATHS=tests/gpu] [BENCH_ARGS="--seq 4096 ..."]
#        [TRAIN_ARGS=...] scripts/gpu_suite.sh
set -u -o pipefail
OUT=${OUT:-/tmp/spattern_gpu_suite}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
STAGES=${STAGES:-"env tests sanitize bench"}
BENCH_ARGS=${BENCH_ARGS:-}
TRAIN_ARGS=${TRAIN_ARGS:-}
PYTEST_ARGS=${PYTEST_ARGS:-}
TEST_PATHS=${TEST_PATHS:-tests/gpu}
declare -A RC
t0=$(date +%s)
has() { [[ " $STAGES " == *" $1 "* ]]; }

if has env; then
  { date -u; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu --format=csv
    python3 -c "import torch, cupy, sys; print('python', sys.version.split()[0]); print('torch', torch.__version__, torch.version.cuda, torch.cuda.get_device_name()); print('cupy', cupy.__version__, 'nvrtc', cupy.cuda.nvrtc.getVersion())"
    nvcc --version | tail -2; which compute-sanitizer ncu; } 2>&1 | tee "$OUT/env.txt"
fi
if has tests; then
  python3 -m pytest -m gpu $TEST_PATHS -q -rs -p no:cacheprovider $PYTEST_ARGS 2>&1 | tee "$OUT/pytest_gpu.log"
  RC[tests]=$?
fi
if has sanitize; then
  compute-sanitizer --tool memcheck --error-exitcode 9 python3 scripts/sanitize_case.py 2>&1 | tee "$OUT/memcheck.log"
  RC[memcheck]=$?
  compute-sanitizer --tool racecheck --racecheck-report all --error-exitcode 9 python3 scripts/sanitize_case.py 2>&1 | tee "$OUT/racecheck.log"
  RC[racecheck]=$?
fi
if has bench; then
  timeout ${BENCH_TIMEOUT:-3000} python3 -m spattern.cli bench attention --json "$OUT/bench_attention.json" $BENCH_ARGS 2>&1 | tee "$OUT/bench.log"
  RC[bench]=$?
fi
if has ncu; then  # the backward kernels of one cell, clocks left alone (METHOD.md)
  timeout ${NCU_TIMEOUT:-90} ncu --clock-control none -k regex:sp_bwd_d -c 3 --section SpeedOfLight --section WarpStateStats \
    --section Occupancy --section LaunchStats python3 scripts/profile_host.py --calls 1 --no-cprofile --backward \
    ${NCU_ARGS:---n 16384 --density 0.1 --family lrs} 2>&1 | tee "$OUT/ncu_backward.log"
  RC[ncu]=$?
fi
if has train; then
  timeout ${TRAIN_TIMEOUT:-3000} python3 -m spattern.cli bench train --json "$OUT/bench_train.json" $TRAIN_ARGS 2>&1 | tee "$OUT/bench_train.log"
  RC[train]=$?
fi
{
  echo "{"
  echo "  \"wall_s\": $(( $(date +%s) - t0 )),"
  echo "  \"stages\": \"$STAGES\","
  first=1; echo "  \"rc\": {"
  for k in "${!RC[@]}"; do [[ $first == 1 ]] || echo ","; first=0; printf '    "%s": %s' "$k" "${RC[$k]}"; done
  echo; echo "  },"
  echo "  \"pytest_summary\": \"$(grep -E '[0-9]+ (passed|failed)' "$OUT/pytest_gpu.log" 2>/dev/null | tail -1 | tr -d '"=')\","
  echo "  \"memcheck_summary\": \"$(grep -E 'ERROR SUMMARY' "$OUT/memcheck.log" 2>/dev/null | tail -1)\","
  echo "  \"racecheck_summary\": \"$(grep -E 'RACECHECK SUMMARY|ERROR SUMMARY' "$OUT/racecheck.log" 2>/dev/null | tail -1)\""
  echo "}"
} > "$OUT/gpu_suite.json"
cat "$OUT/gpu_suite.json"
