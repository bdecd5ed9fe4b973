"""Training configs: TOML files with `base = "other.toml"` inheritance and `a.b=value` overrides."""
from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

DEFAULTS: dict[str, Any] = {
    "name": "run",
    "model": {"preset": "neox-tiny", "pattern": "dense", "backend": "auto"},
    "data": {"corpus": "stdlib", "tokenizer": "bpe", "vocab_size": 2048, "max_docs": None, "path": "",
             "seq_len": 256},
    "train": {"steps": 100, "batch_size": 8, "grad_accum": 1, "lr": 3e-3, "min_lr_ratio": 0.1, "warmup": 10,
              "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95, "grad_clip": 1.0, "seed": 0,
              "eval_every": 50, "eval_batches": 4, "log_every": 10, "ckpt_every": 0, "resume": True,
              "out_dir": "", "ckpt_dir": "", "device": "auto", "dtype": "auto", "compile": False,
              "progress": True, "max_seconds": 0},
    # a DeepSeek-V3.2-style lightning indexer per layer (spattern.indexer.train); off when k = 0
    "indexer": {"k": 0, "block": [64, 64], "n_heads": 4, "head_dim": 32, "sink": 1, "local": 1,
                "layers": "all", "warmup_steps": 0, "aux_weight": 1.0},
}


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare string


def apply_overrides(cfg: dict, overrides: list[str]) -> dict:
    """`["train.steps=10", 'model.pattern="local(64) & causal"']` -> a new config."""
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override: expected KEY=VALUE (e.g. train.steps=10), got {item!r}")
        key, value = item.split("=", 1)
        node = cfg
        *parents, leaf = key.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {key!r}: {p!r} is not a table")
        node[leaf] = _parse_value(value.strip())
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                _seen: tuple = ()) -> dict:
    """DEFAULTS <- base chain <- this file <- overrides. Unknown top-level sections are an error."""
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        path = Path(path).resolve()
        if path in _seen:
            raise ValueError(f"config: `base` cycle through {path}")
        if not path.is_file():
            raise FileNotFoundError(f"config: expected a TOML file, got {path}")
        raw = tomllib.loads(path.read_text())
        base = raw.pop("base", None)
        if base:
            cfg = load_config(path.parent / base, None, _seen + (path,))
        cfg = deep_merge(cfg, raw)
        if "name" not in raw:
            cfg["name"] = path.stem
    cfg = apply_overrides(cfg, overrides or [])
    unknown = set(cfg) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"config: unknown sections {sorted(unknown)}; expected {sorted(DEFAULTS)}")
    for section in ("data", "train", "indexer"):
        extra = set(cfg[section]) - set(DEFAULTS[section])
        if extra:
            raise ValueError(f"config [{section}]: unknown keys {sorted(extra)}")
    return cfg
