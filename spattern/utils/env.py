"""The environment a result came from (``env.json``): git revision, Python and package versions,
platform, device. One implementation, used by runs, benchmarks and the report."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import subprocess
import sys
from pathlib import Path

PACKAGES = ("spattern", "torch", "numpy", "scipy", "statsmodels", "triton", "cupy-cuda12x", "cupy-cuda13x",
            "transformers", "datasets", "tokenizers", "sympy", "networkx", "matplotlib", "typst")


SOURCE_REVISION_VAR = "SPATTERN_SOURCE_REVISION"


def git_revision(root: str | Path | None = None) -> dict:
    """The revision of the code that runs: ``{"revision", "dirty"}`` from the checkout's git, unless
    ``$SPATTERN_SOURCE_REVISION`` names it ("<sha>" or "<sha>+dirty"). That is for a copy of the working
    tree sent to another machine (the GPU machine), whose own git knows nothing of the commit it came
    from; scripts/stamp_source.sh writes the value, and the device scripts export it."""
    sent = os.environ.get(SOURCE_REVISION_VAR, "").strip()
    if sent:
        rev, _, flag = sent.partition("+")
        return {"revision": rev, "dirty": flag == "dirty", "from": SOURCE_REVISION_VAR}
    root = Path(root) if root is not None else Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"revision": None, "dirty": None}
    return {"revision": rev or None, "dirty": bool(dirty) if rev else None}


def package_versions(names=PACKAGES) -> dict:
    out = {}
    for n in names:
        try:
            out[n] = md.version(n)
        except md.PackageNotFoundError:
            pass
    return out


def device_info() -> dict:
    """The accelerator (if torch sees one) without importing torch when it is not loaded yet."""
    if "torch" not in sys.modules:
        try:
            import torch  # noqa: F401
        except ImportError:
            return {"device": "cpu"}
    import torch

    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        return {"device": "cuda", "name": p.name, "count": torch.cuda.device_count(),
                "capability": f"{p.major}.{p.minor}", "memory_gib": round(p.total_memory / 2**30, 1),
                "cuda": torch.version.cuda}
    return {"device": "cpu", "threads": torch.get_num_threads()}


def capture_env(seed: int | None = None, **extra) -> dict:
    env = {"git": git_revision(), "python": sys.version.split()[0], "platform": platform.platform(),
           "machine": platform.machine(), "packages": package_versions(), **device_info()}
    if seed is not None:
        env["seed"] = seed
    env.update(extra)
    return env
