#!/usr/bin/env bash
# One device call's .carry/, checked against what a call carries (64 MiB: the tracked tree, untracked files
# git does not ignore, and the paths named in carry). The SmolLM2 GGUF (98 MB) comes in two parts and the
# corpora beside it, so the carried files are spread over calls; every one of them lives in .carry.all/
# (made from .carry/ the first time), and this makes .carry/ hold hard links to the files named:
#   bash scripts/carry_set.sh [--whl] <file or folder of .carry.all> ...
#   e.g.  --whl gguf_00 gguf.sha256          (a fresh machine: the wheels and the first part)
#         gguf_01 gguf.sha256 stdlib311.txz  (the same machine, warm: the second part and a corpus)
#         linuxdocs.txz sources              (a third call)
#   bash scripts/carry_set.sh --all          .carry/ holds every file again (.carry.all/ moved back)
# It stamps .carry/source_rev (scripts/stamp_source.sh), prints the call's size and exits 1 when it is over
# the limit (carry ".carry", and ".whl" with --whl). Keep results/ folders a call does not need off the copy
# with scripts/carry_aside.sh first: the committed results/ alone is about 40 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
LIMIT=$((64 * 1024 * 1024))
if [ "${1:-}" = "--all" ]; then
  [ -d .carry.all ] || { echo "carry_set: no .carry.all/ (.carry/ holds every file)"; exit 0; }
  rm -rf .carry && mv .carry.all .carry && echo "carry_set: .carry/ holds every file"; exit 0
fi
whl=0
if [ "${1:-}" = "--whl" ]; then whl=1; shift; fi
[ $# -gt 0 ] || { echo "usage: bash scripts/carry_set.sh [--whl] <file of .carry.all> ..." >&2; exit 2; }
if [ ! -d .carry.all ]; then
  [ -d .carry ] || { echo "carry_set: neither .carry.all/ nor .carry/ here (scripts/make_carry.sh makes them)" >&2; exit 2; }
  mv .carry .carry.all
fi
for f in "$@"; do
  [ -e ".carry.all/$f" ] || { echo "carry_set: expected a file or folder of .carry.all/, got $f" >&2; exit 2; }
done
rm -rf .carry && mkdir .carry
for f in "$@"; do cp -rl ".carry.all/$f" .carry/; done
bash scripts/stamp_source.sh >/dev/null
cp .carry/source_rev .carry.all/source_rev 2>/dev/null || true
tree=$(python3 - <<'PY'
import os, subprocess
files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                       capture_output=True, check=True).stdout.split(b"\0")
print(sum(os.path.getsize(f) for f in files if f and os.path.isfile(f)))  # (files set aside are not sent)
PY
)
carried=$(du -sb --apparent-size .carry | cut -f1)
wheels=0; [ "$whl" = 1 ] && wheels=$(du -sb --apparent-size .whl | cut -f1)
total=$((tree + carried + wheels))
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
echo "carry_set: .carry = $(ls .carry | tr '\n' ' ')"
echo "carry_set: tree $(mib "$tree") + .carry $(mib "$carried") + .whl $(mib "$wheels") = $(mib "$total") of 64 MiB" \
     "(carry: [\".carry\"$([ "$whl" = 1 ] && echo ', ".whl"')])"
[ "$total" -le "$LIMIT" ] || { echo "carry_set: over the limit: carry fewer files, or keep results/ aside" >&2; exit 1; }
