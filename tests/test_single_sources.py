"""One source of truth for the mask-program constants: every ``OP_*``, ``MAX_PROGRAM`` and
``MAX_STACK`` constant in the CUDA sources (``runtime/kernels/*.cu``, ``*.cuh``) equals
``spattern.ir.program``'s, the opcodes are defined in one header only, and the kernels evaluate
programs through it (no private switch over opcode numbers)."""
from __future__ import annotations

import re
from pathlib import Path

from spattern.ir import program

KERNELS = Path(program.__file__).resolve().parents[1] / "runtime" / "kernels"
CONST = re.compile(r"constexpr\s+int\s+(OP_[A-Z_]+|MAX_PROGRAM|MAX_STACK)\s*=\s*(-?\d+)\s*;")
DEFINE = re.compile(r"#define\s+(OP_[A-Z_]+|MAX_PROGRAM|MAX_STACK)\s+(-?\d+)")


def _sources():
    files = sorted(list(KERNELS.glob("*.cu")) + list(KERNELS.glob("*.cuh")))
    assert files, f"no kernel sources under {KERNELS}"
    return {f.name: f.read_text() for f in files}


def test_every_kernel_constant_equals_the_python_one():
    found = {}
    for name, text in _sources().items():
        for m in list(CONST.finditer(text)) + list(DEFINE.finditer(text)):
            found.setdefault(m.group(1), []).append((name, int(m.group(2))))
    want = {f"OP_{n}": code for code, n in program.NAMES.items()}
    want.update(MAX_PROGRAM=program.MAX_PROGRAM, MAX_STACK=program.MAX_STACK)
    assert set(found) == set(want), f"constants in the kernels {sorted(found)} != Python's {sorted(want)}"
    for key, places in found.items():
        for name, val in places:
            assert val == want[key], f"{name}: {key} = {val}, spattern.ir.program says {want[key]}"
        assert len(places) == 1, f"{key} is defined in more than one kernel source: {places}"


def test_kernels_use_the_shared_evaluator():
    for name, text in _sources().items():
        if name.endswith(".cu"):
            assert '#include "mask_program.cuh"' in text, f"{name} does not include the shared evaluator"
            assert not re.search(r"case\s+\d+\s*:", text), f"{name} switches over raw opcode numbers"
