"""An ``evaluate`` run: a model (pretrained or trained) with a pattern swapped in, scored per
document (perplexity, information loss) and per task example, resumable example by example."""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from spattern.evaluation.trials import unique_trials
from spattern.experiments.config import ExperimentConfig
from spattern.experiments.inputs import _load, documents
from spattern.experiments.results import DIRECTION
from spattern.experiments.runs import RunSpec
from spattern.models.attention import cost_contexts, indexer_scored, self_scored


def _dense(pattern) -> bool:
    return isinstance(pattern, str | None) and pattern in ("dense", "", None)


def _static(pattern) -> bool:
    """A pattern string, or one string per layer (its cost is the same on every document)."""
    return isinstance(pattern, str) or (isinstance(pattern, list | tuple) and all(isinstance(p, str) for p in pattern))


def sequence_pattern(pattern, tokenizer, ids):
    """What the model attends with on one sequence: the pattern string itself when it is static,
    else the parsed pattern bound to the sequence's structure (``spattern.data.structure``); a
    per-layer pattern (a fitted one) gives one such value per layer."""
    if pattern is None:
        return None
    if isinstance(pattern, list | tuple):
        return [sequence_pattern(p, tokenizer, ids) for p in pattern]
    from spattern.patterns import parse

    p = parse(pattern)
    if p.is_static or self_scored(p):  # oracle: each attention call scores its own q and k
        return pattern
    from spattern.data.structure import structure_context

    return p.bind(structure_context(tokenizer, [int(i) for i in ids]))


def _layout_cost(pattern, n: int, block) -> dict:
    """Block density and density of a pattern at n tokens; of a per-layer pattern, their mean over
    the layers (every layer computes the same n x n grid)."""
    from spattern.models.attention import compiled_layout

    stats = [compiled_layout(p, n, n, tuple(block), context=cost_contexts(p, n)).stats() for p in
             (pattern if isinstance(pattern, list | tuple) else [pattern])]
    return {k: float(np.mean([st[k] for st in stats])) for k in ("block_density", "density")}


def _check_resumed_documents(path, scored: set[str], doc_ids: list[str]) -> None:
    """A resumed run scores the documents it scored before: one it has that the corpus no longer
    selects (another corpus version, another split) would mix two document sets in one run."""
    stray = sorted(scored - set(doc_ids))
    if stray:
        from spattern.utils.errors import UserError

        raise UserError(f"{path}: resuming a run whose documents {stray[:3]}{' ...' if len(stray) > 3 else ''} "
                        f"are not among the {len(doc_ids)} the config selects now (expected the same corpus "
                        f"and split as when it started); move the run aside to start it again")


def evaluate_run(cfg: ExperimentConfig, spec: RunSpec, progress=None) -> dict:
    """Score every document and task example not yet in the run's per_example.jsonl; write
    metrics.json. Returns the summary."""
    setup = cfg.setup.model_copy(update={"context": spec.context})
    loaded = _load(setup.model, setup.device, setup.dtype, spec.seed, setup.obtain)
    model, tok = loaded.model, loaded.tokenizer
    rd = spec.dir
    recs = rd.examples()
    done = {r["id"] for r in recs}
    docs = documents(setup)
    _check_resumed_documents(rd.path, {r["id"] for r in recs if "tokens" in r}, [d for d, _, _ in docs])
    pattern = None if _dense(spec.pattern) else spec.pattern
    if isinstance(pattern, tuple) and len(pattern) != len(model.layers):
        from spattern.utils.errors import UserError

        where = "[match] layers" if "param" in spec.resolved.get("match", {}) else "the fitted record"
        raise UserError(f"{spec.label}: expected one pattern per layer of {setup.model} ({len(model.layers)}), "
                        f"got {len(pattern)} (from {where})")
    if "fit" in spec.resolved.get("match", {}):
        from spattern.experiments.inputs import check_held_out

        check_held_out(spec.label, spec.resolved["match"], [d for d, _, _ in docs])
    timings: dict[str, float] = {}
    if isinstance(pattern, str) and indexer_scored(pattern):
        timings.update(_set_indexers(model, tok, setup, spec, progress))
    n_tasks = len(setup.passkey.context_lengths) * len(setup.passkey.depths) * len(setup.passkey.seeds) \
        if "passkey" in setup.tasks else 0
    total = len(docs) + n_tasks
    task_id = progress.add_task(f"  {spec.label} (seed {spec.seed})", total=total) if progress else None

    def tick():
        if progress is not None:
            progress.advance(task_id)

    model.set_pattern(None)
    for doc_id, ids, _ in docs:
        if doc_id in done:
            tick()
            continue
        stream = np.asarray(ids, dtype=np.int64)
        offsets = np.array([0, len(ids)])
        rec: dict = {"id": doc_id, "tokens": len(ids) - 1}
        doc_pattern = sequence_pattern(pattern, tok, ids[:-1])
        if doc_pattern is not None and not _static(doc_pattern):  # its cost differs per document
            rec.update(_layout_cost(doc_pattern, len(ids) - 1, setup.block))
        if "info_loss" in setup.metrics:  # one dense and one sparse pass give both KL/recall and the NLL
            from spattern.evaluation.infoloss import information_loss

            t = time.perf_counter()
            il = information_loss(model, stream, offsets, setup.context, "causal" if pattern is None else doc_pattern,
                                  block=tuple(setup.block), device=setup.device)
            d = next(iter(il["docs"].values()))
            rec.update({"kl": d["kl"], "top1": d["top1"], "recall": d["recall"], "rel_error": d["rel_error"]})
            if "perplexity" in setup.metrics:
                rec["nll"] = d["nll_dense"] if pattern is None else d["nll"]
            timings["info_loss"] = timings.get("info_loss", 0.0) + time.perf_counter() - t
        elif "perplexity" in setup.metrics:
            from spattern.evaluation.perplexity import window_perplexity

            t = time.perf_counter()
            model.set_pattern(doc_pattern, setup.backend)
            r = window_perplexity(model, stream, offsets, setup.context, device=setup.device)
            model.set_pattern(None)
            nll_sum, n = next(iter(r["docs"].values()))
            rec["nll"] = nll_sum / n
            timings["perplexity"] = timings.get("perplexity", 0.0) + time.perf_counter() - t
        rd.add_example(rec)
        tick()
    if "passkey" in setup.tasks:
        from spattern.evaluation.tasks.passkey import Passkey
        from spattern.evaluation.tasks.registry import score_examples

        t = time.perf_counter()
        task = Passkey(tok, [text for _, _, text in docs], setup.passkey.context_lengths, setup.passkey.depths,
                       bos_id=None, boundaries=setup.passkey.boundaries)
        examples = [ex for s in setup.passkey.seeds for ex in task.examples(s)]
        model.set_pattern(pattern, setup.backend)

        def logits_fn(x):
            with torch.no_grad():
                return model(x.to(setup.device))[0]

        for ex in examples:
            eid = ex.id
            if eid in done:
                tick()
                continue
            if pattern is not None:
                model.set_pattern(sequence_pattern(pattern, tok, ex.input_ids.tolist()), setup.backend)
            r = score_examples(logits_fn, [ex])[0]
            rd.add_example({"id": eid, "passkey_correct": float(r["correct"]), "passkey_logprob": r["logprob"],
                            "distance": r.get("distance_tokens"), "depth": r.get("depth"),
                            "depth_actual": r.get("depth_actual"), "context_len": r.get("context_len")})
            tick()
        model.set_pattern(None)
        timings["passkey"] = time.perf_counter() - t
    model.set_indexers(None)  # the loaded model is shared by the experiment's runs
    if progress is not None:
        progress.remove_task(task_id)
    return summarize(cfg, spec, timings)


def _set_indexers(model, tok, setup, spec: RunSpec, progress=None) -> dict[str, float]:
    """Give the model the warmed-up indexers of an ``indexed(..., seed=s)`` run (trained now unless the
    cache has them, ``spattern.experiments.indexers``) and write their record to the run's folder.
    Returns the warm-up's time when it ran here (none when the indexers came from the cache)."""
    from spattern.experiments.indexers import RECORD, warmed_indexers
    from spattern.patterns import parse
    from spattern.utils.io import write_json

    seed = parse(spec.pattern).seed
    steps = setup.indexer.steps
    task = progress.add_task(f"  {spec.label}: indexer warm-up", total=steps) if progress else None

    def log(rec):
        if progress is not None:
            progress.advance(task)

    indexers, record, trained = warmed_indexers(model, tok, setup, seed, log)
    if progress is not None:
        progress.remove_task(task)
    model.set_indexers(indexers)
    write_json(spec.dir.path / RECORD, record)
    return {"indexer_warmup": record["seconds"]} if trained else {}


def summarize(cfg: ExperimentConfig, spec: RunSpec, timings: dict) -> dict:
    """metrics.json of a run from its per_example.jsonl (recomputed, so a resumed run's summary
    covers every example), one record per trial (``evaluation.trials``: a repeated input counts once)."""
    recs = unique_trials(spec.dir.examples())
    metrics: dict = {}
    for key in DIRECTION:
        vals = [r[key] for r in recs if r.get(key) is not None]
        if vals:
            metrics[key] = float(np.mean(vals))
    docs = [r for r in recs if "nll" in r]
    if docs:
        tokens = sum(r["tokens"] for r in docs)
        metrics["ppl"] = math.exp(sum(r["nll"] * r["tokens"] for r in docs) / tokens)
    per_doc = [r for r in recs if "block_density" in r]
    if _dense(spec.pattern):
        metrics["block_density"] = metrics["density"] = 1.0
    elif per_doc:  # a content-dependent pattern: its mean cost over the documents
        for key in ("block_density", "density"):
            metrics[key] = float(np.mean([r[key] for r in per_doc]))
    else:
        metrics.update(_layout_cost(spec.pattern, spec.context, cfg.setup.block))
    prev = spec.dir.metrics() or {}
    t = dict(prev.get("timings", {}))
    for k, v in timings.items():
        t[k] = t.get(k, 0.0) + v
    pattern = list(spec.pattern) if isinstance(spec.pattern, tuple) else spec.pattern
    summary = {"experiment": cfg.name, "run_id": spec.dir.path.name, "label": spec.label, "pattern": pattern,
               "seed": spec.seed, "context": spec.context, "params": spec.resolved.get("match", {}),
               "status": "finished", "n_examples": len(recs), "metrics": metrics, "timings": t}
    spec.dir.write_metrics(summary)
    return summary
