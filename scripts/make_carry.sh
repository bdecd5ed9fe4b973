#!/usr/bin/env bash
# What scripts/study_gpu.sh carries to the GPU machine (both folders are git-ignored; rebuild them on
# a fresh checkout before the first device call):
#   .whl/                 wheels the GPU machine lacks (CPython 3.12, manylinux x86_64, no deps pulled)
#   .carry/gguf_00, _01   the SmolLM2 GGUF in GGUF_PARTS parts (default 2; one call carries at most 64 MiB;
#                         3 parts let a fresh machine's first call carry one with .whl/) + gguf.sha256
#   .carry/stdlib311.txz  the CPython 3.11 standard library .py files this machine reads (same corpus there)
#   .carry/pydocs.txz     the Python docs' reST sources (html/_sources/**/*.txt) when Debian's python3.X-doc is
#                         installed here (about 2.5 MB): study_gpu.sh points SPATTERN_PYTHON_DOCS_ROOT at them
#   .carry/sources/       corpus tarballs from the cache (State of the Union, ...)
#   .carry/linuxdocs.txz  Linux docs' Documentation/**/*.rst[.gz] (English) when Debian's linux-doc-6.1 is
#                         installed here (7.5 MB): the GPU machine has no apt; study_gpu.sh points
#                         SPATTERN_LINUX_DOCS_ROOT at them
#   bash scripts/make_carry.sh
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl .carry/sources
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d .whl \
    pydantic pydantic-core annotated-types typing-inspection typing-extensions gguf rich markdown-it-py \
    mdurl pygments hypothesis sortedcontainers attrs pyyaml
gguf=$(python -c "from spattern.models.pretrained import find_smollm2_gguf as f; print(f(obtain=True, log=lambda *a: None))")
rm -f .carry/gguf_0*
split -n "${GGUF_PARTS:-2}" -d "$gguf" .carry/gguf_
sha256sum "$gguf" | cut -c1-64 > .carry/gguf.sha256
stdlib=$(python -c "import sysconfig; print(sysconfig.get_paths()['stdlib'])")
(cd "$stdlib" && find . -name '*.py' -not -path './site-packages/*' -print0 | tar --null -cJf - -T -) > .carry/stdlib311.txz
docs=/usr/share/doc/linux-doc-6.1
[ -d "$docs/Documentation" ] && (cd "$docs" && find Documentation \( -name '*.rst' -o -name '*.rst.gz' \) \
    -not -path 'Documentation/translations/*' -print0 | tar --null -cJf - -T -) > .carry/linuxdocs.txz
pydocs=$(python -c "from spattern.data.sources import python_docs_root as r; print(r())" 2>/dev/null || true)
[ -n "$pydocs" ] && [ -d "$pydocs" ] && (cd "$pydocs" && find . -name '*.txt' -print0 | tar --null -cJf - -T -) > .carry/pydocs.txz
cache=${SPATTERN_CACHE:-$HOME/.cache/spattern}
[ -d "$cache/sources" ] && find "$cache/sources" -maxdepth 1 \( -name '*.tgz' -o -name '*.tar.gz' \) -exec cp {} .carry/sources/ \;
du -sh .whl .carry .carry/* | sed 's/^/[carry] /'
