"""Transformers-style checkpoints (config.json + *.safetensors) into `DecoderLM`.

Supported `model_type`s: "llama" (SmolLM2, Llama), "gpt_neox" (Pythia), "opt" (OPT with
word_embed_proj_dim == hidden_size, pre-LN). A local folder is read directly; anything else is a hub
id fetched with `huggingface_hub.snapshot_download` into the cache dir (needs a network).
`to_hf_state_dict` writes the inverse naming (tests round-trip through it).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..data.cache import cache_dir
from ..data.tokenizer import BPETokenizer
from .config import ModelConfig
from .decoder import DecoderLM, materialize

LLAMA = {"input_layernorm.weight": "ln1.weight", "post_attention_layernorm.weight": "ln2.weight",
         "self_attn.q_proj.weight": "attn.q_proj.weight", "self_attn.k_proj.weight": "attn.k_proj.weight",
         "self_attn.v_proj.weight": "attn.v_proj.weight", "self_attn.o_proj.weight": "attn.o_proj.weight",
         "mlp.gate_proj.weight": "mlp.gate.weight", "mlp.up_proj.weight": "mlp.up.weight",
         "mlp.down_proj.weight": "mlp.down.weight"}
NEOX = {"input_layernorm": "ln1", "post_attention_layernorm": "ln2", "attention.dense": "attn.o_proj",
        "mlp.dense_h_to_4h": "mlp.fc1", "mlp.dense_4h_to_h": "mlp.fc2"}
OPT = {"self_attn_layer_norm": "ln1", "final_layer_norm": "ln2", "self_attn.q_proj": "attn.q_proj",
       "self_attn.k_proj": "attn.k_proj", "self_attn.v_proj": "attn.v_proj", "self_attn.out_proj": "attn.o_proj",
       "fc1": "mlp.fc1", "fc2": "mlp.fc2"}


def config_from_hf(hc: dict, **overrides) -> ModelConfig:
    kind = hc.get("model_type")
    common = dict(vocab_size=hc["vocab_size"], d_model=hc["hidden_size"], n_layers=hc["num_hidden_layers"],
                  n_heads=hc["num_attention_heads"], max_seq_len=hc.get("max_position_embeddings", 2048))
    if kind == "llama":
        cfg = dict(arch="llama", n_kv_heads=hc.get("num_key_value_heads"), d_ff=hc["intermediate_size"],
                   rope_theta=float(hc.get("rope_theta", 10000.0)), norm_eps=float(hc.get("rms_norm_eps", 1e-6)),
                   tie_embeddings=bool(hc.get("tie_word_embeddings", False)), bias=False, rotary_pct=1.0)
    elif kind == "gpt_neox":
        if not hc.get("use_parallel_residual", True):
            raise ValueError("config.json use_parallel_residual: expected true (Pythia), got false")
        cfg = dict(arch="neox", d_ff=hc["intermediate_size"], rotary_pct=float(hc.get("rotary_pct", 0.25)),
                   rope_theta=float(hc.get("rotary_emb_base", 10000.0)), norm_eps=float(hc.get("layer_norm_eps", 1e-5)),
                   tie_embeddings=bool(hc.get("tie_word_embeddings", False)))
    elif kind == "opt":
        if hc.get("word_embed_proj_dim", hc["hidden_size"]) != hc["hidden_size"] or \
                not hc.get("do_layer_norm_before", True):
            raise ValueError("OPT config: expected word_embed_proj_dim == hidden_size and pre-LN "
                             "(opt-125m and the 1.3b+ models), got another variant")
        cfg = dict(arch="opt", d_ff=hc["ffn_dim"], tie_embeddings=bool(hc.get("tie_word_embeddings", True)))
    else:
        raise ValueError(f"config.json model_type: expected 'llama', 'gpt_neox' or 'opt', got {kind!r}")
    return ModelConfig(**common, **cfg, **overrides)


def state_from_hf(raw: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    sd: dict[str, torch.Tensor] = {}
    H, D, C = cfg.n_heads, cfg.head_dim, cfg.d_model
    if cfg.arch == "llama":
        sd["embed.weight"], sd["norm.weight"] = raw["model.embed_tokens.weight"], raw["model.norm.weight"]
        if not cfg.tie_embeddings:
            sd["lm_head.weight"] = raw["lm_head.weight"]
        for i in range(cfg.n_layers):
            for src, dst in LLAMA.items():
                sd[f"layers.{i}.{dst}"] = raw[f"model.layers.{i}.{src}"]
    elif cfg.arch == "neox":
        sd["embed.weight"], sd["lm_head.weight"] = raw["gpt_neox.embed_in.weight"], raw["embed_out.weight"]
        for t in ("weight", "bias"):
            sd[f"norm.{t}"] = raw[f"gpt_neox.final_layer_norm.{t}"]
        for i in range(cfg.n_layers):
            pre = f"gpt_neox.layers.{i}."
            for src, dst in NEOX.items():
                for t in ("weight", "bias"):
                    sd[f"layers.{i}.{dst}.{t}"] = raw[f"{pre}{src}.{t}"]
            w = raw[pre + "attention.query_key_value.weight"].view(H, 3, D, C)  # rows are (head, q|k|v, dim)
            b = raw[pre + "attention.query_key_value.bias"].view(H, 3, D)
            for j, name in enumerate(("q_proj", "k_proj", "v_proj")):
                sd[f"layers.{i}.attn.{name}.weight"] = w[:, j].reshape(H * D, C)
                sd[f"layers.{i}.attn.{name}.bias"] = b[:, j].reshape(H * D)
    else:  # opt
        pre = "model.decoder."
        sd["embed.weight"], sd["pos_embed.weight"] = raw[pre + "embed_tokens.weight"], raw[pre + "embed_positions.weight"]
        if not cfg.tie_embeddings:
            sd["lm_head.weight"] = raw["lm_head.weight"]
        for t in ("weight", "bias"):
            sd[f"norm.{t}"] = raw[f"{pre}final_layer_norm.{t}"]
        for i in range(cfg.n_layers):
            for src, dst in OPT.items():
                for t in ("weight", "bias"):
                    sd[f"layers.{i}.{dst}.{t}"] = raw[f"{pre}layers.{i}.{src}.{t}"]
    return {k: v.float() for k, v in sd.items()}


def to_hf_state_dict(model: DecoderLM) -> dict[str, torch.Tensor]:
    """`model`'s weights under transformers' names for its architecture (inverse of state_from_hf)."""
    cfg, own = model.cfg, dict(model.named_parameters())
    out: dict[str, torch.Tensor] = {}
    H, D, C = cfg.n_heads, cfg.head_dim, cfg.d_model
    if cfg.arch == "llama":
        out["model.embed_tokens.weight"], out["model.norm.weight"] = own["embed.weight"], own["norm.weight"]
        if not cfg.tie_embeddings:
            out["lm_head.weight"] = own["lm_head.weight"]
        for i in range(cfg.n_layers):
            for src, dst in LLAMA.items():
                out[f"model.layers.{i}.{src}"] = own[f"layers.{i}.{dst}"]
    elif cfg.arch == "neox":
        out["gpt_neox.embed_in.weight"], out["embed_out.weight"] = own["embed.weight"], model.lm_head.weight
        for t in ("weight", "bias"):
            out[f"gpt_neox.final_layer_norm.{t}"] = own[f"norm.{t}"]
        for i in range(cfg.n_layers):
            pre = f"gpt_neox.layers.{i}."
            for src, dst in NEOX.items():
                for t in ("weight", "bias"):
                    out[f"{pre}{src}.{t}"] = own[f"layers.{i}.{dst}.{t}"]
            ws = [own[f"layers.{i}.attn.{n}.weight"].view(H, 1, D, C) for n in ("q_proj", "k_proj", "v_proj")]
            bs = [own[f"layers.{i}.attn.{n}.bias"].view(H, 1, D) for n in ("q_proj", "k_proj", "v_proj")]
            out[pre + "attention.query_key_value.weight"] = torch.cat(ws, 1).reshape(3 * H * D, C)
            out[pre + "attention.query_key_value.bias"] = torch.cat(bs, 1).reshape(3 * H * D)
    else:
        pre = "model.decoder."
        out[pre + "embed_tokens.weight"], out[pre + "embed_positions.weight"] = own["embed.weight"], own["pos_embed.weight"]
        for t in ("weight", "bias"):
            out[f"{pre}final_layer_norm.{t}"] = own[f"norm.{t}"]
        for i in range(cfg.n_layers):
            for src, dst in OPT.items():
                for t in ("weight", "bias"):
                    out[f"{pre}layers.{i}.{src}.{t}"] = own[f"layers.{i}.{dst}.{t}"]
    return {k: v.detach().contiguous().clone() for k, v in out.items()}


def hf_config_of(model: DecoderLM) -> dict:
    """A minimal transformers config.json for `model` (tests write checkpoints with it)."""
    c = model.cfg
    base = {"vocab_size": c.vocab_size, "hidden_size": c.d_model, "num_hidden_layers": c.n_layers,
            "num_attention_heads": c.n_heads, "max_position_embeddings": c.max_seq_len,
            "tie_word_embeddings": c.tie_embeddings}
    if c.arch == "llama":
        return {**base, "model_type": "llama", "num_key_value_heads": c.kv_heads, "intermediate_size": c.ff,
                "rope_theta": c.rope_theta, "rms_norm_eps": c.norm_eps}
    if c.arch == "neox":
        return {**base, "model_type": "gpt_neox", "intermediate_size": c.ff, "rotary_pct": c.rotary_pct,
                "rotary_emb_base": c.rope_theta, "layer_norm_eps": c.norm_eps, "use_parallel_residual": True}
    return {**base, "model_type": "opt", "ffn_dim": c.ff, "word_embed_proj_dim": c.d_model,
            "do_layer_norm_before": True}


def from_hf(repo_or_dir: str | Path, dtype: torch.dtype = torch.float32, **overrides
            ) -> tuple[DecoderLM, BPETokenizer | None]:
    """Model (and tokenizer, when tokenizer.json is there) from a local folder or a hub id."""
    folder = Path(repo_or_dir).expanduser()
    if not folder.is_dir():
        try:
            from huggingface_hub import snapshot_download  # noqa: PLC0415
        except ImportError as exc:
            raise ImportError("loading from the hub needs `pip install huggingface_hub safetensors` "
                              f"(or pass a local folder; got {repo_or_dir!r})") from exc
        folder = Path(snapshot_download(str(repo_or_dir), allow_patterns=["*.json", "*.safetensors"],
                                        cache_dir=str(cache_dir("hf"))))
    if not (folder / "config.json").is_file() or not list(folder.glob("*.safetensors")):
        raise FileNotFoundError(f"HF checkpoint: expected config.json and *.safetensors in {folder}")
    from safetensors.torch import load_file  # noqa: PLC0415


    hc = json.loads((folder / "config.json").read_text())
    cfg = config_from_hf(hc, **overrides)
    raw: dict[str, torch.Tensor] = {}
    for f in sorted(folder.glob("*.safetensors")):
        raw.update(load_file(str(f)))
    model = materialize(cfg, state_from_hf(raw, cfg), dtype)
    tok = None
    if (folder / "tokenizer.json").is_file():
        from tokenizers import Tokenizer  # noqa: PLC0415

        t = Tokenizer.from_file(str(folder / "tokenizer.json"))
        eos = hc.get("eos_token_id", 0)
        tok = BPETokenizer(t, eos_token=t.id_to_token(eos if isinstance(eos, int) else eos[0]))
    return model, tok
