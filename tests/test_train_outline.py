"""Content-dependent patterns in models and training: one layout per sequence of a batch, equal to
running each sequence alone with its pattern bound to its own structure."""

import os
import time

import pytest
import torch

from spattern.data.structure import structure_context
from spattern.data.tokenizer import ByteTokenizer
from spattern.models.config import get_config
from spattern.models.decoder import build_model
from spattern.patterns import parse

PATTERN = "outline(window=8, header=4, recent=1) & causal"
PY_PATTERN = "outline(window=8, header=4, recent=1, structure='python') & causal"  # the statement tree
TEXTS = ["def f(x):\n    y = x + 1\n    return y\n\nclass C:\n    def g(self):\n        pass\n" * 2,
         "A title\n\nThe first paragraph is here.\nIt wraps.\n\nThe second one.\n" * 3]


def _model(pattern: str = PATTERN):
    tok = ByteTokenizer()
    torch.manual_seed(0)
    cfg = get_config("neox-tiny", vocab_size=tok.vocab_size, max_seq_len=256, pattern=pattern, block=(16, 16))
    return build_model(cfg).eval(), tok


@pytest.mark.parametrize("pattern", [PATTERN, PY_PATTERN])
def test_a_batch_attends_each_sequence_by_its_own_structure(pattern):
    model, tok = _model(pattern)
    n = 96
    x = torch.tensor([tok.encode(t)[:n] for t in TEXTS])                       # (2, n)
    assert model.needs_contexts
    model.set_contexts([structure_context(tok, row) for row in x.tolist()])
    batched = model(x)[0]
    for b, row in enumerate(x.tolist()):
        model.set_contexts(None)
        model.set_pattern(parse(pattern).bind(structure_context(tok, row)))     # the twin: one bound pattern
        alone = model(x[b : b + 1])[0]
        model.set_pattern(pattern)
        torch.testing.assert_close(batched[b], alone[0], rtol=1e-5, atol=1e-5)
    model.set_contexts([structure_context(tok, row) for row in x.flip(0).tolist()])  # other structures: other logits
    assert not torch.allclose(model(x)[0], batched)
    if "python" in pattern:  # the code's statement tree (the prose parses as none and keeps its text tree)
        assert "FunctionDef" in structure_context(tok, x[0].tolist())["python_tree"].kind


def test_a_forward_without_contexts_says_what_it_needs():
    model, tok = _model()
    x = torch.tensor([tok.encode(TEXTS[0])[:32]])
    with pytest.raises(ValueError, match="content-dependent.*set_contexts"):
        model(x)
    model.set_contexts([structure_context(tok, x[0].tolist())] * 2)
    with pytest.raises(ValueError, match="one per sequence"):
        model(x)


def test_training_with_outline_runs_through_the_loop(tmp_path):
    from spattern.train.config import load_train_config
    from spattern.train.loop import train

    cfg = load_train_config("experiments/train_tiny_cpu.toml", [
        f"model.pattern={PATTERN!r}".replace("'", '"'), "model.block=[16, 16]", "train.steps=6", "train.eval_every=3",
        "train.progress=false", f'train.out_dir="{tmp_path / "run"}"', f'train.ckpt_dir="{tmp_path / "ckpt"}"'])
    summary = train(cfg, log=lambda *a, **k: None)
    assert summary["status"] == "finished" and summary["val_loss"] < summary["first_loss"]


@pytest.mark.slow
def test_contexts_built_ahead_in_workers_train_the_same_run(tmp_path):
    """train.context_workers = 2 (contexts and layouts built ahead in worker processes, their results
    through the pool or spooled to files) against 0 (built on demand, in the trainer): the same losses
    at every step and the same validation."""
    import json

    from spattern.train.config import load_train_config
    from spattern.train.loop import train

    def run(workers: int, transport: str = "pipe") -> tuple[list, dict]:
        d = tmp_path / f"w{workers}{transport}"
        cfg = load_train_config("experiments/train_tiny_cpu.toml", [
            f"model.pattern={PATTERN!r}".replace("'", '"'), "model.block=[16, 16]", "train.steps=4",
            "train.eval_every=2", "train.log_every=1", "train.progress=false", f"train.context_workers={workers}",
            f'train.context_transport="{transport}"', f'train.out_dir="{d}"', f'train.ckpt_dir="{d / "ckpt"}"'])
        summary = train(cfg, log=lambda *a, **k: None)
        lines = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r.get("loss"), r.get("val_loss")) for r in lines], summary

    (ahead, s2), (spooled, sf), (inline, s0) = run(2), run(2, "file"), run(0)
    assert ahead == inline == spooled and s2["val_loss"] == s0["val_loss"] == sf["val_loss"]


@pytest.mark.slow
def test_every_micro_batch_is_queued_once_and_ahead(tmp_path, monkeypatch):
    """With workers the loop queues each training micro-batch's contexts once, up to workers + 1
    ahead of its use (``prefetch_depth``), so that only the first one is built on demand; the workers'
    first jobs are the training micro-batches after the first, the validation batches after them."""
    from spattern.train import contexts as C
    from spattern.train.config import load_train_config
    from spattern.train.loop import prefetch_depth, train

    queued, on_demand, used, trained = [], [], [], []
    real_ahead, real_get = C.ContextPrefetch.ahead, C.ContextPrefetch.get

    def ahead(self, rows):
        queued.append(C._key(rows))
        return real_ahead(self, rows)

    def get(self, rows, keep=False):
        k = C._key(rows)
        used.append(k)
        if not keep:
            trained.append(k)
        if k not in self.pending and k not in self.kept:
            on_demand.append(k)
        return real_get(self, rows, keep)

    monkeypatch.setattr(C.ContextPrefetch, "ahead", ahead)
    monkeypatch.setattr(C.ContextPrefetch, "get", get)
    cfg = load_train_config("experiments/train_tiny_cpu.toml", [
        f"model.pattern={PATTERN!r}".replace("'", '"'), "model.block=[16, 16]", "train.steps=6",
        "train.eval_every=3", "train.log_every=1", "train.progress=false", "train.context_workers=2",
        f'train.out_dir="{tmp_path}"', f'train.ckpt_dir="{tmp_path / "ckpt"}"'])
    summary = train(cfg, log=lambda *a, **k: None)
    assert prefetch_depth(2) == 3 and prefetch_depth(0) == 2
    assert len(queued) == len(set(queued))          # none queued twice (the validation batches once too)
    assert len(on_demand) == 1                      # the first training micro-batch only
    assert set(queued) <= set(used)                 # nothing queued goes unused (none past the run's end)
    depth = prefetch_depth(2)
    assert queued[:depth] == trained[1:depth + 1]  # the first jobs: the next training micro-batches, in order
    val = [k for k in queued if k not in set(trained)]
    assert val and queued[depth:depth + len(val)] == val  # then the validation batches, before any later one
    import json                                     # the context pipeline's cost is logged per interval
    recs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in recs if "tok_per_s" in r]
    assert len(steps) == 6 and all(r["ctx_wait_ms"] >= 0 and r["ctx_build_ms"] > 0 for r in steps)
    assert summary["context_wait_s"] >= 0


@pytest.mark.parametrize("transport, pattern", [("pipe", PATTERN), ("file", PATTERN), ("pipe", PY_PATTERN)])
def test_context_prefetch_builds_what_the_forward_would(transport, pattern):
    """ContextPrefetch (workers, queued ahead, kept; results through the pool or spooled to files)
    against building the contexts in the forward; for either tree outline reads."""
    import numpy as np

    from spattern.train.contexts import WORKER_NICE, ContextPrefetch

    model, tok = _model(pattern)
    rows = np.array([tok.encode(t)[:96] for t in TEXTS])                           # (2, 96)
    x = torch.from_numpy(rows)
    model.set_contexts([structure_context(tok, r) for r in rows.tolist()])
    ref = model(x)[0]
    pre = ContextPrefetch(model, tok, workers=1, transport=transport)
    spool = pre.spool
    assert (spool is not None) == (transport == "file")
    try:
        pre.ahead(rows)
        ctx = pre.get(rows, keep=True)
        assert len(ctx.layouts) == 1 and pre.get(rows) is ctx                   # kept: the same object
        model.set_contexts(ctx)
        assert torch.equal(model(x)[0], ref)
        assert pre.stats() == (0.0, 0.0, 0)                                       # kept batches are not counted
        pre.ahead(rows[:1])
        pre.get(rows[:1])                                                         # built in the worker
        waited, built, n = pre.stats()
        assert n == 1 and built > 0 and waited >= 0
        assert pre.pool.submit(os.nice, 0).result() == min(19, os.nice(0) + WORKER_NICE)  # below the trainer
        if spool is not None:
            assert os.listdir(spool) == []                                        # each file read and removed
            pre.ahead(rows[1:])
            while not pre.pending[next(iter(pre.pending))].done():
                time.sleep(0.01)
            assert len(os.listdir(spool)) == 1                                    # a batch never taken ...
        slow = ContextPrefetch(model, tok, workers=0)
        fresh = slow.get(rows[::-1].copy())                                       # never queued: built now
        waited, built, n = slow.stats()
        assert n == 1 and waited >= built > 0                                     # the caller waited for its build
        model.set_contexts(fresh)
        assert torch.allclose(model(x.flip(0))[0], ref.flip(0), atol=1e-6)
    finally:
        pre.close()
    assert spool is None or not os.path.exists(spool)                             # ... goes with the spool
    with pytest.raises(ValueError, match="transport: expected one of pipe, file, got 'shm'"):
        ContextPrefetch(model, tok, transport="shm")


def test_split_cpus_keeps_the_lowest_for_the_trainer_and_the_rest_for_the_workers():
    from spattern.train.contexts import SPARE_RESERVED, split_cpus

    assert SPARE_RESERVED == 2
    assert split_cpus(set(range(16))) == (frozenset({0, 1}), frozenset(range(2, 16)))
    assert split_cpus({3, 9, 5, 7}) == (frozenset({3, 5}), frozenset({7, 9}))      # the lowest, not the first two
    assert split_cpus({0, 1, 2}) is None and split_cpus({0, 1}) is None           # too few to split: "shared"
    assert split_cpus({0, 1, 2, 3}, reserved=1) == (frozenset({0}), frozenset({1, 2, 3}))


def test_split_cpus_keeps_the_trainers_cores_whole():
    """With SMT (Linux numbers a core's second thread N/2 higher) the trainer's cores' siblings go to no worker."""
    from spattern.train.contexts import split_cpus, thread_siblings

    smt = lambda c: frozenset({c % 8, c % 8 + 8})  # noqa: E731  16 CPUs on 8 cores
    assert split_cpus(set(range(16)), siblings=smt) == (frozenset({0, 1}), frozenset(set(range(2, 8)) | set(range(10, 16))))
    assert split_cpus({0, 1, 8, 9}, siblings=smt) is None                        # nothing left for workers
    assert split_cpus({0, 1, 2, 8, 9, 10}, reserved=1, siblings=smt) == (frozenset({0}), frozenset({1, 2, 9, 10}))
    assert split_cpus({3, 11, 4, 12, 5, 13}, siblings=smt) == (frozenset({3, 4}), frozenset({5, 13}))
    assert 0 in thread_siblings(0)  # this machine's own topology (or {0} without sysfs)


def test_spare_placement_pins_the_trainer_and_the_workers_apart_and_builds_the_same(monkeypatch):
    """cpus="spare": this thread on the trainer's CPUs and each worker on the others while the prefetch
    lives; the same contexts as "shared"; close() gives this thread its CPUs back. (This machine may have
    too few CPUs for the real split, so the split is one CPU each where there are two.)"""
    import numpy as np

    from spattern.train import contexts as C

    before = os.sched_getaffinity(0)
    if len(before) < 2:
        pytest.skip("needs two CPUs")
    low, high = min(before), max(before)
    monkeypatch.setattr(C, "split_cpus", lambda cpus: (frozenset({low}), frozenset({high})))
    model, tok = _model()
    rows = np.array([tok.encode(t)[:96] for t in TEXTS])                           # (2, 96)
    shared = C.ContextPrefetch(model, tok, workers=0).get(rows)
    pre = C.ContextPrefetch(model, tok, workers=1, cpus="spare")
    try:
        assert os.sched_getaffinity(0) == {low}                                   # the trainer's thread
        assert pre.pool.submit(os.sched_getaffinity, 0).result() == {high}        # the worker
        pre.ahead(rows)
        ctx = pre.get(rows)
        assert ctx.layouts.keys() == shared.layouts.keys()
        for k, lay in ctx.layouts.items():
            assert np.array_equal(lay.to_dense(), shared.layouts[k].to_dense())
    finally:
        pre.close()
    assert os.sched_getaffinity(0) == before                                      # given back
    none = C.ContextPrefetch(model, tok, workers=0, cpus="spare")                 # no workers: nothing pinned
    assert os.sched_getaffinity(0) == before and none.restore is None
    with pytest.raises(ValueError, match="cpus: expected one of shared, spare, got 'all'"):
        C.ContextPrefetch(model, tok, cpus="all")


def test_a_run_that_fails_closes_its_context_pool_and_gives_the_cpus_back(tmp_path, monkeypatch):
    """train.context_cpus = "spare" pins this thread while the run lives; a run that raises mid-way still
    closes its pool (workers shut down) and gives this thread its CPUs back."""
    from spattern.train import contexts as C
    from spattern.train.config import load_train_config
    from spattern.train.loop import train

    before = os.sched_getaffinity(0)
    if len(before) < 2:
        pytest.skip("needs two CPUs")
    low, high = min(before), max(before)
    monkeypatch.setattr(C, "split_cpus", lambda cpus: (frozenset({low}), frozenset({high})))
    made, pinned = [], []

    def failing_get(self, rows, keep=False):
        made.append(self)
        pinned.append(os.sched_getaffinity(0))
        raise RuntimeError("a failure mid-run")

    monkeypatch.setattr(C.ContextPrefetch, "get", failing_get)
    cfg = load_train_config("experiments/train_tiny_cpu.toml", [
        f"model.pattern={PATTERN!r}".replace("'", '"'), "model.block=[16, 16]", "train.steps=2",
        "train.eval_every=0", "train.progress=false", "train.context_workers=1", 'train.context_cpus="spare"',
        f'train.out_dir="{tmp_path}"', f'train.ckpt_dir="{tmp_path / "ckpt"}"'])
    with pytest.raises(RuntimeError, match="a failure mid-run"):
        train(cfg, log=lambda *a, **k: None)
    assert pinned[0] == {low}                                     # pinned while the run lived
    assert os.sched_getaffinity(0) == before                      # given back after the failure
    assert made[0].pool is None and made[0].restore is None       # the pool closed


def test_runs_of_one_name_in_two_directories_keep_their_own_checkpoints(tmp_path, monkeypatch):
    """Found while setting up the study: a run in a new directory resumed another run's checkpoint
    (same name, default checkpoint folder) and crashed on its missing loss history."""
    from spattern.train.config import load_train_config
    from spattern.train.loop import run_paths, train
    from spattern.utils.errors import UserError

    monkeypatch.setenv("SPATTERN_CACHE", str(tmp_path / "cache"))
    base = ["train.steps=3", "train.eval_every=0", "train.progress=false", "data.seq_len=64"]
    a = load_train_config("experiments/train_tiny_cpu.toml", [*base, f'train.out_dir="{tmp_path / "a"}"'])
    b = load_train_config("experiments/train_tiny_cpu.toml", [*base, f'train.out_dir="{tmp_path / "b"}"',
                                                              'model.pattern="local(8) & causal"', "train.steps=5"])
    assert run_paths(a)[1] != run_paths(b)[1]
    train(a, log=lambda *x, **k: None)
    summary = train(b, log=lambda *x, **k: None)
    assert summary["step"] == 5                                     # trained from step 0, not resumed from a
    assert "context_wait_s" not in summary                          # no context pipeline for a static pattern
    assert "ctx_wait_ms" not in (tmp_path / "b" / "metrics.jsonl").read_text()
    shared = load_train_config("experiments/train_tiny_cpu.toml",
                               [*base, f'train.out_dir="{tmp_path / "c"}"', f'train.ckpt_dir="{run_paths(a)[1].parent}"',
                                'model.pattern="local(8) & causal"', "train.steps=5"])
    with pytest.raises(UserError, match="another model or data config"):
        train(shared, log=lambda *x, **k: None)


def test_context_workers_start_without_torch():
    """What a context worker imports to run its job (``build_timed``, unpickled by reference in a
    spawned process) leaves torch out: a worker then starts in about 0.2 s instead of 2 s or more."""
    import subprocess
    import sys

    from spattern.train import contexts as C

    assert C.build_job.__module__ == C.init_worker.__module__ == "spattern.data.batch_contexts"
    code = ("import sys, spattern.data.batch_contexts as m; m.build_job, m.init_worker; "
            "assert 'torch' not in sys.modules, sorted(k for k in sys.modules if k.startswith('torch'))[:3]")
    subprocess.run([sys.executable, "-c", code], check=True)
