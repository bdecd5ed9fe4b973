"""Synthetic tasks: contract tests over every registered task, then passkey and MQAR on hand-made cases."""

import json
import string
import textwrap

import numpy as np
import pytest
import torch

import spattern
from spattern.data.tokenizer import ByteTokenizer
from spattern.evaluation.tasks import (
    TASKS,
    MQARConfig,
    Passkey,
    TaskExample,
    evaluate_mqar,
    evaluate_passkey,
    get_task,
    mqar_accuracy,
    mqar_batch,
    mqar_batches,
    score_examples,
)
from spattern.evaluation.tasks.mqar import distance_bucket
from spattern.evaluation.tasks.registry import IGNORE
from spattern.utils.errors import UserError

DOCS = [json.__doc__, string.__doc__, textwrap.__doc__]


def lookup_model(examples, vocab, shift=0):
    """A 'model' that knows every example: logit 1 on (target + shift) % vocab at answer positions."""
    table = {tuple(e.input_ids.tolist()): e.targets for e in examples}

    def fn(ids):  # (B, T) -> (B, T, V)
        out = torch.zeros(*ids.shape, vocab)
        for b, row in enumerate(ids):
            tgt = table[tuple(row.tolist())]
            pos = torch.nonzero(tgt != IGNORE).flatten()
            out[b, pos, (tgt[pos] + shift) % vocab] = 1.0
        return out

    return fn


# --- contract: every registered task ---------------------------------------------------------
@pytest.mark.parametrize("name", sorted(TASKS))
def test_task_contract(name):
    task = TASKS[name].demo()
    a, b, c = task.examples(0), task.examples(0), task.examples(1)
    assert a and len({e.id for e in a}) == len(a)
    for x, y in zip(a, b):  # deterministic per seed
        assert x.id == y.id and torch.equal(x.input_ids, y.input_ids) and torch.equal(x.targets, y.targets)
        assert x.groups == y.groups and x.meta == y.meta
    assert any(not torch.equal(x.input_ids, y.input_ids) for x, y in zip(a, c))  # seeds differ
    vocab = 0
    for e in a:
        assert isinstance(e, TaskExample) and e.input_ids.dtype == torch.long and e.input_ids.dim() == 1
        assert e.targets.shape == e.input_ids.shape and e.targets.dtype == torch.long
        answer = {p for g in e.groups for p in g}
        assert answer == set(torch.nonzero(e.targets != IGNORE).flatten().tolist())
        assert not e.group_meta or len(e.group_meta) == len(e.groups)
        vocab = max(vocab, int(e.input_ids.max()) + 1, int(e.targets.max()) + 1)
    perfect = task.score(lookup_model(a, vocab), a, batch_size=4)
    wrong = task.score(lookup_model(a, vocab, shift=1), a)
    assert len(perfect) == sum(len(e.groups) for e in a)
    assert all(r["correct"] for r in perfect) and not any(r["correct"] for r in wrong)
    size = {(e.id, g): len(pos) for e in a for g, pos in enumerate(e.groups)}  # uniform: size * log(1/V)
    assert all(r["logprob"] > size[r["id"], r["group"]] * np.log(1 / vocab) for r in perfect)
    assert all(r["logprob"] < size[r["id"], r["group"]] * np.log(1 / vocab) for r in wrong)
    assert get_task(name, **({"tokenizer": ByteTokenizer(), "docs": DOCS} if name == "passkey" else {})).name == name


def test_registry_errors_and_scorer_on_hand_made_example():
    with pytest.raises(UserError, match="available: .*mqar.*passkey"):
        get_task("needle")
    ex = TaskExample("x", torch.tensor([5, 1, 2, 3]), torch.tensor([IGNORE, 2, 3, IGNORE]), ((1, 2),), {"k": 1})
    logits = torch.full((1, 4, 6), -5.0)
    logits[0, 1, 2] = 5.0  # right at position 1
    logits[0, 2, 4] = 5.0  # wrong at position 2 (predicts 4, target 3)
    (r,) = score_examples(lambda ids: logits, [ex])
    lp = torch.log_softmax(logits[0], -1)
    assert r == {"id": "x", "group": 0, "k": 1, "correct": False, "logprob": pytest.approx(float(lp[1, 2] + lp[2, 3]))}
    logits[0, 2, 3] = 6.0
    assert score_examples(lambda ids: logits, [ex])[0]["correct"] is True
    with pytest.raises(UserError, match="logits_fn: expected logits of shape"):
        score_examples(lambda ids: logits[:, :3], [ex])


# --- passkey ---------------------------------------------------------------------------------
def test_passkey_examples_layout():
    tok = ByteTokenizer()
    task = Passkey(tok, DOCS, context_lengths=(300, 600), depths=(0.0, 0.5, 1.0))
    exs = task.examples(3)
    assert [e.input_ids.numel() for e in exs] == [300] * 3 + [600] * 3
    keys = {e.meta["key"] for e in exs}
    assert len(keys) == 1  # one key per seed, every length and depth
    key = keys.pop()
    for e in exs:
        text = tok.decode(e.input_ids.tolist())
        assert text.count(f"The pass key is {key}. Remember it.") == 1
        assert text.endswith(f"What is the pass key? The pass key is {key}")
        (g,) = e.groups
        assert tok.decode(e.targets[list(g)].tolist()) == f" {key}"
        needle_at = text.index(f"pass key is {key}") + len("pass key is")  # the answer's " NNNNN" starts here
        assert e.meta["distance_tokens"] == len(text) - len(f" {key}") - needle_at
    d = [e.meta["distance_tokens"] for e in exs[3:]]
    assert d[0] > d[1] > d[2]  # deeper needle -> closer to the question
    assert exs[0].meta["depth_actual"] == 0.0 and exs[2].meta["depth_actual"] == 1.0
    with pytest.raises(UserError, match="context_len: expected more than"):
        Passkey(tok, DOCS, context_lengths=(50,)).examples(0)
    with pytest.raises(UserError, match="haystack_docs"):
        Passkey(tok, ["  "])


class PhaseReader:
    """A hand-made one-head attention 'model' over bytes whose attention is spattern's.

    Position t gets a phase k when it is k tokens after the end of the marker "pass key is".
    Queries of phase k match keys of phase k + 1 (score 50), values are one-hot tokens, so the
    answer position of phase k copies the needle's key digit k -- if the layout lets it see it."""

    def __init__(self, pattern):
        self.pattern, self.marker, self.A = pattern, list(b"pass key is"), 6

    def __call__(self, ids):  # (B, T) -> (B, T, 256)
        B, T = ids.shape
        q, k = torch.zeros(B, 1, T, 256, dtype=torch.float64), torch.zeros(B, 1, T, 256, dtype=torch.float64)
        v = torch.nn.functional.one_hot(ids, 256).to(torch.float64)[:, None]  # (B, 1, T, 256)
        m = len(self.marker)
        for b in range(B):
            row = ids[b].tolist()
            for e in (i + m - 1 for i in range(T - m + 1) if row[i:i + m] == self.marker):
                for ph in range(self.A + 1):
                    if e + ph < T:
                        if ph < self.A:
                            q[b, 0, e + ph, ph] = 1.0
                        if ph >= 1:
                            k[b, 0, e + ph, ph - 1] = 50.0
        layout = spattern.compile(self.pattern, T, block=16)
        out = spattern.attention(q, k, v, layout, scale=1.0, backend="reference")  # (B, 1, T, 256)
        return out[:, 0]


def test_passkey_perfect_and_never_models():
    tok = ByteTokenizer()
    kw = dict(context_lengths=(256, 512), depths=(0.0, 0.5, 1.0), seeds=(0, 1))
    task = Passkey(tok, DOCS, kw["context_lengths"], kw["depths"])
    exs = [e for s in kw["seeds"] for e in task.examples(s)]
    perfect = evaluate_passkey(lookup_model(exs, 257), tok, DOCS, **kw)
    never = evaluate_passkey(lookup_model(exs, 257, shift=1), tok, DOCS, **kw)
    assert len(perfect) == 12 and all(r["correct"] for r in perfect) and not any(r["correct"] for r in never)
    assert set(perfect[0]) >= {"id", "context_len", "depth", "distance_tokens", "correct", "answer_logprob"}


def test_passkey_pattern_that_removes_the_needle_fails():
    tok = ByteTokenizer()
    kw = dict(context_lengths=(384,), depths=(0.0, 0.25, 0.5, 0.75, 1.0), seeds=(0, 1))
    dense = evaluate_passkey(PhaseReader("causal"), tok, DOCS, **kw)
    assert all(r["correct"] for r in dense)
    w = 96
    local = evaluate_passkey(PhaseReader(f"local({w}) & causal"), tok, DOCS, **kw)
    # answer digit k is predicted at distance_tokens - 1 after the needle's digit k
    assert [r["correct"] for r in local] == [r["distance_tokens"] - 1 < w for r in local]
    assert any(r["correct"] for r in local) and not all(r["correct"] for r in local)
    assert max(r["answer_logprob"] for r in local if not r["correct"]) < min(r["answer_logprob"] for r in dense)


# --- MQAR ------------------------------------------------------------------------------------
CFG = MQARConfig(vocab_size=128, seq_len=96, n_pairs=8, n_queries=6, batch_size=16, power_a=0.1)


def oracle(ids):
    """Reads the context: at a key token in the query region, predict the value that followed it."""
    B, T = ids.shape
    out = torch.zeros(B, T, CFG.vocab_size)
    n = CFG.n_pairs
    for b in range(B):
        kv = {int(ids[b, 2 * i]): int(ids[b, 2 * i + 1]) for i in range(n)}
        for t in range(2 * n, T):
            if int(ids[b, t]) in kv:
                out[b, t, kv[int(ids[b, t])]] = 1.0
    return out


def test_mqar_batch_bookkeeping_from_tokens():
    b = mqar_batch(CFG, seed=4, index=2)
    assert b.input_ids.shape == b.targets.shape == (16, 96) and b.query_pos.shape == (16, 6)
    V, n = CFG.vocab_size, CFG.n_pairs
    for r in range(16):
        ids = b.input_ids[r].tolist()
        keys, vals = ids[0:2 * n:2], ids[1:2 * n:2]
        assert len(set(keys)) == n and all(1 <= k < V // 2 for k in keys) and all(V // 2 <= v < V for v in vals)
        qs = [t for t in range(2 * n, 96) if ids[t] < V // 2]  # keys appear in the query region only as queries
        assert qs == b.query_pos[r].tolist() and all((t - 2 * n) % 2 == 0 for t in qs)
        assert [t for t in range(96) if b.targets[r, t] != IGNORE] == qs
        for j, t in enumerate(qs):
            i = keys.index(ids[t])
            assert b.key_pos[r, j] == 2 * i and b.distance[r, j] == t - 2 * i
            assert b.targets[r, t] == vals[i]


def test_mqar_determinism_stream_and_power_law():
    a, b = mqar_batch(CFG, 1, 5), mqar_batch(CFG, 1, 5)
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.input_ids, mqar_batch(CFG, 2, 5).input_ids)
    stream = mqar_batches(CFG, seed=1, start=4)
    next(stream)
    x, y = next(stream)
    assert torch.equal(x, a.input_ids) and torch.equal(y, a.targets) and x.dtype == torch.long
    big = dict(vocab_size=128, seq_len=256, n_pairs=8, batch_size=256)
    near = mqar_batch(MQARConfig(**big, power_a=0.01), 0).distance.float().mean()
    uni = mqar_batch(MQARConfig(**big, power_a=None), 0).distance.float().mean()
    assert near < uni  # a small power_a puts queries close to the context
    with pytest.raises(ValueError, match="seq_len: expected at least"):
        MQARConfig(seq_len=32, n_pairs=16)


def test_mqar_scoring():
    b = mqar_batch(CFG, 0)
    recs = evaluate_mqar(oracle, b)
    assert len(recs) == 16 * 6 and all(r["correct"] for r in recs)
    assert [r["distance"] for r in recs] == b.distance.flatten().tolist()
    # a model that only sees the last 24 tokens fails exactly the queries whose key is further away
    def short(ids):
        out = oracle(ids)
        for t in range(ids.shape[1]):
            out[:, t] *= 0
            for bb in range(ids.shape[0]):
                ctx = {int(ids[bb, j]): int(ids[bb, j + 1]) for j in range(max(0, t - 24), t)
                       if j < 2 * CFG.n_pairs and j % 2 == 0}
                if int(ids[bb, t]) in ctx:
                    out[bb, t, ctx[int(ids[bb, t])]] = 1.0
        return out

    part = evaluate_mqar(short, b)
    assert [r["correct"] for r in part] == [r["distance"] <= 24 for r in part]
    rows = mqar_accuracy(part)
    assert sum(r["n"] for r in rows) == len(part)
    for row in rows:
        sel = [r["correct"] for r in part if distance_bucket(r["distance"]) == row["distance_bucket"]]
        assert row["accuracy"] == pytest.approx(sum(sel) / len(sel))
    assert distance_bucket(1) == "[1, 2)" and distance_bucket(37) == "[32, 64)"
    # the batched fast path equals the shared per-example scorer
    task = get_task("mqar", cfg=CFG)
    slow = task.score(short, task.examples(0), batch_size=16)
    assert [r["correct"] for r in slow] == [r["correct"] for r in part]
    assert [r["distance"] for r in slow] == [r["distance"] for r in part]
