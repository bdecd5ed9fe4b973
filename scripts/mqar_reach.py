"""How far each pattern of a trained MQAR experiment lets a query see the value it must return, against
the accuracy its runs reached, by number of pairs and key-query distance:

    python scripts/mqar_reach.py results/study_mqar_long [--json <folder>/reach_by_distance.json]

For each run label, the pattern its runs trained with, compiled at their context and blocks (the run's
config.toml), gives the token-level reach (``spattern.compiler.analysis.reach_matrix``) at one layer and
at the model's depth (``model.n_layers``). The held-out sequences the runs were scored on (rebuilt from
the config's ``[data.mqar]``: ``mqar_batch(n pairs, eval_seed, 0)`` for each n of ``eval_pairs``) give
each query's own position and that of the value it must return (its key's position + 1). A run label
whose pattern differs per layer (a list in config.toml) gets one layout per layer. Per (n_pairs,
power-of-two distance bucket), one row: ``queries``, ``attended`` (the fraction of those queries whose
value the last layer attends directly: what an induction head needs there), ``reach_<L>`` (the
fraction an L-layer path connects at all), ``routes_<L>`` (the median number of L-edge walks from the
value to the query, ``walk_counts``: at 2 layers, the positions its information can pass through, the
query and the value among them when attended directly) and ``accuracy`` (the runs' accuracy there, mean over seeds,
from their ``per_example.jsonl`` bucket lines). Then ``by_distance``: each bucket's mean over n_pairs of
the four, as the report's accuracy-against-distance figure averages accuracy.

``--draws TEMPLATE --draws-label LABEL`` adds, for the random pattern that run label trained with (written
with a ``{seed}`` field), the reach of each of ``--seeds`` draws at the farthest bucket (``draw_spread``;
the JSON's ``draws``): how much the one draw a study trains with decides what the pattern can connect.
study_mqar_long's file was written with
``--draws "(local(18) | landmark(every=128) | random(2, block=16, seed={seed})) & causal" --draws-label bigbird``.

A run label whose runs trained different patterns (a ``{seed}`` family such as study_mqar_long's
bigbird_draws: a random draw per run) gets pooled rows (the draws' mean attended and reach, the median of
their routes, the runs' mean accuracy) and a ``per_run`` entry: each run's own draw at the farthest
bucket beside that run's accuracy there, Spearman's correlation of accuracy with routes and with
attended over the runs, and (``against_fixed``) a paired comparison by seed with any label that trained
one of those draws in every run (bigbird: seed 0's draw).

Why not every (query, key) pair at a distance (``reach_by_distance``): MQAR's keys all sit in the first
2n tokens, so a pattern whose fixed keys cover the start (a sink) reaches MQAR's far keys far more often
than it reaches an average pair at that distance."""
from __future__ import annotations

import argparse
import json
import tomllib
from collections import defaultdict
from pathlib import Path

import numpy as np

from spattern import compile as compile_pattern
from spattern.compiler.analysis import reach_matrix, walk_counts
from spattern.data.mqar import MQARConfig, bucket_lo, distance_bucket, mqar_batch


def _runs(folder: Path) -> dict[str, list[tuple[dict, Path]]]:
    runs: dict[str, list[tuple[dict, Path]]] = defaultdict(list)
    for f in sorted(folder.glob("*/metrics.json")):
        m = json.loads(f.read_text())
        if m.get("status") == "finished":
            runs[m["label"]].append((tomllib.loads((f.parent / "config.toml").read_text()), f.parent))
    if not runs:
        raise SystemExit(f"{folder}: expected finished MQAR runs (*/metrics.json, status finished); found none")
    return runs


def _shared(configs: list[dict], what: str, get) -> object:
    values = {json.dumps(get(c), sort_keys=True) for c in configs}
    if len(values) != 1:
        raise SystemExit(f"expected the runs to share {what}; got {sorted(values)}")
    return get(configs[0])


def _accuracy(run: Path) -> dict[tuple[int, str], float]:
    """{(n_pairs, bucket): accuracy} from a run's per-example bucket lines (``mqar/n<n>/distance<lo>``)."""
    out = {}
    for line in (run / "per_example.jsonl").read_text().splitlines():
        e = json.loads(line)
        if "distance_bucket" in e and "accuracy" in e:
            out[(int(e["n_pairs"]), e["distance_bucket"])] = float(e["accuracy"])
    return out


def _setting(runs: dict) -> tuple[dict, int, tuple, dict]:
    """The runs' shared [data], depth and blocks, and per n_pairs of ``eval_pairs`` the held-out queries'
    positions, the positions of the values they must return and their distance buckets (flat arrays)."""
    configs = [c for rs in runs.values() for c, _ in rs]
    data = _shared(configs, "[data]", lambda c: c["data"])
    layers = _shared(configs, "model.n_layers", lambda c: c["model"]["n_layers"])
    block = tuple(_shared(configs, "model.block", lambda c: c["model"]["block"]))
    T, m = data["seq_len"], data["mqar"]
    evals = {}
    for n in m["eval_pairs"]:
        cfg = MQARConfig(vocab_size=data["vocab_size"], seq_len=T, n_pairs=n, n_queries=m.get("n_queries"),
                         power_a=m["power_a"], batch_size=m["eval_sequences"], random_fill=m["random_fill"])
        b = mqar_batch(cfg, m["eval_seed"], 0)
        q, k = b.query_pos.reshape(-1).numpy(), b.key_pos.reshape(-1).numpy()
        evals[n] = (q, k + 1, np.array([distance_bucket(int(d)) for d in q - k]))
    return data, layers, block, evals


def draw_spread(folder: Path, template: str, seeds: list[int], lo: int = 128) -> list[dict]:
    """How much a random pattern's draw decides its reach at MQAR's queries of bucket ``lo`` (default the
    farthest, 128-255 tokens), without training: ``template`` has a ``{seed}`` field (e.g. BigBird's
    ``random(2, block=16, seed={seed})``). One row per seed with that draw in every layer, then one per
    consecutive group of ``layers`` seeds drawn per layer (the first seed the first layer's): ``attended``
    (the last layer attends the value directly), ``reach`` and ``routes`` as in ``mqar_reach``, each the
    mean over n_pairs as its ``by_distance`` rows are."""
    return _draw_rows(_setting(_runs(folder)), template, seeds, lo)


def _draw_rows(setting: tuple, template: str, seeds: list[int], lo: int) -> list[dict]:
    data, layers, block, evals = setting
    T = data["seq_len"]
    layout = {s: compile_pattern(template.format(seed=s), T, block=block) for s in seeds}
    groups = [[s] * layers for s in seeds] + [seeds[i:i + layers] for i in range(0, len(seeds) - layers + 1, layers)]
    out = []
    for g in groups:
        one, walks = reach_matrix(layout[g[-1]], 1), walk_counts([layout[s] for s in g], layers)
        cells = []
        for q, v, buckets in evals.values():
            sel = np.array([bucket_lo(b) == lo for b in buckets])
            if sel.any():
                cells.append((one[q[sel], v[sel]].mean(), (walks[q[sel], v[sel]] > 0).mean(),
                              np.median(walks[q[sel], v[sel]])))
        att, reach, routes = (float(np.mean(c)) for c in zip(*cells))
        out.append({"draws": g, "attended": att, f"reach_{layers}": reach, f"routes_{layers}": routes})
    return out


def _cells(label: str, text, rs: list[tuple[dict, Path]], setting: tuple) -> list[dict]:
    """One row per (n_pairs, bucket) for runs that trained one pattern ``text`` (a string, or one per layer)."""
    data, layers, block, evals = setting
    T = data["seq_len"]
    # one pattern for every layer, or one per layer (e.g. BigBird with a random draw per layer)
    per_layer = [text] * layers if isinstance(text, str) else list(text)
    if len(per_layer) != layers:
        raise SystemExit(f"{label}: expected one pattern or {layers} (model.n_layers); got {len(per_layer)}")
    layouts = [compile_pattern("causal" if t == "dense" else t, T, block=block) for t in per_layer]
    # what the last layer attends directly (an induction head's read), and the walks through all of them
    one, walks = reach_matrix(layouts[-1], 1), walk_counts(layouts, layers)
    deep = walks > 0  # reach_matrix(layout, layers), from the walks already counted
    accs = [_accuracy(p) for _, p in rs]
    cells = []
    for n, (q, v, buckets) in evals.items():
        for bucket in sorted(set(buckets), key=bucket_lo):
            sel = buckets == bucket
            got = [a[(n, bucket)] for a in accs if (n, bucket) in a]
            cells.append({"label": label, "pattern": text, "n_pairs": n, "bucket": bucket,
                          "lo": bucket_lo(bucket), "queries": int(sel.sum()),
                          "attended": float(one[q[sel], v[sel]].mean()),
                          f"reach_{layers}": float(deep[q[sel], v[sel]].mean()),
                          f"routes_{layers}": float(np.median(walks[q[sel], v[sel]])),
                          "accuracy": float(np.mean(got)) if got else None, "runs": len(got)})
    return cells


def _by_distance(cells: list[dict], layers: int) -> list[dict]:
    """Each bucket's mean over n_pairs of attended, reach, routes and accuracy (None where a cell has none)."""
    out = []
    for lo in sorted({c["lo"] for c in cells}):
        cs = [c for c in cells if c["lo"] == lo]
        mean = lambda key: float(np.mean([c[key] for c in cs])) if all(c[key] is not None for c in cs) else None  # noqa: E731
        out.append({"label": cs[0]["label"], "bucket": cs[0]["bucket"], "lo": lo, "n_pairs": [c["n_pairs"] for c in cs],
                    "attended": mean("attended"), f"reach_{layers}": mean(f"reach_{layers}"),
                    f"routes_{layers}": mean(f"routes_{layers}"), "accuracy": mean("accuracy")})
    return out


def _pooled(label: str, groups: list[list[dict]], layers: int) -> list[dict]:
    """A run label whose runs trained different patterns (a random draw per run): per (n_pairs, bucket),
    attended and reach averaged over the runs' patterns, routes the median of their medians, accuracy the
    mean over the runs."""
    out = []
    for cs in zip(*groups):
        runs = sum(c["runs"] for c in cs)
        acc = [c["accuracy"] for c in cs if c["accuracy"] is not None]
        out.append({**cs[0], "label": label, "pattern": f"{len(cs)} patterns, one per run",
                    "attended": float(np.mean([c["attended"] for c in cs])),
                    f"reach_{layers}": float(np.mean([c[f"reach_{layers}"] for c in cs])),
                    f"routes_{layers}": float(np.median([c[f"routes_{layers}"] for c in cs])),
                    "accuracy": float(np.sum([c["accuracy"] * c["runs"] for c in cs if c["accuracy"] is not None])
                                      / runs) if acc else None, "runs": runs})
    return out


def per_run(label: str, groups: list[tuple[dict, list[dict]]], layers: int, far: int) -> dict:
    """For a run label that trained a pattern per run: each run's own draw at the farthest bucket (attended,
    reach, routes and its accuracy, means over n_pairs) and Spearman's rank correlation over the runs of
    accuracy with routes and with attended (scipy.stats.spearmanr; p two-sided)."""
    from scipy.stats import spearmanr

    rows = []
    for cfg, cells in groups:
        (b,) = [r for r in _by_distance(cells, layers) if r["lo"] == far]
        rows.append({"seed": int(cfg["train"]["seed"]), "pattern": cfg["model"]["pattern"], "attended": b["attended"],
                     f"reach_{layers}": b[f"reach_{layers}"], f"routes_{layers}": b[f"routes_{layers}"],
                     "accuracy": b["accuracy"]})
    rows.sort(key=lambda r: r["seed"])
    acc = [r["accuracy"] for r in rows]
    corr = {}
    for key in (f"routes_{layers}", "attended"):
        x = [r[key] for r in rows]
        if len(rows) >= 3 and len(set(x)) > 1 and len(set(acc)) > 1:
            res = spearmanr(x, acc)
            corr[key] = {"rho": float(res.statistic), "p": float(res.pvalue), "n": len(rows)}
    return {"label": label, "lo": far, "rows": rows, "spearman": corr}


def against_fixed(entry: dict, twin: str, twin_runs: list[tuple[dict, Path]], buckets: dict) -> dict:
    """A per-run-draw label against ``twin``, the label that trained one of its draws in every run (e.g.
    bigbird, seed 0's draw, against bigbird_draws): paired by seed, accuracy at the farthest bucket (the mean
    over n_pairs of each run's bucket line; ``buckets``: n_pairs -> that bucket's name), with
    ``spattern.evaluation.stats.paired_compare`` (Wilcoxon, BCa interval of the mean difference)."""
    from spattern.evaluation.stats import paired_compare

    fixed = {}
    for c, path in twin_runs:
        a = _accuracy(path)
        got = [a[(n, b)] for n, b in buckets.items() if (n, b) in a]
        if len(got) == len(buckets):
            fixed[int(c["train"]["seed"])] = float(np.mean(got))
    mine = {r["seed"]: r["accuracy"] for r in entry["rows"] if r["accuracy"] is not None}
    seeds = sorted(set(fixed) & set(mine))
    if len(seeds) < 2:
        return {}
    pc = paired_compare([mine[s] for s in seeds], [fixed[s] for s in seeds])
    return {"baseline": twin, "seeds": seeds, "mean": pc.mean_x, "mean_baseline": pc.mean_y, "diff": pc.diff.estimate,
            "diff_ci": [pc.diff.low, pc.diff.high], "p": pc.test.p, "test": pc.test.test, "n": pc.n}


def mqar_reach(folder: Path, draws: dict | None = None) -> dict:
    """The rows and by_distance means (module docstring); with ``draws`` ({"label": a run label whose
    pattern is random, "template": that pattern with a ``{seed}`` field, "seeds": N}) also a ``draws``
    section: ``draw_spread`` over seeds 0..N-1, which the report's reach sentence reads. A run label whose
    runs trained different patterns (a ``{seed}`` family: a random draw per run) gets pooled rows
    (``_pooled``) and a ``per_run`` entry: each run's draw against its own accuracy (``per_run``)."""
    runs = _runs(folder)
    setting = _setting(runs)
    data, layers, block, evals = setting
    m = data["mqar"]
    rows, by_distance, runs_apart = [], [], []
    for label, rs in sorted(runs.items()):
        by_pattern: dict[str, list[tuple[dict, Path]]] = {}
        for c, path in rs:
            by_pattern.setdefault(json.dumps(c["model"]["pattern"]), []).append((c, path))
        if len(by_pattern) == 1:
            cells = _cells(label, rs[0][0]["model"]["pattern"], rs, setting)
        else:
            if any(len(g) > 1 for g in by_pattern.values()):
                raise SystemExit(f"{label}: expected one pattern for all runs or one per run; got "
                                 f"{len(by_pattern)} patterns over {len(rs)} runs")
            groups = [(g[0][0], _cells(label, g[0][0]["model"]["pattern"], g, setting)) for g in by_pattern.values()]
            cells = _pooled(label, [cs for _, cs in groups], layers)
            runs_apart.append((label, groups))
        rows += cells
        by_distance += _by_distance(cells, layers)
    out = {"experiment": folder.name, "context": data["seq_len"], "layers": layers, "block": list(block),
           "eval_pairs": list(m["eval_pairs"]), "rows": rows, "by_distance": by_distance}
    far = max(r["lo"] for r in by_distance)
    if runs_apart:
        out["per_run"] = []
        far_buckets = {n: b for n, (_, _, buckets) in evals.items() for b in set(buckets) if bucket_lo(b) == far}
        for label, groups in runs_apart:
            entry = per_run(label, groups, layers, far)
            drawn = {json.dumps(c["model"]["pattern"]) for c, _ in groups}
            for twin, rs in sorted(runs.items()):  # a label that trained one of these draws in every run
                if twin != label and {json.dumps(c["model"]["pattern"]) for c, _ in rs} <= drawn:
                    if paired := against_fixed(entry, twin, rs, far_buckets):  # {}: fewer than 2 seeds in common
                        entry.setdefault("against_fixed", []).append(paired)
            out["per_run"].append(entry)
    if draws is not None:
        if draws["label"] not in runs:
            raise SystemExit(f"--draws-label: expected one of the run labels {sorted(runs)}, got {draws['label']!r}")
        out["draws"] = {**draws, "lo": far, "rows": _draw_rows(setting, draws["template"], list(range(draws["seeds"])), far)}
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--draws", default=None, metavar="TEMPLATE",
                    help="also the reach of each draw of a random pattern, written with a {seed} field (draw_spread)")
    ap.add_argument("--draws-label", default=None, help="with --draws: the run label that trained with such a draw")
    ap.add_argument("--seeds", type=int, default=8, help="with --draws: seeds 0..N-1")
    a = ap.parse_args()
    if bool(a.draws) != bool(a.draws_label):
        ap.error("--draws and --draws-label go together")
    out = mqar_reach(a.folder, {"label": a.draws_label, "template": a.draws, "seeds": a.seeds} if a.draws else None)
    path = a.json or a.folder / "reach_by_distance.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    reach = f"reach_{out['layers']}"
    fmt = lambda x: "  -  " if x is None else f"{x:.2f}"  # noqa: E731
    for r in out["by_distance"]:
        print(f"{r['label']:>11} {r['bucket']:>10}  attended {fmt(r['attended'])}  {reach} {fmt(r[reach])}  "
              f"routes {r['routes_' + str(out['layers'])]:5.1f}  accuracy {fmt(r['accuracy'])}")
    for r in out.get("draws", {}).get("rows", []):
        print("  ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()))
    for e in out.get("per_run", []):
        for r in e["rows"]:
            print(f"{e['label']} seed {r['seed']:>2}  attended {fmt(r['attended'])}  {reach} {fmt(r[reach])}  "
                  f"routes {r['routes_' + str(out['layers'])]:5.1f}  accuracy {fmt(r['accuracy'])}")
        for key, c in e["spearman"].items():
            print(f"{e['label']}: Spearman of accuracy with {key} {c['rho']:+.2f} (p {c['p']:.3g}, n {c['n']})")
        for c in e.get("against_fixed", []):
            print(f"{e['label']} - {c['baseline']} (its one draw), by seed: {c['diff']:+.3f} [{c['diff_ci'][0]:+.3f}, "
                  f"{c['diff_ci'][1]:+.3f}], {c['test']} p {c['p']:.3g}, n {c['n']}")
    print(f"wrote {path}")
