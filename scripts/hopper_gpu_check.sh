#!/usr/bin/env bash
# First GPU check of the Hopper forward kernel (issue 13), written to fit one device call (< 600 s).
# Stages (each time-boxed, skipped when the call's budget would run out; a hang shows as rc 124):
#   env       GPU, driver, torch / CuPy / NVRTC versions
#   sass      nvcc cubin of the bf16 D=128 128x128 instantiation: resource usage, HGMMA count, spills
#   smoke     scripts/hopper_case.py over 8 configurations, one process each, 60 s each (JSON lines)
#   tests     pytest tests/gpu/test_hopper_gpu.py
#   sanitize  compute-sanitizer memcheck, racecheck, synccheck on one small case (no mma.sync twin), 2 CTAs
#   host      (not in the default) scripts/hopper_host_profile.py: host time per call, cProfile
#   bench     (not in the default) spattern bench attention on the issue's cells: mma.sync, Hopper (v2 and v1), native
#             FlexAttention, SDPA flash and cuDNN in one run per head dim (BENCH_D="128 64")
#   ncu       (not in the default) Nsight Compute on one launch of the Hopper kernel: dense-equivalent work and the
#             two cells with missed targets
#   overhead  (not in the default) where a short row's time goes: the Hopper kernel and cuDNN at N 4096 (lrs, 16
#             tiles per row at 50%) for 16 / 64 / 256 heads x densities 0.25-1.0, so that time = launch + items x
#             (per-item cost + tiles x per-tile cost) / SMs can be fitted (scripts/hopper_overhead_fit.py)
#   ncu_src   (not in the default) Nsight Compute's per-instruction stall samples (SourceCounters) of the 50% / 4096
#             cell, printed per SASS line as CSV
# Usage: OUT=/some/dir [STAGES="env sass smoke tests sanitize"] [BUDGET=560] scripts/hopper_gpu_check.sh
#        then, if the kernel is correct, a second call: STAGES="env bench" scripts/hopper_gpu_check.sh
set -u -o pipefail
OUT=${OUT:-/tmp/spattern_hopper_check}
mkdir -p "$OUT"
source scripts/device_env.sh  # wheels into /tmp/site, PYTHONPATH, the source revision
STAGES=${STAGES:-"env sass smoke tests sanitize"}
BUDGET=${BUDGET:-560}
BENCH_CELLS=${BENCH_CELLS:-"4096:0.5:no:lrs 8192:0.25:no:lrs 16384:0.1:no:lrs 16384:1.0:no:lrs 4096:0.5:yes:lrs 8192:0.25:yes:lrs 16384:0.1:yes:lrs"}
BENCH_D=${BENCH_D:-"128 64"}
t0=$(date +%s)
declare -A RC
has() { [[ " $STAGES " == *" $1 "* ]]; }
left() { echo $(( BUDGET - ($(date +%s) - t0) )); }
# run NAME SECONDS LOG CMD...: time-boxed to min(SECONDS, what is left), output appended to LOG and shown;
# RC[NAME] = the command's status (124: timed out, e.g. a hang); skipped under 20 s left
run() {
  local name=$1 secs=$2 log=$3; shift 3
  local l; l=$(left)
  if (( l < 20 )); then echo "skip $name: budget spent" | tee -a "$OUT/skipped.txt"; RC[$name]=skipped; return; fi
  (( secs > l )) && secs=$l
  timeout "$secs" "$@" 2>&1 | tee -a "$log"
  RC[$name]=${PIPESTATUS[0]}
}

if has env; then
  { date -u; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv
    python3 -c "import torch, cupy, sys; print('python', sys.version.split()[0]); print('torch', torch.__version__, torch.version.cuda, torch.cuda.get_device_name(), torch.cuda.get_device_capability()); print('cupy', cupy.__version__, 'nvrtc', cupy.cuda.nvrtc.getVersion())"
    nvcc --version | tail -2; which compute-sanitizer cuobjdump ncu; } 2>&1 | tee "$OUT/env.txt"
fi

if has sass; then
  run sass 60 "$OUT/sass.log" python3 - "$OUT" <<'PY'
import re, subprocess, sys
from pathlib import Path
from spattern.runtime import cupy_backend as cb, hopper_backend as hb
out = Path(sys.argv[1])
src = out / "hopper_fwd_inlined.cu"
src.write_text(cb.kernel_source(hb.KERNEL_FILE)[0])
cubin = out / "hopper_bf16_d128_k128.cubin"
r = subprocess.run(["nvcc", "-gencode=arch=compute_90a,code=sm_90a", "-std=c++17", "-cubin", "-Xptxas", "-v",
                    *hb.kernel_defines(1, 128, 128, 2, True), "-o", str(cubin), str(src)], capture_output=True, text=True)
print(r.stderr[-3000:])
if r.returncode == 0:
    print(subprocess.run(["cuobjdump", "-res-usage", str(cubin)], capture_output=True, text=True).stdout[-2000:])
    sass = subprocess.run(["cuobjdump", "-sass", str(cubin)], capture_output=True, text=True).stdout
    (out / "hopper_bf16_d128_k128.sass").write_text(sass)
    for op in ("HGMMA", "WARPGROUP.ARRIVE", "WARPGROUP.DEPBAR", "UTMALDG", "SYNCS", "USETMAXREG", "LDL", "STL", "HMMA"):
        print(op, len(re.findall(r"\b" + re.escape(op), sass)))
PY
fi

if has smoke; then
  # ENV|arguments|pattern (ENV: variable assignments for the case, "-" for none; pattern empty: the case's
  # default); one process per case, so a hang costs 60 s. The v2 defaults (persistent, overlap, ping-pong),
  # then each flag off, then MAX_CTAS=2 so that small cases run many work items per CTA (the persistent loop)
  SMOKE=(
    "-|--d 128 --bk 128|"
    "SPATTERN_HOPPER_PINGPONG=0|--d 128 --bk 128|"
    "SPATTERN_HOPPER_OVERLAP=0 SPATTERN_HOPPER_PERSISTENT=0|--d 128 --bk 128|"
    "SPATTERN_HOPPER_MAX_CTAS=2|--d 128 --bk 128 --heads 4 --n 1000|"
    "SPATTERN_HOPPER_MAX_CTAS=2 SPATTERN_HOPPER_OVERLAP=0|--d 64 --bk 128 --heads 4 --n 1000|"
    "-|--d 128 --bk 64|"
    "SPATTERN_HOPPER_MAX_CTAS=3|--d 64 --bk 64 --dtype fp16 --heads 3 --n 700|"
    "SPATTERN_HOPPER_MAX_CTAS=2|--d 128 --bk 128 --heads 4 --kv-heads 2 --n 1000|local(300) | sink(128)"
    "SPATTERN_HOPPER_MAX_CTAS=2|--d 128 --bk 64 --packed --heads 2 --kv-heads 2|"
    "-|--d 128 --bk 128 --n 2000|full()"
  )
  i=0
  for c in "${SMOKE[@]}"; do
    i=$((i + 1))
    IFS='|' read -r envs args pattern <<< "$c"
    extra=(); [[ -n "$pattern" ]] && extra=(--pattern "$pattern")
    [[ "$envs" == "-" ]] && envs=""
    # shellcheck disable=SC2086
    run "smoke$i" 60 "$OUT/smoke.log" env $envs python3 scripts/hopper_case.py $args "${extra[@]}"
    echo "smoke$i rc=${RC[smoke$i]} ${envs:-defaults} $args ${pattern}" | tee -a "$OUT/smoke_rc.txt"
    # the first two cases (ping-pong on and off) both hung: the rest would hang too, and so would the tests
    if (( i == 2 )) && [[ ${RC[smoke1]} == 124 && ${RC[smoke2]} == 124 ]]; then
      echo "smoke: both variants hung; stopping" | tee -a "$OUT/skipped.txt"; STAGES=${STAGES/tests/}; break
    fi
  done
fi

if has tests; then
  run tests 270 "$OUT/pytest_hopper.log" python3 -m pytest -m gpu tests/gpu/test_hopper_gpu.py -q -rs -p no:cacheprovider
  # again with at most 3 CTAs: every test's problem runs several work items per CTA (the persistent loop,
  # the mask program reloaded when the layout group changes, Q and the K/V ring carried across items), and
  # with the mask programs run by the kernel (the default turns PROGRAM blocks into bitmasks on the host)
  SPATTERN_HOPPER_MAX_CTAS=3 SPATTERN_HOPPER_BITMASK=0 run tests_ctas3 200 "$OUT/pytest_hopper_ctas3.log" \
    python3 -m pytest -m gpu tests/gpu/test_hopper_gpu.py -q -rs -p no:cacheprovider -x
fi

if has sanitize; then
  # 6 work items on 2 CTAs: the persistent loop under the sanitizers
  export SPATTERN_HOPPER_MAX_CTAS=2
  CASE=(scripts/hopper_case.py --no-twin --n 300 --heads 2 --kv-heads 1)
  run memcheck 90 "$OUT/memcheck.log" compute-sanitizer --tool memcheck --error-exitcode 9 python3 "${CASE[@]}"
  run racecheck 90 "$OUT/racecheck.log" compute-sanitizer --tool racecheck --racecheck-report all --error-exitcode 9 python3 "${CASE[@]}"
  run synccheck 60 "$OUT/synccheck.log" compute-sanitizer --tool synccheck --error-exitcode 9 python3 "${CASE[@]}"
  unset SPATTERN_HOPPER_MAX_CTAS
fi

if has host; then
  # where a call's host time goes (cProfile) and whether the GPU waits for the host
  run host 90 "$OUT/host.log" python3 scripts/hopper_host_profile.py --json "$OUT/host_profile.json"
fi

if has bench && has smoke; then
  for k in "${!RC[@]}"; do
    if [[ $k == smoke* && ${RC[$k]} != 0 ]]; then
      echo "bench: $k failed (rc ${RC[$k]}); not timing a wrong kernel" | tee -a "$OUT/skipped.txt"; STAGES=${STAGES/bench/}; break
    fi
  done
fi
if has bench; then
  # both kernels, native FlexAttention and dense SDPA in one process: the ratios are within one run
  # BENCH_REPEAT > 1: the same benchmark again (bench_hopper_d<D>_r<i>.json), to show the spread between runs
  for d in $BENCH_D; do
    for r in $(seq 1 "${BENCH_REPEAT:-1}"); do
      suffix=""; (( ${BENCH_REPEAT:-1} > 1 )) && suffix="_r$r"
      # shellcheck disable=SC2086
      run "bench_d$d$suffix" 300 "$OUT/bench.log" python3 -m spattern.cli bench attention \
        --json "$OUT/bench_hopper_d$d$suffix.json" --head-dim "$d" --cells $BENCH_CELLS \
        --methods ${BENCH_METHODS:-spattern spattern_hopper spattern_hopper_v1 flex_native sdpa_flash sdpa_cudnn} --iters 20
    done
  done
fi

if has ncu; then
  # Nsight Compute, clocks as the GPU sets them (METHOD.md), one launch each: dense-equivalent work (N 8192,
  # 16 heads), then the cells whose targets were missed: 50%/4096 non-causal and 25%/8192 causal (lrs)
  NCU=(ncu --clock-control none --kernel-name sp_hopper_fwd --launch-count 1 --section SpeedOfLight
       --section ComputeWorkloadAnalysis --section WarpStateStats --section SchedulerStats --section Occupancy
       --section LaunchStats)
  CASE=(python3 scripts/hopper_case.py --no-check --heads 16 --kv-heads 16)
  run ncu 120 "$OUT/ncu.log" "${NCU[@]}" "${CASE[@]}" --n 8192 --pattern "full()"
  run ncu_4096 90 "$OUT/ncu.log" "${NCU[@]}" "${CASE[@]}" --n 4096 --lrs 0.5
  run ncu_8192c 90 "$OUT/ncu.log" "${NCU[@]}" "${CASE[@]}" --n 8192 --lrs 0.25 --causal
fi

if has overhead; then
  for h in ${OVERHEAD_HEADS:-16 64 256}; do
    run "overhead_h$h" 120 "$OUT/overhead.log" python3 -m spattern.cli bench attention \
      --json "$OUT/overhead_h$h.json" --head-dim 128 --heads "$h" --iters 20 --methods spattern_hopper sdpa_cudnn \
      --cells 4096:0.25:no:lrs 4096:0.5:no:lrs 4096:0.75:no:lrs 4096:1.0:no:lrs
  done
fi

if has ncu_src; then
  run ncu_src 150 "$OUT/ncu_src.log" ncu --clock-control none --kernel-name sp_hopper_fwd --launch-count 1 \
    --section SourceCounters --section WarpStateStats -f -o "$OUT/ncu_4096_src" \
    python3 scripts/hopper_case.py --no-check --heads 16 --kv-heads 16 --n 4096 --lrs 0.5
  [ -f "$OUT/ncu_4096_src.ncu-rep" ] && ncu --import "$OUT/ncu_4096_src.ncu-rep" --page source --print-source sass \
    --csv > "$OUT/ncu_4096_sass.csv" 2> "$OUT/ncu_src_print.err"
  ls -la "$OUT"/ncu_4096* 2>&1 | tee -a "$OUT/ncu_src.log"
fi

{
  echo "{"
  echo "  \"wall_s\": $(( $(date +%s) - t0 )),"
  echo "  \"stages\": \"$STAGES\","
  first=1; echo "  \"rc\": {"
  for k in "${!RC[@]}"; do [[ $first == 1 ]] || echo ","; first=0; printf '    "%s": "%s"' "$k" "${RC[$k]}"; done
  echo; echo "  },"
  echo "  \"pytest_summary\": \"$(grep -E '[0-9]+ (passed|failed)' "$OUT/pytest_hopper.log" 2>/dev/null | tail -1 | tr -d '"=')\","
  echo "  \"memcheck_summary\": \"$(grep -E 'ERROR SUMMARY' "$OUT/memcheck.log" 2>/dev/null | tail -1)\","
  echo "  \"racecheck_summary\": \"$(grep -E 'RACECHECK SUMMARY|ERROR SUMMARY' "$OUT/racecheck.log" 2>/dev/null | tail -1)\","
  echo "  \"synccheck_summary\": \"$(grep -E 'ERROR SUMMARY' "$OUT/synccheck.log" 2>/dev/null | tail -1)\""
  echo "}"
} > "$OUT/hopper_check.json"
cat "$OUT/hopper_check.json"
