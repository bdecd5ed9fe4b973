#!/usr/bin/env bash
# Write the checkout's revision to .carry/source_rev ("<sha>" or "<sha>+dirty") before a device call, so
# that results made from the copy sent there record the commit they came from (the copy's own git does
# not know it); scripts/device_env.sh, which the device scripts source, exports it as SPATTERN_SOURCE_REVISION.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .carry
rev=$(git rev-parse HEAD)
# (results/ aside: its files are data, not the code the runs come from; scripts/carry_aside.sh moves them)
[ -n "$(git status --porcelain --untracked-files=no -- . ':!results')" ] && rev="$rev+dirty"
echo "$rev" > .carry/source_rev
echo "$rev"
