"""Corpora, document-level splits, tokenizers, packing, cached token arrays."""
from .cache import cache_dir
from .corpora import Document, iter_documents
from .packing import PackedSequences, Window, eval_windows, sample_indices, window_tokens
from .prepare import PreparedData, PrepareSettings, prepare
from .sources import SourceMissing
from .splits import split_of
from .tokenizer import BPETokenizer, ByteTokenizer, load_tokenizer

__all__ = ["cache_dir", "Document", "iter_documents", "PackedSequences", "Window", "eval_windows",
           "sample_indices", "window_tokens", "PreparedData", "PrepareSettings", "prepare",
           "SourceMissing", "split_of", "BPETokenizer", "ByteTokenizer", "load_tokenizer"]
