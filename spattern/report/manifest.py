"""The manifest next to the PDF: for every figure and table, the results files it came from
(with their sha256), how it was derived, and the files written for it; plus what was missing."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

from spattern.report.data import sha256
from spattern.utils.io import write_json


class Manifest:
    def __init__(self, roots: Iterable[Path], out_dir: Path):
        self.roots = [Path(r) for r in roots]
        self.out_dir = Path(out_dir)
        self.items: dict[str, dict] = {}
        self.missing: list[dict] = []
        self._hashes: dict[Path, str] = {}

    def display(self, path: Path) -> str:
        """A results path as ``<root name>/<relative path>`` (stable wherever the folder lives)."""
        path = Path(path)
        for r in self.roots:
            try:
                return str(Path(r.resolve().name) / path.resolve().relative_to(r.resolve()))
            except ValueError:
                continue
        return str(path)

    def _input(self, path: Path) -> dict:
        path = Path(path)
        if path not in self._hashes:
            self._hashes[path] = sha256(path)
        return {"path": self.display(path), "sha256": self._hashes[path]}

    def add(self, kind: str, name: str, inputs: Iterable[Path], outputs: Iterable[Path], derived: str | None = None):
        uniq = sorted({Path(p) for p in inputs}, key=lambda p: self.display(p))
        self.items[name] = {"kind": kind, "inputs": [self._input(p) for p in uniq],
                            "outputs": sorted(str(Path(o).relative_to(self.out_dir)) for o in outputs),
                            **({"derived": derived} if derived else {})}

    def miss(self, kind: str, name: str, what: str) -> None:
        """Record a figure/table that could not be built and warn (the PDF shows a placeholder)."""
        self.missing.append({"kind": kind, "name": name, "what": what})
        warnings.warn(f"report: missing {kind} {name}: {what}", stacklevel=2)

    def inputs(self) -> set[str]:
        return {i["path"] for item in self.items.values() for i in item["inputs"]}

    def write(self, extra: dict | None = None) -> Path:
        return write_json(self.out_dir / "manifest.json", {"roots": [r.name for r in self.roots],
                                                           "items": dict(sorted(self.items.items())),
                                                           "missing": self.missing, **(extra or {})})
