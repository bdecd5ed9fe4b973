"""One run's directory and its files; the run id.

``results/<experiment>/<label>-<id>/``: ``config.toml``, ``metrics.json`` (``status``: running,
finished), ``per_example.jsonl`` (appended one example at a time, so an interrupted run resumes
from the last finished example), ``env.json``. ``id`` = the first 10 hex digits of the SHA-256 of
the run's resolved config as canonical JSON: the same config always lands in the same directory.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from spattern.utils.config import dumps_toml
from spattern.utils.env import capture_env
from spattern.utils.io import append_jsonl, atomic_write_text, read_json, read_jsonl, write_json


def run_id(resolved: dict) -> str:
    canon = json.dumps(resolved, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canon.encode()).hexdigest()[:10]


def slug(label: str) -> str:
    s = re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-").lower()
    return s[:40] or "run"


@dataclass
class RunDir:
    path: Path

    @classmethod
    def create(cls, root: Path, label: str, resolved: dict) -> "RunDir":
        return cls(Path(root) / f"{slug(label)}-{run_id(resolved)}")

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.config_path = self.path / "config.toml"      # the run's resolved config
        self.metrics_path = self.path / "metrics.json"    # status and aggregate metrics
        self.examples_path = self.path / "per_example.jsonl"  # one line per example
        self.env_path = self.path / "env.json"            # git revision, versions, device, seed

    # --- state --------------------------------------------------------------------------------
    def metrics(self) -> dict | None:
        if not self.metrics_path.is_file():
            return None
        return read_json(self.metrics_path)

    def finished(self) -> bool:
        m = self.metrics()
        return m is not None and m.get("status") == "finished"

    def examples(self, log=None) -> list[dict]:
        return read_jsonl(self.examples_path, on_torn=log, repair=True)

    # --- writing ------------------------------------------------------------------------------
    def start(self, resolved: dict, seed: int | None, **env_extra) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.config_path, dumps_toml(resolved))
        write_json(self.env_path, capture_env(seed=seed, **env_extra))

    def add_example(self, record: dict) -> None:
        append_jsonl(self.examples_path, record)

    def write_metrics(self, summary: dict) -> None:
        write_json(self.metrics_path, summary)
