"""Models: the three decoders, presets, rotary conventions, HF loading, patterned attention, generation."""
from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from spattern.models import DecoderLM, ModelConfig, attend, get_config
from spattern.models.rotary import Rotary, unpermute_qk
from spattern.train.generate import chat_prompt, generate

HAS_API = importlib.util.find_spec("spattern.runtime.api") is not None
needs_api = pytest.mark.skipif(not HAS_API, reason="spattern.runtime.api (the attention API) is not there yet")


def _naive(q, k, v, mask):  # (B,H,N,D), (B,Hkv,N,D), bool (N, N)
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    s = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
    return torch.softmax(s.masked_fill(~mask, float("-inf")), -1) @ v


@pytest.mark.parametrize("preset", ["neox-tiny", "opt-tiny", "llama-tiny"])
def test_forward_shapes_and_loss(preset):
    torch.manual_seed(0)
    m = DecoderLM(get_config(preset))
    x = torch.randint(0, m.cfg.vocab_size, (2, 40))
    logits, loss = m(x[:, :-1], x[:, 1:])
    assert logits.shape == (2, 39, m.cfg.vocab_size)
    assert abs(loss.item() - torch.log(torch.tensor(float(m.cfg.vocab_size))).item()) < 0.3  # ~uniform at init
    loss.backward()
    assert all(p.grad is not None for p in m.parameters())
    per_tok = m(x[:, :-1], x[:, 1:], reduction="none")[1]
    assert per_tok.shape == (2, 39) and torch.allclose(per_tok.mean(), loss)


def test_causality():
    torch.manual_seed(0)
    for preset in ["neox-tiny", "opt-tiny", "llama-tiny"]:
        m = DecoderLM(get_config(preset)).eval()
        x = torch.randint(0, 100, (1, 30))
        y = x.clone()
        y[0, 20:] = (y[0, 20:] + 1) % 100
        with torch.no_grad():
            a, b = m(x)[0], m(y)[0]
        assert torch.allclose(a[0, :20], b[0, :20], atol=1e-5), preset
        assert not torch.allclose(a[0, 20:], b[0, 20:], atol=1e-5), preset


def test_preset_parameter_counts_match_the_originals():
    with torch.device("meta"):
        assert DecoderLM(get_config("pythia-70m")).num_params() == 70_426_624     # EleutherAI/pythia-70m
        assert DecoderLM(get_config("opt-125m")).num_params() == 125_239_296      # facebook/opt-125m
        assert DecoderLM(get_config("smollm2-135m")).num_params() == 134_515_008  # SmolLM2-135M
        n = DecoderLM(get_config("neox-20m")).num_params()
    assert 18e6 < n < 23e6


def test_config_checks_name_the_argument():
    with pytest.raises(ValueError, match="n_kv_heads"):
        ModelConfig(arch="llama", n_heads=9, n_kv_heads=2, d_model=576)
    with pytest.raises(ValueError, match="arch"):
        ModelConfig(arch="gpt5")
    with pytest.raises(ValueError, match="unknown fields"):
        get_config("neox-tiny", hidden=3)
    with pytest.raises(ValueError, match="one per layer"):
        DecoderLM(get_config("neox-tiny", pattern=["dense"] * 3))
    with pytest.raises(ValueError, match="idx"):
        DecoderLM(get_config("neox-tiny"))(torch.zeros(3, dtype=torch.long))


def test_dense_attend_is_causal_sdpa_with_gqa():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 6, 33, 16), torch.randn(2, 2, 33, 16), torch.randn(2, 2, 33, 16)
    mask = torch.ones(33, 33, dtype=torch.bool).tril()
    assert torch.allclose(attend(q, k, v, None), _naive(q, k, v, mask), atol=1e-5)
    with pytest.raises(ValueError, match="divisible"):
        attend(q, torch.randn(2, 4, 33, 16), torch.randn(2, 4, 33, 16))


def test_rotary_conventions_agree_after_unpermuting():
    """llama.cpp's interleaved rows + interleaved RoPE == unpermuted rows + half-split RoPE."""
    torch.manual_seed(0)
    H, D, C, N = 3, 16, 24, 10
    w_hf = torch.randn(H * D, C)
    # llama.cpp's conversion: rows (h, 2, D/2) -> (h, D/2, 2)
    w_gguf = w_hf.reshape(H, 2, D // 2, C).transpose(1, 2).reshape(H * D, C)
    assert torch.equal(unpermute_qk(w_gguf, H), w_hf)
    x = torch.randn(1, N, C)
    q_hf = (x @ w_hf.T).view(1, N, H, D).transpose(1, 2)
    q_gg = (x @ w_gguf.T).view(1, N, H, D).transpose(1, 2)
    a = Rotary(D, style="half")(q_hf)
    b = Rotary(D, style="interleaved")(q_gg)
    # same attention scores (dot products), different row order inside each head
    assert torch.allclose(a @ a.transpose(-1, -2), b @ b.transpose(-1, -2), atol=1e-4)
    with pytest.raises(ValueError, match="rot_dim"):
        Rotary(16, 15)


@pytest.mark.parametrize("preset", ["llama-tiny", "neox-tiny", "opt-tiny"])
def test_hf_safetensors_path_round_trips(tmp_path, preset):
    pytest.importorskip("safetensors")
    from safetensors.torch import save_file

    from spattern.models import from_hf
    from spattern.models.hf import hf_config_of, to_hf_state_dict

    torch.manual_seed(0)
    m = DecoderLM(get_config(preset, tie_embeddings=preset == "opt-tiny")).eval()
    for p in m.parameters():  # non-trivial norms and biases
        p.data.add_(0.01 * torch.randn_like(p))
    save_file(to_hf_state_dict(m), str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(hf_config_of(m)))
    m2, tok = from_hf(tmp_path)
    assert tok is None and m2.cfg.arch == m.cfg.arch
    x = torch.randint(0, m.cfg.vocab_size, (1, 20))
    with torch.no_grad():
        assert torch.allclose(m(x)[0], m2(x)[0], atol=1e-5)
    with pytest.raises(FileNotFoundError, match="config.json"):
        from_hf(_empty_dir(tmp_path))


def _empty_dir(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    return d


def test_generation_greedy_and_sampling():
    torch.manual_seed(0)
    m = DecoderLM(get_config("llama-tiny"))
    g1 = generate(m, [1, 2, 3], 8)
    assert g1 == generate(m, [1, 2, 3], 8) and len(g1) == 8
    s1 = generate(m, [1, 2, 3], 8, temperature=1.0, top_k=50, top_p=0.9, seed=1)
    assert s1 == generate(m, [1, 2, 3], 8, temperature=1.0, top_k=50, top_p=0.9, seed=1)
    assert generate(m, [1, 2, 3], 8, eos_id=g1[0]) == g1[:1]
    with pytest.raises(ValueError, match="prompt_ids"):
        generate(m, [], 3)
    assert chat_prompt("hi").endswith("<|im_start|>assistant\n")


@needs_api
@pytest.mark.parametrize("pattern", ["local(16) & causal", "(local(8) | strided(4)) & causal"])
def test_patterned_attend_matches_the_layout_mask(pattern):
    import spattern

    torch.manual_seed(0)
    N = 70
    q, k, v = torch.randn(1, 4, N, 16), torch.randn(1, 2, N, 16), torch.randn(1, 2, N, 16)
    mask = torch.from_numpy(spattern.compile(spattern.parse(pattern), N, block=(16, 16)).to_dense()[0])
    out = attend(q, k, v, pattern, backend="reference", block=(16, 16))
    assert torch.allclose(out, _naive(q, k, v, mask), atol=1e-5)


@needs_api
def test_per_layer_patterns_and_set_pattern():
    torch.manual_seed(0)
    m = DecoderLM(get_config("neox-tiny", pattern=["local(16) & causal", "dense"], backend="reference",
                             block=(16, 16))).eval()
    assert [l.attn.pattern for l in m.layers] == ["local(16) & causal", None]
    x = torch.randint(0, 100, (1, 48))
    with torch.no_grad():
        sparse = m(x)[0]
        m.set_pattern("dense")
        dense = m(x)[0]
        m.set_pattern("local(64) & causal", "reference")  # window covers all 48 tokens: same as dense
        wide = m(x)[0]
    assert torch.allclose(dense, wide, atol=1e-4)
    assert not torch.allclose(dense[0, 20:], sparse[0, 20:], atol=1e-4)
    assert torch.allclose(dense[0, :16], sparse[0, :16], atol=1e-4)


def test_window_perplexity_counts_each_target_once():
    import numpy as np

    from spattern.evaluation.perplexity import window_perplexity

    torch.manual_seed(0)
    m = DecoderLM(get_config("neox-tiny"))
    offsets = np.array([0, 30, 230])
    stream = np.random.default_rng(0).integers(0, 100, 230)
    r = window_perplexity(m, stream, offsets, window=64, stride=32)
    assert r["tokens"] == 199 and set(r["docs"]) == {1} and r["windows"] == 6
    x = torch.from_numpy(stream[30:95])[None]
    with torch.no_grad():
        first = m(x[:, :-1], x[:, 1:], reduction="none")[1].sum().item()
    r1 = window_perplexity(m, stream, offsets, window=64, stride=32, max_windows=1)
    assert r1["docs"][1][0] == pytest.approx(first, rel=1e-5)


@pytest.mark.parametrize("preset", ["neox-tiny", "opt-tiny", "llama-tiny"])
def test_kv_cache_matches_recomputation(preset):
    torch.manual_seed(0)
    m = DecoderLM(get_config(preset)).eval()
    x = torch.randint(0, 100, (1, 25))
    with torch.no_grad():
        full = m(x)[0]
        cache = [{} for _ in m.layers]
        parts = [m(x[:, :10], cache=cache)[0], m(x[:, 10:11], cache=cache)[0], m(x[:, 11:], cache=cache)[0]]
    assert torch.allclose(torch.cat(parts, 1), full, atol=1e-5)
    assert generate(m, [5, 6, 7], 10) == generate(m, [5, 6, 7], 10, use_cache=False)
