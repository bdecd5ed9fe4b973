#!/usr/bin/env bash
# Where a training step's host time goes, per pattern (study scenario 2: why outline trains slower than a
# window of the same block density). On a GPU machine, one device call:
#   OUT=<dir> [STEPS=120] bash scripts/profile_train.sh "outline(window=258) & causal" "local(386) & causal"
# For each pattern, a short run of experiments/study_code_gpu_train.toml (the study's model, data and batch)
# without a profiler ($OUT/plain_<i>.jsonl: the loop's log, tokens/s per 10 steps), then the same run under cProfile
# (main process only; the context workers are separate processes): $OUT/prof_<i>.txt lists the functions
# by own time and by cumulative time. A prepared corpus carried in .carry/data/ (a copy of
# $SPATTERN_CACHE/data/stdlib-bpe8192-*) skips the corpus preparation there.
#   PROFILE=0      the plain runs only (a same-call throughput comparison of several patterns)
#   SOURCE=<dir>   run the spattern package and experiments/ of another tree (e.g. an older commit's
#                  `git archive`), for an A/B of two revisions in one call; outputs are named <TAG>plain_<i>
set -u -o pipefail
OUT=${OUT:?set OUT}
mkdir -p "$OUT"
source scripts/device_env.sh
export SPATTERN_CACHE=/tmp/spattern-cache
mkdir -p "$SPATTERN_CACHE/data"
[ -d .carry/data ] && cp -rn .carry/data/* "$SPATTERN_CACHE/data/"
if [ -f .carry/stdlib311.txz ] && [ ! -d /tmp/stdlib311 ]; then mkdir -p /tmp/stdlib311 && tar xJf .carry/stdlib311.txz -C /tmp/stdlib311; fi
[ -d /tmp/stdlib311 ] && export SPATTERN_STDLIB_ROOT=/tmp/stdlib311
if [ -n "${SOURCE:-}" ]; then export PYTHONPATH=/tmp/site:$SOURCE; cd "$SOURCE"; fi
tag=${TAG:-}
i=0
for pattern in "$@"; do
  i=$((i + 1))
  echo "=== $tag$i: $pattern" | tee -a "$OUT/run.log"
  sets=(--set "model.pattern=\"$pattern\"" --set "train.steps=${STEPS:-120}" --set train.eval_every=100000
        --set train.eval_batches=1 --set train.max_seconds=0)
  python3 -m spattern.cli train experiments/study_code_gpu_train.toml "${sets[@]}" --set "train.out_dir=\"/tmp/prof_plain_$i\"" \
    --set "train.ckpt_dir=\"/tmp/prof_ckpt_p$i\"" 2>&1 | grep -v "━" | tail -3 | tee -a "$OUT/run.log"
  cp "/tmp/prof_plain_$i/metrics.jsonl" "$OUT/${tag}plain_$i.jsonl"  # one file per run: a call returns at most 8
  rm -rf "/tmp/prof_plain_$i" "/tmp/prof_ckpt_p$i"
  [ "${PROFILE:-1}" = 0 ] && continue
  python3 -m cProfile -o "/tmp/prof_$i.prof" -m spattern.cli train experiments/study_code_gpu_train.toml "${sets[@]}" \
    --set "train.out_dir=\"/tmp/prof_run_$i\"" --set "train.ckpt_dir=\"/tmp/prof_ckpt_c$i\"" 2>&1 | grep -v "━" | tail -2 | tee -a "$OUT/run.log"
  python3 - "/tmp/prof_$i.prof" "$pattern" > "$OUT/prof_$i.txt" <<'PY'
import pstats, sys
print("pattern:", sys.argv[2])
s = pstats.Stats(sys.argv[1]).strip_dirs()
s.sort_stats("tottime").print_stats(30)
s.sort_stats("cumulative").print_stats(45)
PY
done
