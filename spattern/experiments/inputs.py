"""What an evaluate experiment reads: the model and tokenizer a setup names, the documents it
scores, and the structures of those documents (the contexts a content-dependent pattern family
is matched on, before any run starts)."""

from __future__ import annotations

import fnmatch
import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from spattern.experiments.config import ExperimentConfig, Setup
from spattern.models.attention import cost_contexts, self_scored
from spattern.utils.errors import UserError


@dataclass
class Loaded:
    model: torch.nn.Module
    tokenizer: object
    name: str


@lru_cache(maxsize=2)
def _load(model_spec: str, device: str, dtype: str, seed: int, obtain: bool) -> Loaded:
    """The model and tokenizer a setup names (cached: the runs of one experiment share them)."""
    dt = getattr(torch, dtype)
    if model_spec == "smollm2":
        from spattern.models.pretrained import load_smollm2

        model, tok = load_smollm2(dtype=dt, obtain=obtain)
    elif model_spec.startswith("checkpoint:"):
        from spattern.train.loop import load_trained

        model, tok = load_trained(model_spec.split(":", 1)[1], device)
    elif model_spec.startswith("random:"):
        from spattern.data.tokenizer import ByteTokenizer
        from spattern.models.config import get_config
        from spattern.models.decoder import build_model

        tok = ByteTokenizer()
        torch.manual_seed(seed)
        model = build_model(get_config(model_spec.split(":", 1)[1], vocab_size=tok.vocab_size, max_seq_len=1 << 16))
    else:
        raise UserError(f"setup.model: expected 'smollm2', 'checkpoint:<path>' or 'random:<preset>', got {model_spec!r}")
    return Loaded(model.to(device=device, dtype=dt).eval(), tok, model_spec)


def _tokenizer(setup: Setup):
    """The setup's tokenizer, from a CPU load (choosing documents needs no GPU, so a finished
    experiment expands on any machine)."""
    return _load(setup.model, "cpu", "float32", 0, setup.obtain).tokenizer


def documents(setup: Setup) -> list[tuple[str, list[int], str]]:
    """[(doc id, the first context+1 tokens, text)] of the first ``docs`` long documents of the
    split (documents shorter than a full window, or whose id matches a glob of ``setup.exclude``,
    are skipped, so every run scores the same tokens)."""
    from spattern.data import iter_documents, split_of

    tok = _tokenizer(setup)
    need = setup.min_doc_tokens or setup.context + 1
    out = []
    for d in iter_documents(setup.corpus, obtain=setup.obtain):
        if split_of(d.id) != setup.split or any(fnmatch.fnmatchcase(d.id, g) for g in setup.exclude):
            continue
        ids = tok.encode(d.text) + [tok.eos_id]
        if len(ids) >= max(need, setup.context + 1):
            out.append((d.id, ids[: setup.context + 1], d.text))
        if len(out) == setup.docs:
            break
    if not out:
        raise UserError(f"setup.corpus {setup.corpus!r}: no {setup.split} document has {need} tokens")
    return out


def matched(cfg: ExperimentConfig, family: str, context: int):
    """The family's member at the experiment's target cost (``spattern.evaluation.matching.match``);
    a content-dependent family (outline) is matched on its mean cost over the structures of the
    sequences the runs score (``scored_sequences``).

    Results are kept in ``<out_dir>/matches.json`` under a key of everything they depend on (the
    family, target, measure, length, block and, for a content-dependent family, a digest of the
    scored tokens), so a finished experiment expands again in seconds on any machine, and a
    change of documents is a new match, never a stale one."""
    from spattern.evaluation.matching import Match, family_fn, is_per_layer, match, smallest_param
    from spattern.utils.io import write_json

    layers = cfg.match.layers if is_per_layer(family) else None
    fn = family_fn(family, layers)[0]
    member = fn(smallest_param(fn))
    probes = member if isinstance(member, tuple) else (member,)
    probe = probes[0]
    scored = self_scored(probe)  # oracle: content-dependent, but its cost does not depend on the content
    dependent = not all(p.is_static for p in probes) and not scored
    if layers is not None and (scored or dependent):
        raise UserError(f"family {family!r}: a per-layer family must be static (no oracle or outline), "
                        f"got {probe}")
    key = {"family": family, "target": cfg.match.target, "measure": cfg.match.measure, "context": context,
           "block": list(cfg.setup.block)}
    if layers is not None:  # only here, so that the keys of the matches made before per-layer families stay
        key["layers"] = layers
    if dependent:
        tok, seqs = _scored(cfg.model_dump_json(), context)
        key["documents"] = hashlib.sha256(json.dumps(seqs).encode()).hexdigest()[:16]
    k = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = cfg.out_dir / "matches.json"
    cache = json.loads(path.read_text()) if path.is_file() else {}
    if k in cache:
        got = cache[k]["match"]
        pattern = tuple(got["pattern"]) if isinstance(got["pattern"], list) else got["pattern"]
        return Match(**{**got, "block": tuple(got["block"]), "pattern": pattern})
    contexts = cost_contexts(probe, context) if scored else None
    if dependent:  # the structures are built only when the match is not cached
        from spattern.data.structure import structure_context

        contexts = [structure_context(tok, ids) for _, ids in seqs]
    m = match(family, cfg.match.target, context, tuple(cfg.setup.block), cfg.match.measure, contexts=contexts,
              layers=layers)
    cache[k] = {"key": key, "match": m.as_dict()}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, cache)
    return m


@lru_cache(maxsize=8)
def _scored(cfg_json: str, context: int):
    """``scored_sequences`` once per experiment and length (the families of one sweep share it)."""
    return scored_sequences(ExperimentConfig.model_validate_json(cfg_json), context)


def scored_sequences(cfg: ExperimentConfig, context: int) -> tuple[object, list[tuple[str, list[int]]]]:
    """(tokenizer, [(id, the first ``context`` token ids)]) of what the runs score: the setup's
    documents for ``kind = "evaluate"``; for ``kind = "train"``, the validation sequences the
    training loop evaluates (its config's data at ``context`` tokens, the first eval_batches x
    batch_size of them)."""
    if cfg.kind == "evaluate":
        setup = cfg.setup.model_copy(update={"context": context})
        return _tokenizer(setup), [(d, ids[:context]) for d, ids, _ in documents(setup)]
    import numpy as np

    from spattern.data import PackedSequences
    from spattern.train.config import load_train_config
    from spattern.train.loop import load_data

    base = Path(cfg.source).parent if cfg.source else Path(".")
    tcfg = load_train_config(base / cfg.train.config, [*cfg.train.overrides, f"data.seq_len={context}"])
    data = load_data(tcfg, log=lambda *a, **k: None)
    val = PackedSequences(data.stream("validation"), context)
    n = min(len(val), tcfg.train.eval_batches * tcfg.train.batch_size)
    rows = val.batch(np.arange(n))[:, :-1]
    return data.tokenizer(), [(f"val/{i}", [int(t) for t in r]) for i, r in enumerate(rows)]


def fitted(cfg: ExperimentConfig, label: str, path: str, context: int) -> tuple[tuple[str, ...], dict]:
    """The per-layer patterns (one ``heads(...)`` string per layer) of a ``spattern fit`` record
    named by ``sweep.fitted`` (``path`` relative to the experiment file), and what identifies the
    fit (its file, documents, split and cost). The fit must be of the setup's model, at the run's
    context (its cost was chosen at that length) and with the setup's block; the documents it was
    fitted on are checked against the scored ones when the run starts (``check_held_out``)."""
    from spattern.utils.io import read_json

    where = f"sweep.fitted.{label}"
    base = Path(cfg.source).parent if cfg.source else Path(".")
    file = base / path
    if not file.is_file():
        raise UserError(f"{where}: expected the JSON that `spattern fit` wrote, got {path!r} (no file {file})")
    rec = read_json(file)
    fit = rec.get("fit") if isinstance(rec, dict) else None
    if not isinstance(fit, dict) or not isinstance(fit.get("patterns"), list) or not fit["patterns"]:
        raise UserError(f"{where}: expected a `spattern fit` record with fit.patterns (one per layer), got {file}")
    model = str(rec.get("model"))
    if cfg.setup.model not in (model, f"checkpoint:{model}"):
        raise UserError(f"{where}: fitted on model {model!r}, but setup.model is {cfg.setup.model!r}")
    if int(fit["window"]) != context:
        raise UserError(f"{where}: fitted at {fit['window']} tokens (its cost is chosen at that length), but the "
                        f"run's context is {context}")
    if tuple(fit["block"]) != tuple(cfg.setup.block):
        raise UserError(f"{where}: fitted with block {tuple(fit['block'])}, but setup.block is {tuple(cfg.setup.block)}")
    info = {"fit": path, "fit_split": rec.get("fit_split"), "fit_docs": list(fit.get("docs", [])),
            "fit_recall": fit["fitted"]["recall"], "achieved": fit["fitted"]["block_density"],
            "target": rec.get("target"), "measure": rec.get("measure", "block_density")}
    return tuple(str(p) for p in fit["patterns"]), info


def check_held_out(label: str, info: dict, doc_ids: list[str]) -> None:
    """A fitted pattern is scored only on documents it was not fitted on."""
    seen = sorted(set(info.get("fit_docs", [])) & set(doc_ids))
    if seen:
        raise UserError(f"sweep.fitted.{label}: expected held-out documents, but {len(seen)} of the scored ones were "
                        f"fitted on ({', '.join(seen[:3])}{', ...' if len(seen) > 3 else ''}); score another split")
