"""spattern as a transformers attention implementation, on tiny random Llama / GPT-NeoX / Qwen2.

Twins: with ``full() & causal`` the logits equal the model's own ``sdpa`` implementation; with a
pattern (one for all layers, or one per layer) they equal a masked-dense twin: a second attention
function registered here that does softmax(q k^T * scale + mask) v in plain torch, the mask taken
from the pattern's own predicate (``Pattern.dense_mask``), not from the compiled layout. With one
pattern for all layers the twin is also HF's own sdpa path fed an explicit 4-D boolean mask.
"""
from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

import spattern  # noqa: E402
from spattern.integrations.hf_attention import UnsupportedInput, register, use_spattern  # noqa: E402

N = 80           # not a multiple of the block: a ragged last block row/column
BLOCK = (16, 16)
ATOL = 1e-5      # fp32, |logits| < 1: the measured gap is 2e-7..3e-7 (float rounding order)
VOCAB = 97


def _llama(kv_heads=2):
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                                   num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=256)
    return transformers.LlamaForCausalLM(cfg)


def _neox():
    cfg = transformers.GPTNeoXConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                                     num_attention_heads=4, max_position_embeddings=256, rotary_pct=0.25)
    return transformers.GPTNeoXForCausalLM(cfg)


def _qwen2():
    cfg = transformers.Qwen2Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                                   num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=256)
    return transformers.Qwen2ForCausalLM(cfg)


MODELS = {"llama-gqa": _llama, "llama-mha": lambda: _llama(kv_heads=4), "neox": _neox, "qwen2-mqa": _qwen2}

TWIN_PATTERNS: dict[int, object] = {}


def _twin_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Masked dense attention in plain torch. q (B, H, N, D), k/v (B, Hkv, N, D) -> (B, N, H, D)."""
    H, Hkv, n = query.shape[1], key.shape[1], query.shape[2]
    k = key.repeat_interleave(H // Hkv, dim=1)    # (B, H, N, D)
    v = value.repeat_interleave(H // Hkv, dim=1)
    s = (query @ k.transpose(-1, -2)) * scaling   # (B, H, N, N)
    allowed = torch.from_numpy(TWIN_PATTERNS[module.layer_idx].dense_mask(n, n))  # (N, N) bool
    p = torch.softmax(s.masked_fill(~allowed, float("-inf")), dim=-1)
    return (p @ v).transpose(1, 2).contiguous(), None


@pytest.fixture(scope="module", autouse=True)
def _registered():
    register()
    transformers.AttentionInterface.register("spattern_twin", _twin_attention)


def _model(kind):
    torch.manual_seed(0)
    return MODELS[kind]().eval()


def _logits(model, ids, impl=None, **kw):
    if impl is not None:
        model.set_attn_implementation(impl)
    with torch.no_grad():
        return model(ids, **kw).logits


def _ids(batch=2, n=N, seed=1):
    return torch.randint(0, VOCAB, (batch, n), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_full_causal_equals_sdpa(kind):
    model, ids = _model(kind), _ids()
    ref = _logits(model, ids, "sdpa")
    use_spattern(model, "full() & causal", backend="reference", block=BLOCK)
    got = _logits(model, ids)
    assert model.config._attn_implementation == "spattern"
    assert (got - ref).abs().max().item() < ATOL
    # the result is the pattern's, not SDPA's: a narrow window changes the logits
    use_spattern(model, "local(4) & causal", backend="reference", block=BLOCK)
    assert (_logits(model, ids) - ref).abs().max().item() > 100 * ATOL


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_one_pattern_equals_masked_dense_twins(kind):
    pattern = "local(16) & causal | strided(24) & causal"
    model, ids = _model(kind), _ids()
    p = spattern.parse(pattern)
    TWIN_PATTERNS.clear()
    TWIN_PATTERNS.update({i: p for i in range(model.config.num_hidden_layers)})
    twin = _logits(model, ids, "spattern_twin")
    mask4d = torch.from_numpy(p.dense_mask(N, N))[None, None].expand(ids.shape[0], 1, N, N)  # (B, 1, N, N)
    hf_sdpa = _logits(model, ids, "sdpa", attention_mask=mask4d)  # transformers' own path, explicit 4-D mask
    use_spattern(model, pattern, backend="auto", block=BLOCK)
    got = _logits(model, ids)
    assert (got - twin).abs().max().item() < ATOL
    assert (got - hf_sdpa).abs().max().item() < ATOL


@pytest.mark.parametrize("kind", ["llama-gqa", "neox"])
def test_per_layer_patterns_equal_masked_dense_twin(kind):
    model, ids = _model(kind), _ids()
    pats = ["local(8) & causal", None, "(sink(4) | local(32)) & causal"]
    TWIN_PATTERNS.clear()
    TWIN_PATTERNS.update({i: spattern.parse(s or "full() & causal") for i, s in enumerate(pats)})
    twin = _logits(model, ids, "spattern_twin")
    use_spattern(model, pats, backend="reference", block=BLOCK)
    got = _logits(model, ids)
    assert (got - twin).abs().max().item() < ATOL
    # the layers differ: swapping two layers' patterns changes the logits
    use_spattern(model, [pats[2], pats[1], pats[0]], backend="reference", block=BLOCK)
    assert (_logits(model, ids) - twin).abs().max().item() > 100 * ATOL


def test_generation_without_cache_matches_sdpa():
    model, prompt = _model("llama-gqa"), _ids(batch=1, n=12)
    kw = dict(max_new_tokens=6, do_sample=False, use_cache=False, pad_token_id=0)
    model.set_attn_implementation("sdpa")
    ref = model.generate(prompt, **kw)
    use_spattern(model, "full() & causal", block=BLOCK)
    assert torch.equal(model.generate(prompt, **kw), ref)


def test_rejections_say_what_came():
    model, ids = _model("llama-gqa"), _ids()
    with pytest.raises(UnsupportedInput, match="causal pattern"):
        use_spattern(model, "local(16)")
    with pytest.raises(UnsupportedInput, match="list of 3"):
        use_spattern(model, ["local(16) & causal"] * 2)
    with pytest.raises(UnsupportedInput, match="backend"):
        use_spattern(model, "local(16) & causal", backend="nope")
    use_spattern(model, "local(16) & causal", block=BLOCK)
    pad = torch.ones_like(ids)
    pad[0, :5] = 0
    with pytest.raises(UnsupportedInput, match="padded batch"):
        _logits(model, ids, attention_mask=pad)
    _logits(model, ids, attention_mask=torch.ones_like(ids))  # an all-ones mask is no padding
    with pytest.raises(UnsupportedInput, match="use_cache=False"):
        with torch.no_grad():
            out = model(ids[:, :-1], use_cache=True)
            model(ids[:, -1:], cache=out.past_key_values, use_cache=True)
    packed = torch.cat([torch.arange(40), torch.arange(40)])[None].expand(2, -1)
    with pytest.raises(UnsupportedInput, match="packed sequences"):
        _logits(model, ids, position_ids=packed)


def test_sliding_window_layers_are_rejected():
    cfg = transformers.MistralConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, sliding_window=32)
    torch.manual_seed(0)
    model = use_spattern(transformers.MistralForCausalLM(cfg).eval(), "local(32) & causal", block=BLOCK)
    with pytest.raises(UnsupportedInput, match="sliding window of 32"):
        _logits(model, _ids())
