"""`prepare`: corpus -> hash splits -> tokenizer (trained on train only) -> token arrays on disk.

A prepared folder holds
    meta.json                  corpus, tokenizer, split fractions, counts, dtype
    tokenizer_meta.json (+ tokenizer.json for BPE)
    {split}.npy                the split's token stream (uint16 when the vocabulary fits, else uint32)
    {split}_offsets.npy        int64 (n_docs + 1,): document starts in the stream
    {split}_ids.json           document ids, in stream order
It lives under the cache dir (`spattern.data.cache.cache_dir("data")`) unless `out` is given, and is
reused when its meta.json exists (the folder name hashes every setting that changes its content).
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..utils.io import atomic_save, write_json
from .cache import cache_dir
from .corpora import Document, iter_documents
from .splits import SPLITS, check_fractions, split_of
from .tokenizer import BPETokenizer, ByteTokenizer, load_tokenizer

FORMAT_VERSION = 1


@dataclass
class PrepareSettings:
    corpus: str = "stdlib"
    tokenizer: str = "bpe"               # "bpe" or "byte"
    vocab_size: int = 8192               # BPE only
    fractions: tuple[float, float, float] = (0.9, 0.05, 0.05)
    salt: str = "spattern"
    max_docs: int | None = None          # first N documents of the corpus (tests, quick runs)
    bpe_train_chars: int = 50_000_000    # BPE trains on at most this many characters of train docs
    extra: dict = field(default_factory=dict)

    def key(self) -> str:
        blob = json.dumps({"v": FORMAT_VERSION, "corpus": self.corpus, "tok": self.tokenizer,
                           "vocab": self.vocab_size if self.tokenizer == "bpe" else 257,
                           "fr": list(self.fractions), "salt": self.salt, "max_docs": self.max_docs,
                           "bpe_chars": self.bpe_train_chars}, sort_keys=True)
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.corpus)[:40]
        vocab = f"{self.vocab_size}" if self.tokenizer == "bpe" else ""
        return f"{slug}-{self.tokenizer}{vocab}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


def prepare(settings: PrepareSettings | None = None, out: str | Path | None = None, obtain: bool = False,
            force: bool = False, log=print, **kwargs) -> Path:
    """Prepare (or find) the token arrays of a corpus; returns the prepared folder."""
    s = settings or PrepareSettings(**kwargs)
    if settings is not None and kwargs:
        raise TypeError("prepare: pass either settings or keyword settings, not both")
    if s.tokenizer not in ("bpe", "byte"):
        raise ValueError(f"tokenizer: expected 'bpe' or 'byte', got {s.tokenizer!r}")
    check_fractions(s.fractions)
    folder = Path(out) if out is not None else cache_dir("data") / s.key()
    if (folder / "meta.json").is_file() and not force:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    by_split: dict[str, list[Document]] = {k: [] for k in SPLITS}
    for doc in iter_documents(s.corpus, obtain=obtain, max_docs=s.max_docs):
        by_split[split_of(doc.id, s.fractions, s.salt)].append(doc)
    n_docs = sum(len(v) for v in by_split.values())
    if n_docs == 0:
        from .corpora import CorpusError

        raise CorpusError(f"corpus {s.corpus!r}: no documents found")
    for name, docs in by_split.items():
        if not docs:
            log(f"[data] warning: split {name!r} is empty ({n_docs} documents, fractions {s.fractions})")
    log(f"[data] {s.corpus}: {n_docs} documents "
        + ", ".join(f"{k} {len(v)}" for k, v in by_split.items()) + f" ({time.time() - t0:.1f}s)")

    if s.tokenizer == "byte":
        tok = ByteTokenizer()
    else:
        budget, texts = s.bpe_train_chars, []
        for d in by_split["train"]:
            if budget <= 0:
                break
            texts.append(d.text[:budget])
            budget -= len(texts[-1])
        tok = BPETokenizer.train(texts, vocab_size=s.vocab_size)
        log(f"[data] BPE trained: vocab {tok.vocab_size} on {s.bpe_train_chars - max(budget, 0)} chars "
            f"({time.time() - t0:.1f}s)")
    tok.save(folder)
    dtype = np.uint16 if tok.vocab_size <= 65535 else np.uint32

    counts = {}
    for split, docs in by_split.items():
        ids = tok.encode_batch([d.text for d in docs]) if docs else []
        lengths = np.array([len(x) + 1 for x in ids], dtype=np.int64)           # + EOS
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)    # (n_docs + 1,)
        stream = np.empty(int(offsets[-1]), dtype=dtype)                          # (T,)
        for i, x in enumerate(ids):
            stream[offsets[i]:offsets[i + 1] - 1] = x
            stream[offsets[i + 1] - 1] = tok.eos_id
        _save_npy(folder / f"{split}.npy", stream)
        _save_npy(folder / f"{split}_offsets.npy", offsets)
        write_json(folder / f"{split}_ids.json", [d.id for d in docs])
        counts[split] = {"docs": len(docs), "tokens": int(offsets[-1]),
                         "chars": int(sum(len(d.text) for d in docs))}
    meta = {"format": FORMAT_VERSION, "corpus": s.corpus, "tokenizer": s.tokenizer,
            "vocab_size": tok.vocab_size, "eos_id": tok.eos_id, "dtype": np.dtype(dtype).name,
            "fractions": list(s.fractions), "salt": s.salt, "max_docs": s.max_docs, "splits": counts,
            "seconds": round(time.time() - t0, 2)}
    write_json(folder / "meta.json", meta)   # meta.json last: its presence means "complete"
    log(f"[data] prepared {folder} " + ", ".join(f"{k} {v['tokens']} tokens" for k, v in counts.items())
        + f" ({meta['seconds']}s)")
    return folder


def _save_npy(path: Path, arr: np.ndarray) -> None:
    def save(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, arr)

    atomic_save(path, save)


class PreparedData:
    """Read side of a prepared folder; token arrays are memory-mapped."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        meta = self.folder / "meta.json"
        if not meta.is_file():
            raise FileNotFoundError(f"prepared data: expected {meta}; run `spattern data prepare <corpus>`")
        self.meta = json.loads(meta.read_text())
        self._tok = None

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    @property
    def eos_id(self) -> int:
        return int(self.meta["eos_id"])

    def tokenizer(self):
        if self._tok is None:
            self._tok = load_tokenizer(self.folder)
        return self._tok

    def stream(self, split: str) -> np.ndarray:
        if split not in SPLITS:
            raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
        return np.load(self.folder / f"{split}.npy", mmap_mode="r")

    def offsets(self, split: str) -> np.ndarray:
        return np.load(self.folder / f"{split}_offsets.npy")

    def doc_ids(self, split: str) -> list[str]:
        return json.loads((self.folder / f"{split}_ids.json").read_text())
