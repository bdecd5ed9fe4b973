"""Rotary position embeddings, in the two pairings found in checkpoints.

- "half" (GPT-NeoX, Hugging Face Llama): dimension i rotates with i + rot_dim/2.
- "interleaved" (GPT-J, llama.cpp's default RoPE): dimension 2i rotates with 2i + 1.
A llama.cpp GGUF stores q/k weights permuted so that "interleaved" applies; undoing that
permutation (`unpermute_qk`) makes "half" apply instead. Both give the same model.
Only the first `rot_dim` dimensions of each head rotate (Pythia: a quarter of them).
"""
from __future__ import annotations

import torch
from torch import nn


class Rotary(nn.Module):
    def __init__(self, head_dim: int, rot_dim: int | None = None, base: float = 10000.0,
                 style: str = "half") -> None:
        super().__init__()
        rot_dim = head_dim if rot_dim is None else rot_dim
        if rot_dim % 2 or not 0 < rot_dim <= head_dim:
            raise ValueError(f"rot_dim: expected an even number in (0, {head_dim}], got {rot_dim}")
        if style not in ("half", "interleaved"):
            raise ValueError(f"style: expected 'half' or 'interleaved', got {style!r}")
        self.rot_dim, self.style, self.base = rot_dim, style, float(base)
        # cos/sin tables are built lazily in float32 on the input's device (not buffers: they must not
        # follow model.to(bfloat16), nor be created on the meta device)
        self._cache: tuple[int, torch.device, torch.Tensor, torch.Tensor] | None = None

    def _cos_sin(self, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cache is None or self._cache[0] < n or self._cache[1] != device:
            inv_freq = 1.0 / (self.base ** (torch.arange(0, self.rot_dim, 2, dtype=torch.float64,
                                                         device=device) / self.rot_dim))  # (rot/2,)
            t = torch.arange(n, device=device, dtype=torch.float64)
            freqs = torch.outer(t, inv_freq).float()                                   # (N, rot/2)
            self._cache = (n, device, freqs.cos(), freqs.sin())
        return self._cache[2][:n], self._cache[3][:n]

    def forward(self, x: torch.Tensor, offset: int = 0, positions: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, H, N, D) -> same, positions offset..offset+N-1, or ``positions`` int64 (N,) (the
        global positions of a context-parallel shard's tokens, not necessarily contiguous)."""
        n = x.shape[-2]
        if positions is None:
            cos, sin = self._cos_sin(offset + n, x.device)
            cos, sin = cos[offset:], sin[offset:]                                     # (N, rot/2)
        else:
            if positions.shape != (n,):
                raise ValueError(f"positions: expected shape ({n},) (one per token), got {tuple(positions.shape)}")
            cos, sin = self._cos_sin(int(positions.max()) + 1, x.device)
            cos, sin = cos[positions], sin[positions]                                 # (N, rot/2)
        xr, xp = x[..., : self.rot_dim].float(), x[..., self.rot_dim:]
        if self.style == "half":
            x1, x2 = xr.chunk(2, dim=-1)                                              # (B, H, N, rot/2)
            out = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
        else:
            x1, x2 = xr[..., 0::2], xr[..., 1::2]                                     # (B, H, N, rot/2)
            out = torch.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).flatten(-2)
        return torch.cat([out.to(x.dtype), xp], dim=-1)


def unpermute_qk(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo llama.cpp's q/k permutation: (n_heads * D, d_in) interleaved-pair rows -> half-split rows."""
    out, d_in = w.shape
    d = out // n_heads
    return w.reshape(n_heads, d // 2, 2, d_in).transpose(1, 2).reshape(out, d_in)
