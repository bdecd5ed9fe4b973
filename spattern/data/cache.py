"""Where spattern keeps downloaded sources and token arrays (never inside the repository).

`$SPATTERN_CACHE` wins; otherwise `$XDG_CACHE_HOME/spattern`, else `~/.cache/spattern`.
"""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str, create: bool = True) -> Path:
    """The cache root, or a subfolder of it (created unless `create=False`)."""
    root = os.environ.get("SPATTERN_CACHE")
    if root:
        base = Path(root).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "spattern"
    path = base.joinpath(*parts)
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path
