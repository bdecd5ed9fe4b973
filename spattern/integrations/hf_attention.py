"""spattern as a transformers attention implementation (``AttentionInterface``, transformers >= 5).

    from spattern.integrations.hf_attention import use_spattern
    model = AutoModelForCausalLM.from_pretrained(...)
    use_spattern(model, "local(256) & causal")                  # one pattern for every layer
    use_spattern(model, ["full() & causal", "local(64) & causal", None, ...])   # one per layer
    logits = model(input_ids).logits

Any model whose attention goes through ``ALL_ATTENTION_FUNCTIONS`` (Llama, Qwen2, Mistral,
GPT-NeoX, ...) then calls ``spattern_attention_forward`` in each layer: q (B, H, N, D) and k/v
(B, Hkv, N, D), H % Hkv == 0 (grouped-query attention is native in ``spattern.attention``), and
it returns (out (B, N, H, D), None). The layer's pattern is compiled once per (pattern, N, block)
by ``spattern.compile`` (static patterns are cached there), validated on its first use, and run by
``spattern.attention(..., backend)`` (``auto`` picks the backend per call).

Contract (each violation raises ``UnsupportedInput`` saying what came and what to do):
- The pattern is the layer's whole attention pattern, so it must be causal itself
  (``pattern.is_causal``, e.g. ``"local(256) & causal"``); a pattern that is not is rejected when
  ``use_spattern`` is called rather than silently intersected with ``causal``. ``None``/"dense" is
  plain causal attention through torch SDPA.
- Full-sequence forwards only: q_len == kv_len (no decoding step against a KV cache; generate with
  ``use_cache=False``, where every step is a full forward).
- No padding: the registered mask function (``spattern_mask``) returns ``None`` for a batch
  without padding, so transformers never builds a dense 4-D mask; a padded batch, a custom 4-D
  mask, packed sequences (``position_ids`` that restart) and a layer with a sliding window
  shorter than the sequence are errors (write the window into the pattern instead).
- No attention dropout and no attention weights (``output_attentions`` gets ``None``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from ..utils.errors import UserError

NAME = "spattern"
DENSE = (None, "", "dense")
SETTINGS_ATTR = "_spattern_settings"


class UnsupportedInput(UserError, ValueError):
    """An input the spattern attention implementation does not handle; the message says why."""


@dataclass(frozen=True)
class Settings:
    """What ``use_spattern`` stores on every module with a ``layer_idx``: one pattern per layer
    (a static, causal ``spattern.Pattern``, or None for dense causal), the backend and block."""

    patterns: tuple  # (n_layers,) Pattern | None
    backend: str
    block: tuple[int, int]

    def pattern_of(self, layer_idx: int):
        if not 0 <= layer_idx < len(self.patterns):
            raise UnsupportedInput(f"layer_idx: expected 0..{len(self.patterns) - 1}, got {layer_idx}")
        return self.patterns[layer_idx]


def spattern_mask(batch_size: int, q_length: int, kv_length: int, q_offset: int = 0, kv_offset: int = 0,
                  mask_function=None, attention_mask: torch.Tensor | None = None, **kwargs):
    """The mask transformers builds for us: ``None`` when there is no padding (the pattern is the
    mask), else the 2-D (B, kv_len) boolean padding mask, which the attention function rejects."""
    if attention_mask is None:
        return None
    attention_mask = attention_mask[:, -kv_length:]  # (B, kv_len) bool
    if attention_mask.shape[1] == kv_length and bool(attention_mask.all()):
        return None
    return attention_mask


def _check_call(module, query, key, attention_mask, dropout, kwargs) -> None:
    B, H, Nq, D = query.shape
    Nk = key.shape[2]
    if attention_mask is not None:
        what = ("a padded batch (attention_mask has zeros)" if attention_mask.dim() == 2
                else f"a custom {attention_mask.dim()}-D attention mask {tuple(attention_mask.shape)}")
        raise UnsupportedInput(f"spattern attention: expected unpadded input with no custom mask, got {what}; "
                               "run sequences of equal length (or one per batch), or express the mask as a pattern")
    if Nq != Nk:
        raise UnsupportedInput(f"spattern attention: expected a full-sequence forward (q_len == kv_len), got "
                               f"q_len={Nq}, kv_len={Nk} (a decoding step against a KV cache); call the model "
                               "with use_cache=False (generate(..., use_cache=False))")
    if not getattr(module, "is_causal", True):
        raise UnsupportedInput(f"spattern attention: expected a causal (decoder) attention module, got "
                               f"{type(module).__name__} with is_causal=False")
    if dropout:
        raise UnsupportedInput(f"spattern attention: expected attention dropout 0, got {dropout} "
                               "(set config.attention_dropout = 0 or call model.eval())")
    window = kwargs.get("sliding_window")
    if window is not None and window < Nk:
        raise UnsupportedInput(f"spattern attention: layer {getattr(module, 'layer_idx', '?')} has a sliding "
                               f"window of {window} tokens and the sequence is {Nk} long; write the window into "
                               f"the pattern (e.g. 'local({window}) & causal') and set config.sliding_window = None")
    for name in ("softcap", "s_aux", "sinks"):
        if kwargs.get(name) is not None:
            raise UnsupportedInput(f"spattern attention: expected no {name!r} (not supported), got one")
    pos = kwargs.get("position_ids")
    if pos is not None and getattr(module, "layer_idx", 0) == 0 and pos.shape[-1] == Nq > 1:
        # packed sequences restart their positions; checked once per forward (layer 0): a host sync
        if not bool((pos.diff(dim=-1) == 1).all()):
            raise UnsupportedInput("spattern attention: expected consecutive position_ids, got positions that "
                                   "restart (packed sequences); use a document() pattern through spattern.attention "
                                   "with cu_seqlens, or one sequence per batch row")


def spattern_attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                               value: torch.Tensor, attention_mask: torch.Tensor | None, scaling: float | None = None,
                               dropout: float = 0.0, **kwargs) -> tuple[torch.Tensor, None]:
    """softmax(scaling * q k^T restricted to the layer's pattern) v.

    query (B, H, N, D), key/value (B, Hkv, N, D) -> (out (B, N, H, D), None)."""
    settings: Settings | None = getattr(module, SETTINGS_ATTR, None)
    if settings is None:
        raise UnsupportedInput(f"spattern attention: {type(module).__name__} has no pattern; call "
                               "spattern.integrations.hf_attention.use_spattern(model, pattern) first")
    _check_call(module, query, key, attention_mask, dropout, kwargs)
    pattern = settings.pattern_of(int(module.layer_idx))
    H, Hkv, N = query.shape[1], key.shape[1], query.shape[2]
    if pattern is None:
        out = F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scaling,
                                             enable_gqa=Hkv != H)  # (B, H, N, D)
    else:
        from spattern.compiler.compile import compile as compile_pattern  # noqa: PLC0415
        from spattern.runtime.api import attention  # noqa: PLC0415

        layout = compile_pattern(pattern, N, N, block=settings.block)  # cached per (pattern, N, block)
        if layout.group_shape[1] not in (1, H):
            raise UnsupportedInput(f"pattern {pattern}: expected 1 or {H} per-head patterns (the model's query "
                                   f"heads), got {layout.group_shape[1]}")
        out = attention(query, key, value, layout, scale=scaling, backend=settings.backend)
    return out.transpose(1, 2).contiguous(), None  # (B, N, H, D)


def register() -> None:
    """Register ``"spattern"`` with transformers' ``AttentionInterface`` and ``AttentionMaskInterface``
    (idempotent). Needs transformers >= 5."""
    try:
        from transformers import AttentionInterface  # noqa: PLC0415
        from transformers.masking_utils import AttentionMaskInterface  # noqa: PLC0415
    except ImportError as exc:
        raise ImportError("the spattern attention implementation needs transformers >= 5: "
                          "pip install 'spattern[hf]'") from exc
    AttentionInterface.register(NAME, spattern_attention_forward)
    AttentionMaskInterface.register(NAME, spattern_mask)


def _as_pattern(p, where: str):
    if p in DENSE:
        return None
    from spattern.patterns import Pattern, parse  # noqa: PLC0415

    pat = parse(p) if isinstance(p, str) else p
    if not isinstance(pat, Pattern):
        raise TypeError(f"{where}: expected a pattern string, a spattern.Pattern or None, got {type(p).__name__}")
    if not pat.is_static:
        raise UnsupportedInput(f"{where}: expected a static pattern (compiled once per length), got {pat}, "
                               "which needs a context (cu_seqlens, scores)")
    if not pat.is_causal:
        raise UnsupportedInput(f"{where}: expected a causal pattern (the model is a decoder), got {pat}; "
                               f"write '({pat}) & causal'")
    return pat


def attention_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules that carry a ``layer_idx`` (the attention modules and, in some models, their layers)."""
    return [m for m in model.modules() if isinstance(getattr(m, "layer_idx", None), int)]


def use_spattern(model, pattern: str | object | None | Sequence = "full() & causal", backend: str = "auto",
                 block: int | tuple[int, int] = (64, 64)):
    """Run ``model``'s attention through spattern: ``pattern`` is one pattern for every layer or a
    list with one per layer (None or "dense": torch SDPA causal). Registers the implementation,
    stores the settings on each module with a ``layer_idx`` and switches
    ``model.set_attn_implementation("spattern")``. Returns the model."""
    from ..runtime.api import BACKENDS  # noqa: PLC0415

    register()
    n_layers = getattr(model.config, "num_hidden_layers", None)
    if not isinstance(n_layers, int):
        raise UnsupportedInput(f"model.config.num_hidden_layers: expected an int, got {n_layers!r}")
    if isinstance(pattern, (list, tuple)):
        if len(pattern) != n_layers:
            raise UnsupportedInput(f"pattern: expected one pattern or a list of {n_layers} (one per layer), "
                                   f"got a list of {len(pattern)}")
        pats = tuple(_as_pattern(p, f"pattern[{i}]") for i, p in enumerate(pattern))
    else:
        pats = (_as_pattern(pattern, "pattern"),) * n_layers
    if backend not in ("auto", *BACKENDS):
        raise UnsupportedInput(f"backend: expected one of {('auto', *BACKENDS)}, got {backend!r}")
    bq, bk = (block, block) if isinstance(block, int) else tuple(block)
    settings = Settings(pats, backend, (int(bq), int(bk)))
    layers = attention_layers(model)
    if not layers:
        raise UnsupportedInput(f"{type(model).__name__}: expected attention modules with a layer_idx, found none")
    for m in layers:
        object.__setattr__(m, SETTINGS_ATTR, settings)  # a plain attribute, not a submodule/buffer
    model.set_attn_implementation(NAME)
    return model
