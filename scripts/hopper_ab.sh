#!/usr/bin/env bash
# A/B of two Hopper kernel variants in one process per repeat (issue 13): the methods' order flips every
# repeat, so that a method's place in the row (clock ramp, cache state) cannot pass for a kernel effect.
#   OUT=<dir> AB="<method A> <method B>" [BASE="flex_native sdpa_cudnn"] [REPEAT=4]
#   [CELLS="4096:0.5:no:lrs ..."] [D=128] bash scripts/hopper_ab.sh
# (call 14 of 2026-12-03 compared spattern_hopper with the since-removed spattern_hopper_ahead)
# writes $OUT/ab_r<i>.json (spattern bench attention's JSON); summarise with scripts/hopper_ab_summary.py
set -u -o pipefail
OUT=${OUT:?set OUT}
mkdir -p "$OUT"
source scripts/device_env.sh  # wheels into /tmp/site, PYTHONPATH, the source revision
read -r -a ab <<< "${AB:?set AB to two kernel methods of spattern bench attention, e.g. AB=\"spattern_hopper spattern_hopper_programs\"}"
CELLS=${CELLS:-"4096:0.5:no:lrs 4096:0.5:yes:lrs 8192:0.25:no:lrs 8192:0.25:yes:lrs 16384:0.1:no:lrs 16384:0.1:yes:lrs 16384:1.0:no:lrs"}
for r in $(seq 1 "${REPEAT:-4}"); do
  if (( r % 2 )); then m="${ab[0]} ${ab[1]}"; else m="${ab[1]} ${ab[0]}"; fi
  # shellcheck disable=SC2086
  timeout 150 python3 -m spattern.cli bench attention --json "$OUT/ab_r$r.json" --head-dim "${D:-128}" \
    --cells $CELLS --methods $m ${BASE:-flex_native sdpa_cudnn} --warmup "${WARMUP:-20}" --iters "${ITERS:-50}" \
    2>&1 | tee -a "$OUT/ab.log"
done
