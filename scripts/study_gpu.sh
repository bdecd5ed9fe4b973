#!/usr/bin/env bash
# The study's GPU runs, one device call at a time:
#   OUT=<dir> [SETS="--set k=v ..."] [DEADLINE=540] bash scripts/study_gpu.sh experiments/<a>.toml ...
# Runs go seed by seed (--by-seed), so that a call stopped at its deadline leaves complete paired sets.
# Installs the carried wheels (.whl/) into /tmp/site once per machine; points SPATTERN_CACHE (unless set) at
# /tmp/spattern-cache; the SmolLM2 GGUF (98 MB, over what one call carries) arrives in parts
# (.carry/gguf_00 in one call, .carry/gguf_01 in the next, ...) and is joined here once the parts
# that have arrived hash to .carry/gguf.sha256
# (the tracked tree, .whl/ and one half come to more than one call carries: carry the halves without
# .whl/ on a machine kept warm since a call that installed the wheels, which stay in /tmp/site;
# scripts/carry_set.sh makes each call's .carry/ and checks its size, after scripts/carry_aside.sh);
# .carry/sources/* (corpus tarballs) and .carry/data/* (prepared corpora: a copy of
# $SPATTERN_CACHE/data/<key>, which skips the preparation there) go to the cache; .carry/stdlib311.txz (the .py files of the
# CPython 3.11 standard library this machine has, so both machines read the same corpus) is
# unpacked once and becomes SPATTERN_STDLIB_ROOT, .carry/linuxdocs.txz SPATTERN_LINUX_DOCS_ROOT, .carry/pydocs.txz
# SPATTERN_PYTHON_DOCS_ROOT. PRE="command" runs first (e.g. GPU tests). Each config runs with `spattern run` (finished runs are skipped,
# interrupted ones resume) within DEADLINE seconds in all; then the configs' own results/<name> folders
# are packed into $OUT/results.tar.gz (a call returns at most 8 files, 2 folders deep), also every 20 s
# while the runs go, so that a call killed at its limit (the device tool kills the whole command, no signal
# to trap) still returns the runs finished by then. The device's limit_s counts the machine's start
# (seen: 30-210 s), so keep DEADLINE about 240 s under the budget left. Unpack it here
# with `tar xzf results.tar.gz --keep-newer-files`, then `spattern run` the configs here (it skips the
# finished runs, writes compare.json, and removes a run that one of them grew from there: grow.py).
# A run stopped mid-way resumes from its checkpoint, which lives in the cache, not in results/: the
# checkpoints of the configs' started, unfinished runs (scripts/partial_checkpoints.py) are packed into
# $OUT/checkpoints.tar.gz.00, .01, ... (one archive in parts of 15 MiB: a call returns files of 16 MiB at
# most, and 16 runs' checkpoints came to more) with the results; copy the parts here to .carry/ and carry .carry, and
# the next call (on a fresh machine too) restores them and resumes those runs where they stopped.
# A resumed run's metric lines before its checkpoint live in its results folder: on a warm machine the
# folders kept in /tmp/spattern-results bring them back; on a fresh one, unpack the last call's
# results.tar.gz here before the next call (else scripts/merge_partial_curves.py repairs the curves).
# Before each call run scripts/stamp_source.sh here and carry .carry/source_rev, so that env.json names
# the commit the runs came from.
set -u -o pipefail
OUT=${OUT:?set OUT}
mkdir -p "$OUT"
t0=$(date +%s)
source scripts/device_env.sh  # wheels into /tmp/site, PYTHONPATH, the source revision
export SPATTERN_CACHE=${SPATTERN_CACHE:-/tmp/spattern-cache}  # (a test points it elsewhere)
kept=${SPATTERN_KEPT_RESULTS:-/tmp/spattern-results}  # a warm machine's copy of the results folders
mkdir -p "$SPATTERN_CACHE/models" "$SPATTERN_CACHE/sources"
for part in .carry/gguf_0*; do [ -f "$part" ] && cp "$part" /tmp/; done
[ -f .carry/gguf.sha256 ] && cp .carry/gguf.sha256 /tmp/
gguf=$SPATTERN_CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -f "$gguf" ] && ls /tmp/gguf_0* >/dev/null 2>&1 && [ -f /tmp/gguf.sha256 ]; then
  cat /tmp/gguf_0* > "$gguf.part"  # the parts that have arrived, in order; whole when the hash matches
  if [ "$(sha256sum "$gguf.part" | cut -c1-64)" = "$(cat /tmp/gguf.sha256)" ]; then mv "$gguf.part" "$gguf"
  else echo "GGUF: $(ls /tmp/gguf_0* | wc -l) part(s) here, not whole yet"; rm -f "$gguf.part"; fi
fi
[ -d .carry/sources ] && cp .carry/sources/* "$SPATTERN_CACHE/sources/"
# a previous call's checkpoints of its unfinished runs (a warm machine's own, if newer, stay)
# (the parts of one archive, joined in order; or one whole archive, as calls before the parts returned)
if ls .carry/checkpoints.tar.gz.[0-9][0-9] >/dev/null 2>&1; then
  cat .carry/checkpoints.tar.gz.[0-9][0-9] | tar xzf - -C "$SPATTERN_CACHE" --keep-newer-files 2>/dev/null
elif [ -f .carry/checkpoints.tar.gz ]; then
  tar xzf .carry/checkpoints.tar.gz -C "$SPATTERN_CACHE" --keep-newer-files 2>/dev/null
fi
mkdir -p "$SPATTERN_CACHE/data"; [ -d .carry/data ] && cp -rn .carry/data/* "$SPATTERN_CACHE/data/"
if [ -f .carry/stdlib311.txz ] && [ ! -d /tmp/stdlib311 ]; then mkdir -p /tmp/stdlib311 && tar xJf .carry/stdlib311.txz -C /tmp/stdlib311; fi
[ -d /tmp/stdlib311 ] && export SPATTERN_STDLIB_ROOT=/tmp/stdlib311
if [ -f .carry/linuxdocs.txz ] && [ ! -d /tmp/linuxdocs ]; then mkdir -p /tmp/linuxdocs && tar xJf .carry/linuxdocs.txz -C /tmp/linuxdocs; fi
[ -d /tmp/linuxdocs/Documentation ] && export SPATTERN_LINUX_DOCS_ROOT=/tmp/linuxdocs/Documentation
if [ -f .carry/pydocs.txz ] && [ ! -d /tmp/pydocs ]; then mkdir -p /tmp/pydocs && tar xJf .carry/pydocs.txz -C /tmp/pydocs; fi
[ -d /tmp/pydocs ] && export SPATTERN_PYTHON_DOCS_ROOT=/tmp/pydocs
[ -n "${PRE:-}" ] && { echo "=== $PRE"; bash -c "$PRE"; } 2>&1 | tee -a "$OUT/run.log"
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__)"; } 2>&1 | tee -a "$OUT/run.log"
# only the results folders of the configs run here: other results/ folders in the copy sent over are
# snapshots of this machine's files at send time, and unpacking them back would overwrite newer ones
dirs=$(for cfg in "$@"; do python3 -c "import sys, tomllib; print('results/' + tomllib.load(open(sys.argv[1], 'rb'))['name'])" "$cfg"; done)
cfgs=("$@")
# a warm machine's own copy of these folders (kept by pack): the folders of runs that an earlier call on
# this machine stopped mid-way come back where this copy lacks them (its results.tar.gz not unpacked here
# yet), so that they resume with their metric lines instead of a curve that begins at the checkpoint
for d in $dirs; do [ -d "$kept/$d" ] && mkdir -p "$d" && cp -rn "$kept/$d/." "$d/"; done
pack() {  # written whole, then renamed: a kill mid-pack leaves the previous archive
  for d in $dirs; do [ -d "$d" ] && mkdir -p "$kept/$d" && cp -r "$d/." "$kept/$d/"; done
  tar czf "$OUT/.results.tar.gz" $(for d in $dirs; do [ -d "$d" ] && echo "$d"; done) 2>/dev/null \
    && mv "$OUT/.results.tar.gz" "$OUT/results.tar.gz"
  local ck
  ck=$(python3 scripts/partial_checkpoints.py "${cfgs[@]}" ${SETS:-} 2>/dev/null | sed "s|^$SPATTERN_CACHE/||")
  if [ -n "$ck" ]; then
    # whole, then split in a folder that does not come back, then the parts moved over the previous ones
    rm -rf "$OUT/.ck" && mkdir -p "$OUT/.ck/parts" \
      && tar czf "$OUT/.ck/all.tar.gz" -C "$SPATTERN_CACHE" $ck 2>/dev/null \
      && split -b 15M -d -a 2 "$OUT/.ck/all.tar.gz" "$OUT/.ck/parts/checkpoints.tar.gz." \
      && rm -f "$OUT"/checkpoints.tar.gz.[0-9][0-9] && mv "$OUT"/.ck/parts/* "$OUT"/
    rm -rf "$OUT/.ck"
  else rm -f "$OUT"/checkpoints.tar.gz.[0-9][0-9]; fi
}
( while sleep 20; do pack; done ) &
packer=$!
for cfg in "$@"; do
  left=$(( ${DEADLINE:-540} - ($(date +%s) - t0) ))
  [ "$left" -gt 20 ] || { echo "=== no time left for $cfg" | tee -a "$OUT/run.log"; continue; }
  echo "=== $cfg (${left}s left)" | tee -a "$OUT/run.log"
  # SIGINT at the deadline (the runs stop at their next step and keep their checkpoints); KILL 90 s later
  # if anything of the sweep still runs, so that the call returns before its limit whatever went wrong
  timeout -s INT -k 90 "$left" python3 -m spattern.cli run "$cfg" --by-seed --no-compare --no-report ${SETS:-} 2>&1 \
    | grep --line-buffered -v "━" | tee -a "$OUT/run.log"
  echo "=== $cfg: exit ${PIPESTATUS[0]} after $(( $(date +%s) - t0 ))s" | tee -a "$OUT/run.log"
done
kill "$packer" 2>/dev/null; wait "$packer" 2>/dev/null
pack
echo "wall $(( $(date +%s) - t0 ))s" | tee -a "$OUT/run.log"
