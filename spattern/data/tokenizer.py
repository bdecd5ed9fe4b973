"""Tokenizers: a pure byte tokenizer and a byte-level BPE trained with `tokenizers`.

Both share one small interface: `encode(text) -> list[int]`, `encode_batch(texts)`,
`decode(ids) -> str`, `vocab_size`, `eos_id`, `name`, `save(folder)`; `load_tokenizer(folder)`
reads either back. Byte-level BPE and bytes round-trip any UTF-8 text exactly.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Iterable, Iterator

EOS_TOKEN = "<|endoftext|>"


class ByteTokenizer:
    """UTF-8 bytes 0..255 are ids 0..255; id 256 is end-of-document."""

    name = "byte"
    vocab_size = 257
    eos_id = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")

    def token_bytes(self, ids: Iterable[int]) -> list[bytes]:
        """The bytes each id stands for (b"" for end-of-document)."""
        return [bytes([i]) if 0 <= i < 256 else b"" for i in ids]

    def save(self, folder: str | Path) -> None:
        Path(folder, "tokenizer_meta.json").write_text(json.dumps({"kind": "byte"}))


class BPETokenizer:
    """Byte-level BPE (GPT-2 style pre-tokenization, no prefix space); EOS_TOKEN is id 0."""

    name = "bpe"

    def __init__(self, tok, eos_token: str = EOS_TOKEN) -> None:  # tok: tokenizers.Tokenizer
        self.tok = tok
        self.eos_id = tok.token_to_id(eos_token)
        if self.eos_id is None:
            raise ValueError(f"BPE tokenizer: expected the special token {eos_token!r} in the vocabulary")

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size()

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 8192, min_frequency: int = 2) -> "BPETokenizer":
        """Deterministic for a given text sequence (the trainer breaks count ties by pair order)."""
        if vocab_size < 257 + 1:
            raise ValueError(f"vocab_size: expected at least 258 (256 bytes + EOS + merges), got {vocab_size}")
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: PLC0415

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                      special_tokens=[EOS_TOKEN], show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(_as_iter(texts), trainer=trainer)
        return cls(tok)

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def token_bytes(self, ids: Iterable[int]) -> list[bytes]:
        """The bytes each id stands for (b"" for special tokens): byte-level BPE tokens are
        strings over GPT-2's byte alphabet, mapped back one character per byte."""
        table = _byte_decoder()
        special = {t.content for t in self.tok.get_added_tokens_decoder().values() if t.special}
        out = []
        for i in ids:
            t = self.tok.id_to_token(int(i))
            out.append(b"" if t is None or t in special else bytes(table[c] for c in t if c in table))
        return out

    def save(self, folder: str | Path) -> None:
        self.tok.save(str(Path(folder, "tokenizer.json")))
        Path(folder, "tokenizer_meta.json").write_text(json.dumps({"kind": "bpe"}))

    @classmethod
    def load(cls, path: str | Path) -> "BPETokenizer":
        from tokenizers import Tokenizer  # noqa: PLC0415

        return cls(Tokenizer.from_file(str(path)))


@functools.lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet: printable bytes stand for themselves, the others for 256 + n."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1), *range(ord("\xae"), 256)]
    out, extra = {chr(b): b for b in keep}, 0
    for b in range(256):
        if b not in keep:
            out[chr(256 + extra)] = b
            extra += 1
    return out


def _as_iter(texts: Iterable[str]) -> Iterator[str]:
    yield from texts


def load_tokenizer(folder: str | Path) -> ByteTokenizer | BPETokenizer:
    folder = Path(folder)
    meta = folder / "tokenizer_meta.json"
    if not meta.is_file():
        raise FileNotFoundError(f"tokenizer folder: expected {meta}, not found")
    kind = json.loads(meta.read_text())["kind"]
    if kind == "byte":
        return ByteTokenizer()
    if kind == "bpe":
        return BPETokenizer.load(folder / "tokenizer.json")
    raise ValueError(f"tokenizer kind: expected 'byte' or 'bpe', got {kind!r}")
