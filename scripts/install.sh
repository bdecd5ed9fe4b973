#!/usr/bin/env bash
# Install spattern with its dev extras. torch is a loose requirement of the package (any recent
# build works); on a CPU-only machine this installs the CPU wheel first when pip can find it
# (pinned here only to keep the install small; the package itself does not pin torch).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python -c "import torch" 2>/dev/null; then
    python -m pip install -q "torch==2.13.0" 2>/dev/null \
        || python -m pip install -q torch
fi
python -m pip install -q -e ".[dev]"
