#!/usr/bin/env bash
# A lighter device call: the tracked results/ (about 35 MB, mostly per-example JSONL) travel with every
# call and, beside .whl/ and one half of the SmolLM2 GGUF, come to more than the 64 MiB a call carries.
# No device script reads results/ but the folders of the configs it runs, so these can stay here:
#   bash scripts/carry_aside.sh out results/<kept> ...   stamps .carry/source_rev (scripts/stamp_source.sh,
#                                                         before the move makes the tree look changed), then
#                                                         moves every other entry of results/ to ../.aside/
#   bash scripts/carry_aside.sh back                     moves them back (run it before any commit)
# Keep every results/ folder that a sweep running here writes to: one moved while it runs is split in two.
set -euo pipefail
cd "$(dirname "$0")/.."
hold=../.aside/$(basename "$PWD")
case "${1:-}" in
  out)
    shift
    [ -z "$(ls -A "$hold" 2>/dev/null)" ] || { echo "carry_aside: $hold is not empty (run 'back' first)" >&2; exit 1; }
    for k in "$@"; do  # each kept path an entry of results/ itself, as written: a typo would be moved aside
      case "${k%/}" in results/*/*|results/) ok=0;; results/*) ok=1;; *) ok=0;; esac
      [ "$ok" = 1 ] && [ -e "${k%/}" ] || { echo "carry_aside: expected results/<an entry of results/>, got $k" >&2; exit 2; }
    done
    bash scripts/stamp_source.sh >/dev/null
    mkdir -p "$hold"
    for e in results/* results/.[!.]*; do
      [ -e "$e" ] || continue
      keep=0; for k in "$@"; do [ "${k%/}" = "$e" ] && keep=1; done
      [ "$keep" = 1 ] || mv "$e" "$hold/"
    done
    echo "carry_aside: kept $(ls results | tr '\n' ' ')($(du -sh results | cut -f1)); source $(cat .carry/source_rev)";;
  back)
    [ -d "$hold" ] || { echo "carry_aside: nothing aside"; exit 0; }
    mkdir -p results
    for e in "$hold"/* "$hold"/.[!.]*; do [ -e "$e" ] || continue; [ -e "results/$(basename "$e")" ] \
      && { echo "carry_aside: results/$(basename "$e") exists here too; left in $hold" >&2; continue; }
      mv -t results/ -- "$e"; done
    rmdir "$hold" 2>/dev/null || true
    echo "carry_aside: results/ restored";;
  *) echo "usage: bash scripts/carry_aside.sh out results/<kept> ... | back" >&2; exit 2;;
esac
