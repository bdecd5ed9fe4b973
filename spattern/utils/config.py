"""Typed TOML configs: one mechanism for training, experiment and benchmark settings.

A config file is TOML; ``base = "other.toml"`` (relative to the file) inherits another file, and
``--set a.b=value`` overrides (TOML values; a bare word is a string) apply last. The merged table
is validated into a pydantic v2 model whose sections forbid unknown keys; every failure is a
``ConfigError`` that names the file, the key, what was expected and what came::

    cfg = load_config(TrainConfig, "experiments/train_tiny_cpu.toml", ["train.steps=10"])
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from spattern.utils.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class Section(BaseModel):
    """Base of every config table: unknown keys and wrong types are errors, values are checked on
    assignment too, and a config is printable back to TOML (``to_toml``)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=False)


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_value(text: str) -> Any:
    """``10`` -> 10, ``"a b"`` -> 'a b', ``[1, 2]`` -> [1, 2], a bare word -> that word."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(raw: dict, overrides: list[str] | None) -> dict:
    """``["train.steps=10", 'model.pattern="local(64) & causal"']`` -> a new table."""
    raw = copy.deepcopy(raw)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set: expected KEY=VALUE (e.g. train.steps=10), got {item!r}")
        key, value = item.split("=", 1)
        *parents, leaf = key.strip().split(".")
        node = raw
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {p!r} is not a table")
        node[leaf] = parse_value(value.strip())
    return raw


def read_toml(path: str | Path, _seen: tuple = ()) -> dict:
    """The file's table with its ``base`` chain merged in (the base first)."""
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"{path}: `base` cycle through {' -> '.join(str(p) for p in _seen + (path,))}")
    if not path.is_file():
        raise ConfigError(f"config: expected a TOML file, got {path} (no such file)")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    base = raw.pop("base", None)
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError(f"{path}: key 'base': expected a file name string, got {base!r}")
        raw = deep_merge(read_toml(path.parent / base, _seen + (path,)), raw)
    return raw


def _describe(err: dict) -> str:
    loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
    got = err.get("input")
    if err["type"] == "extra_forbidden":
        return f"key {loc!r}: unknown key (got {got!r})"
    if err["type"] == "missing":
        return f"key {loc!r}: required, missing"
    return f"key {loc!r}: expected {err['msg'].removeprefix('Input should be ').removeprefix('Value error, ')}, got {got!r}"


def validate(model: type[M], raw: dict, source: str = "config") -> M:
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        lines = [_describe(err) for err in e.errors(include_url=False)]
        raise ConfigError(f"{source}: " + "; ".join(lines)) from None


def load_config(model: type[M], path: str | Path | None = None, overrides: list[str] | None = None,
                defaults: dict | None = None) -> M:
    """defaults <- the file's base chain <- the file <- overrides, validated into ``model``.
    A config without ``name`` takes the file's stem."""
    raw: dict = copy.deepcopy(defaults or {})
    source = "config"
    if path is not None:
        source = str(path)
        file_raw = read_toml(path)
        if "name" in model.model_fields and "name" not in file_raw:
            file_raw["name"] = Path(path).stem
        raw = deep_merge(raw, file_raw)
    raw = apply_overrides(raw, overrides)
    if overrides:
        source += f" (with --set {' '.join(overrides)})"
    return validate(model, raw, source)


def to_toml(cfg: BaseModel) -> str:
    """TOML text of a validated config (None values are left out: TOML has no null)."""
    return dumps_toml(cfg.model_dump(mode="json", exclude_none=True))


def _toml_value(v: Any) -> str:
    import json

    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v if x is not None) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_toml_value(x)}" for k, x in v.items() if x is not None) + " }"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _key(k: str) -> str:
    import re

    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else _toml_value(k)


def dumps_toml(table: dict, _prefix: str = "") -> str:
    scalars = [(k, v) for k, v in table.items() if not isinstance(v, dict)]
    tables = [(k, v) for k, v in table.items() if isinstance(v, dict)]
    lines = [f"{_key(k)} = {_toml_value(v)}" for k, v in scalars if v is not None]
    for k, v in tables:
        name = f"{_prefix}.{_key(k)}" if _prefix else _key(k)
        body = dumps_toml(v, name)
        lines.append(f"\n[{name}]\n{body}" if body.strip() else f"\n[{name}]")
    return "\n".join(lines).lstrip("\n") + ("\n" if not _prefix else "")
