"""No number is typed into the report's prose: every digit in report/*.typ must be in the allow-list."""

from __future__ import annotations

import re
from pathlib import Path

REPORT = Path(__file__).resolve().parents[2] / "report"

# The allow-list, explicit and small. Each entry: (pattern, why it is not a typed result).
ALLOWED = (
    (r"\b\d+(\.\d+)?(pt|em|cm|mm|fr)\b", "typst lengths (11pt, 0.5em, 1.5cm, 1fr)"),
    (r"width: 100%", "a figure as wide as its column"),
    (r'numbering: "[1.]+"', "heading/page numbering format strings"),
    (r"(level|columns): \d\b", "heading levels, page columns"),
    (r'rgb\("#[0-9a-fA-F]{6}"\)', "colour literals"),
    (r'paper: "a4"', "the paper size"),
    (r"@[A-Za-z]+\d{4}[a-z]*", "citation keys with a year"),
    (r"[+-] 1\b", "the constant one in a formula (d(i) + 1, k - 1)"),
)
COMMENT = re.compile(r"//.*$")


def offending(text: str) -> list[str]:
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        code = COMMENT.sub("", line)
        for pattern, _why in ALLOWED:
            code = re.sub(pattern, "", code)
        if re.search(r"\d", code):
            out.append(f"line {n}: {line.strip()}")
    return out


def test_the_allow_list_catches_typed_numbers():
    assert offending("the kernel is 1.5x faster") and offending("#val(\"a\") at N = 4096")
    assert offending("density 25 percent") and offending("#set text(size: 11)") and offending("at 25%")
    assert not offending("#set text(size: 11pt) // 2024 in a comment")
    assert not offending('#set heading(numbering: "1.1") see @child2019 and #h(2em)')


def test_prose_has_no_typed_numbers():
    files = sorted(REPORT.glob("*.typ"))
    assert files, f"no typst sources in {REPORT}"
    bad = {f.name: offending(f.read_text()) for f in files}
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, f"digits outside the allow-list (numbers must come from the generated data): {bad}"
