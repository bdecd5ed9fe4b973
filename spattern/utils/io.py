"""Files that are never half-written: atomic writes, strict JSON, append-only JSONL with torn-line
recovery. The one implementation used by training, experiments, benchmarks and caches.

- ``atomic_write_text/bytes``: write to a temporary file in the same folder, fsync, ``os.replace``
  (a reader sees the old file or the new one, never a mix).
- ``dumps_strict``: JSON with ``allow_nan=False``; a non-finite float becomes ``null`` and its
  path is recorded under ``"_nonfinite"`` (``{"path.to.key": "nan"}``), so the reason is kept.
- ``append_jsonl``: one line per record, written with a single ``write`` + flush + fsync.
- ``read_jsonl``: drops a torn last line (what a kill during a write leaves) and says so through
  ``on_torn``; a bad line anywhere else is an error.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    def save(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    return atomic_save(path, save)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save(path: str | Path, save: Callable[[Path], Any]) -> Path:
    """``save(tmp_path)`` writes a file (e.g. ``torch.save``/``np.savez``); it then replaces ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save(Path(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def to_strict(obj: Any, _path: str = "", _bad: dict | None = None) -> Any:
    """A copy of ``obj`` that is valid JSON: non-finite floats -> None (recorded in ``_bad``),
    tuples -> lists, numpy scalars/arrays -> Python values, Paths -> str."""
    bad = {} if _bad is None else _bad
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        bad[_path or "."] = "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
        return None
    if isinstance(obj, dict):
        return {str(k): to_strict(v, f"{_path}.{k}" if _path else str(k), bad) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_strict(v, f"{_path}[{i}]", bad) for i, v in enumerate(obj)]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy / torch scalars and arrays
        return to_strict(obj.tolist(), _path, bad)
    if hasattr(obj, "item"):
        return to_strict(obj.item(), _path, bad)
    raise TypeError(f"{_path or 'value'}: expected a JSON-serialisable value, got {type(obj).__name__}")


def dumps_strict(obj: Any, indent: int | None = 2) -> str:
    """Strict JSON text (no NaN/Infinity tokens); non-finite values recorded under ``_nonfinite``."""
    bad: dict = {}
    clean = to_strict(obj, "", bad)
    if bad and isinstance(clean, dict):
        clean = {**clean, "_nonfinite": {**clean.get("_nonfinite", {}), **bad}}
    return json.dumps(clean, indent=indent, allow_nan=False, sort_keys=False)


def write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, dumps_strict(obj) + "\n")


def read_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def append_jsonl(path: str | Path, record: dict) -> None:
    """Append one strict-JSON line; the line goes out in one write and is fsynced."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (dumps_strict(record, indent=None) + "\n").encode("utf-8")
    with open(path, "ab") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | Path, on_torn: Callable[[str], None] | None = None,
               repair: bool = False) -> list[dict]:
    """All records of a JSONL file. A last line without its newline or that does not parse is a
    torn write: it is dropped (``on_torn(message)`` is called) and, with ``repair=True``, cut from
    the file so later appends start on a clean line. A bad line elsewhere raises ValueError."""
    path = Path(path)
    if not path.exists():
        return []
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    complete, tail = lines[:-1], lines[-1]
    out: list[dict] = []
    for n, line in enumerate(complete, 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            if n == len(complete) and not tail:  # the last full line is garbage: torn as well
                tail = line
                break
            raise ValueError(f"{path}: line {n} is not valid JSON ({e.msg})") from None
    if tail.strip():
        msg = f"{path}: dropped a torn last line ({len(tail)} bytes) left by an interrupted write"
        if on_torn is not None:
            on_torn(msg)
        if repair:
            keep = raw[: len(raw) - len(tail)]
            if keep.endswith(tail + b"\n"):
                keep = keep[: len(keep) - len(tail) - 1]
            atomic_write_bytes(path, keep)
    return out


def iter_jsonl(path: str | Path) -> Iterator[dict]:
    yield from read_jsonl(path)
