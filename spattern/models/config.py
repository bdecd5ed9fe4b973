"""Model configurations: one dataclass for every architecture, and named presets."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

ARCHS = ("neox", "opt", "llama")


@dataclass
class ModelConfig:
    arch: str = "neox"                   # "neox" (Pythia), "opt", "llama"
    vocab_size: int = 50304
    d_model: int = 512
    n_layers: int = 6
    n_heads: int = 8
    n_kv_heads: int | None = None        # grouped-query attention (llama); None = n_heads
    d_ff: int | None = None              # None = 4 * d_model
    max_seq_len: int = 2048
    rotary_pct: float = 0.25             # neox: fraction of each head's dims that rotate
    rope_theta: float = 10000.0
    rope_style: str = "half"             # "half" (NeoX/HF) or "interleaved" (GPT-J, raw GGUF)
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    bias: bool = True                    # neox/opt linear biases; llama has none
    pattern: Any = None                  # None/"dense", a pattern string, or a list (one per layer)
    backend: str = "auto"                # spattern.attention backend for patterned layers
    block: tuple[int, int] = (64, 64)    # layout block sizes
    init_std: float = 0.02
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch: expected one of {ARCHS}, got {self.arch!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model: expected a multiple of n_heads={self.n_heads}, got {self.d_model}")
        kv = self.kv_heads
        if self.n_heads % kv:
            raise ValueError(f"n_kv_heads: expected a divisor of n_heads={self.n_heads}, got {kv}")
        self.block = tuple(self.block)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def ff(self) -> int:
        return self.d_ff or 4 * self.d_model

    def to_dict(self) -> dict:
        d = asdict(self)
        d["block"] = list(self.block)
        return d


PRESETS: dict[str, ModelConfig] = {
    # Pythia-70m (EleutherAI): 6 layers, 512 hidden, 8 heads, rotary on 25% of dims, parallel residual
    "pythia-70m": ModelConfig(arch="neox", vocab_size=50304, d_model=512, n_layers=6, n_heads=8,
                              d_ff=2048, max_seq_len=2048, rotary_pct=0.25),
    # ~20M parameters at vocab 8192: the H100 training runs
    "neox-20m": ModelConfig(arch="neox", vocab_size=8192, d_model=384, n_layers=8, n_heads=6,
                            d_ff=1536, max_seq_len=2048, rotary_pct=0.25),
    # tiny CPU configs (tests, quick checks)
    "neox-tiny": ModelConfig(arch="neox", vocab_size=2048, d_model=64, n_layers=2, n_heads=4,
                             d_ff=256, max_seq_len=512, rotary_pct=0.5),
    "opt-tiny": ModelConfig(arch="opt", vocab_size=2048, d_model=64, n_layers=2, n_heads=4,
                            d_ff=256, max_seq_len=512, tie_embeddings=True),
    "llama-tiny": ModelConfig(arch="llama", vocab_size=2048, d_model=64, n_layers=2, n_heads=4,
                              n_kv_heads=2, d_ff=172, max_seq_len=512, bias=False, tie_embeddings=True,
                              rotary_pct=1.0),
    # OPT-125m (Meta): 12 layers, 768 hidden, 12 heads, learned positions, ReLU, tied embeddings
    "opt-125m": ModelConfig(arch="opt", vocab_size=50272, d_model=768, n_layers=12, n_heads=12,
                            d_ff=3072, max_seq_len=2048, tie_embeddings=True),
    # SmolLM2-135M (Hugging Face): Llama, 30 layers, 576 hidden, 9 q heads / 3 kv heads, theta 1e5
    "smollm2-135m": ModelConfig(arch="llama", vocab_size=49152, d_model=576, n_layers=30, n_heads=9,
                                n_kv_heads=3, d_ff=1536, max_seq_len=8192, rope_theta=100000.0,
                                norm_eps=1e-5, tie_embeddings=True, bias=False, rotary_pct=1.0),
}


def get_config(name: str, **overrides: Any) -> ModelConfig:
    """A preset by name with fields overridden (unknown field names are an error)."""
    if name not in PRESETS:
        raise ValueError(f"model preset: expected one of {sorted(PRESETS)}, got {name!r}")
    base = PRESETS[name]
    unknown = set(overrides) - set(base.to_dict())
    if unknown:
        raise ValueError(f"model overrides: unknown fields {sorted(unknown)}")
    return replace(base, **overrides)
