"""Text generation (greedy, or sampling with temperature / top-k / top-p) for any DecoderLM."""
from __future__ import annotations

import torch

from ..models.decoder import DecoderLM


@torch.no_grad()
def generate(model: DecoderLM, prompt_ids: list[int], max_new_tokens: int = 32, temperature: float = 0.0,
             top_k: int | None = None, top_p: float | None = None, eos_id: int | None = None,
             seed: int | None = None, context: int | None = None, use_cache: bool = True) -> list[int]:
    """New token ids after `prompt_ids`. temperature 0 is greedy. Dense models keep a KV cache;
    with a pattern the model re-reads the last `context` tokens each step (every pattern works
    unchanged), as do dense models once the text is longer than `context`."""
    if not prompt_ids:
        raise ValueError("prompt_ids: expected at least one token, got none")
    if temperature < 0:
        raise ValueError(f"temperature: expected >= 0, got {temperature}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p: expected in (0, 1], got {top_p}")
    device = next(model.parameters()).device
    context = context or model.cfg.max_seq_len
    gen = torch.Generator(device=device)
    gen.manual_seed(0 if seed is None else seed)
    was_training = model.training
    model.eval()
    ids = list(prompt_ids)
    out: list[int] = []
    dense = all(layer.attn.pattern is None for layer in model.layers)
    cache: list[dict] | None = None
    for _ in range(max_new_tokens):
        if dense and use_cache and len(ids) <= context:
            if cache is None:  # prefill, then one token a step
                cache = [{} for _ in model.layers]
                x = torch.tensor([ids], device=device)                          # (1, N)
            else:
                x = torch.tensor([ids[-1:]], device=device)                     # (1, 1)
            logits, _ = model(x, cache=cache)
        else:  # patterned layers (or past the context): re-read the last `context` tokens
            logits, _ = model(torch.tensor([ids[-context:]], device=device))
        logits = logits[0, -1].float()                                         # (V,)
        if temperature == 0:
            nxt = int(logits.argmax())
        else:
            logits = logits / temperature
            if top_k is not None:
                kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            probs = torch.softmax(logits, -1)
            if top_p is not None:
                sp, si = probs.sort(descending=True)
                keep = sp.cumsum(0) - sp < top_p                               # smallest prefix with mass >= p
                probs = torch.zeros_like(probs).scatter(0, si[keep], sp[keep])
                probs = probs / probs.sum()
            nxt = int(torch.multinomial(probs, 1, generator=gen))
        ids.append(nxt)
        out.append(nxt)
        if eos_id is not None and nxt == eos_id:
            break
    model.train(was_training)
    return out


def chat_prompt(user: str, system: str | None = None) -> str:
    """ChatML, as SmolLM2-Instruct was trained with."""
    sys_msg = system or "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    return (f"<|im_start|>system\n{sys_msg}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
            f"<|im_start|>assistant\n")
