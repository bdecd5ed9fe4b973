"""Which per-example records are the same trial: the unit a paired test counts once.

A task can give two examples of one seed the same input under different ids. Passkey does when two
depths of one (seed, context length) snap to the same sentence boundary, because the haystack has no
sentence end between them (source code: a long stretch of lines with no ". "). Counting both would
count one observation twice in every paired test, and in every accuracy drawn from the records.

``unit(record)`` names the trial a record belongs to; records of one unit had the same input, so a run
scored them alike. ``unique_trials(records)`` keeps the first record of each unit.

Torch-free, so the report can use it.
"""

from __future__ import annotations

from typing import Callable, Iterable


def passkey_unit(record: dict) -> str:
    """``passkey/L<L>/s<seed>/at<distance>``: for one seed and context length the key, the haystack and
    the question are fixed (``tasks.passkey``), so the needle's position decides the input, and the
    distance from the key to the answer decides the needle's position."""
    rid = str(record["id"])
    parts = rid.split("/")  # passkey/L<L>/d<depth>/s<seed>
    distance = record.get("distance")
    distance = record.get("distance_tokens") if distance is None else distance
    if len(parts) != 4 or distance is None:
        return rid
    return f"passkey/{parts[1]}/{parts[3]}/at{int(distance)}"


UNITS: dict[str, Callable[[dict], str]] = {"passkey": passkey_unit}  # id prefix -> the task's unit


def unit(record: dict) -> str | None:
    """The trial of a per-example record: its task's unit (``UNITS``, by the id's first part), else its
    id (and its answer group, where a record is one of several groups of an example); None for a
    record without an id, which is a trial of its own."""
    if record.get("id") is None:
        return None
    rid = str(record["id"])
    fn = UNITS.get(rid.split("/", 1)[0])
    if fn is not None:
        return fn(record)
    return f"{rid}#{record['group']}" if "group" in record else rid


def unique_trials(records: Iterable[dict]) -> list[dict]:
    """``records`` with each unit's first record only, in order (every record without an id kept)."""
    seen: set[str] = set()
    out = []
    for r in records:
        u = unit(r)
        if u is None or u not in seen:
            if u is not None:
                seen.add(u)
            out.append(r)
    return out
