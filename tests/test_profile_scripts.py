"""The analysis scripts of device runs, on synthetic inputs with known answers:
scripts/hopper_overhead_fit.py (launch + per-item + per-tile costs), scripts/ncu_source_summary.py
(Nsight Compute's per-instruction stall samples) and scripts/throughput_summary.py (training runs'
tokens/s, context waits and same-call ratios)."""
from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _bench_json(path: Path, heads: int, us_of) -> None:
    """A `spattern bench attention` JSON with the Hopper kernel's time from us_of(items, tiles)."""
    rows = []
    for density, nnz in ((0.25, 256), (0.5, 512), (1.0, 1024)):
        items, tiles = heads * 32, heads * nnz
        rows.append({"N": 4096, "density": density, "block": [128, 128], "nnz_blocks": nnz,
                     "ms": {"spattern_hopper": us_of(items, tiles) / 1e3, "sdpa_cudnn": 0.25}})
    path.write_text(json.dumps({"config": {"heads": heads, "batch": 1}, "results": rows}))


def test_overhead_fit_recovers_the_costs_and_flags_the_small_launch(tmp_path):
    fit = _script("hopper_overhead_fit")
    F, o, t, sms = 9.0, 6.0, 1.7, 132
    paths = []
    for h in (16, 64, 256):
        p = tmp_path / f"overhead_h{h}.json"
        tail = 20.0 if h == 16 else 0.0   # the small launch runs above the model (its last partial round)
        _bench_json(p, h, lambda items, tiles, tail=tail: F + items / sms * o + tiles / sms * t + tail)
        paths.append(str(p))
    out = fit.fit(fit.rows_of(paths), sms, min_heads=64)
    c = out["coef"]
    assert c["launch_us"]["value"] == pytest.approx(F)
    assert c["per_item_us"]["value"] == pytest.approx(o)
    assert c["per_tile_us"]["value"] == pytest.approx(t)
    small = [r for r in out["rows"] if r["heads"] == 16]
    assert all(r["us"] - r["predicted_us"] == pytest.approx(20.0) for r in small)
    assert all(r["vs_cudnn"] == pytest.approx(250.0 / r["us"]) for r in out["rows"])


def test_ncu_source_summary_adds_up_samples_by_reason_opcode_and_instruction(tmp_path):
    summ = _script("ncu_source_summary")
    cols = ["Address", "Source", "Warp Stall Sampling (All Samples)", "Warp Stall Sampling (Not-issued Samples)",
            "Instructions Executed", "stall_wait", "stall_long_sb", "stall_barrier", "stall_wait (Not Issued)"]
    lines = [("0x10", "      WARPGROUP.DEPBAR.LE gsb0, 0x0", 60, 0, 10, 0, 0, 60, 0),
             ("0x20", "@!P0  BRA 0x40", 30, 0, 10, 0, 30, 0, 0),
             ("0x30", "      FFMA R1, R2, R3, R4", 10, 0, 10, 10, 0, 0, 5)]
    path = tmp_path / "src.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Kernel Name", "k"])
        w.writerow(cols)
        w.writerows(lines)
    out = summ.summarise(str(path), top=2)
    assert out["samples"] == 100 and out["instructions"] == 3
    assert out["by_reason_pct"] == {"barrier": 60.0, "long_sb": 30.0, "wait": 10.0}   # "Not Issued" columns apart
    assert out["by_opcode_pct"] == {"WARPGROUP": 60.0, "BRA": 30.0, "FFMA": 10.0}       # predicates stripped
    assert [h["address"] for h in out["hottest"]] == ["0x10", "0x20"]
    assert out["hottest"][1]["reasons"] == {"long_sb": 30.0}


def _ab_run(a_ms: float, b_ms: float, causal: bool = False) -> dict:
    cell = dict(N=4096, D=128, causal=causal, family="lrs", pattern="p", density_target=0.5, density=0.5,
                nnz_blocks=512, block=[128, 128], flops_computed=1e11, pass_="fwd", errors={}, tflops={},
                speedup_vs_flash={}, wall_s=1.0,
                ms={"spattern_hopper": a_ms, "spattern_hopper_programs": b_ms, "sdpa_cudnn": 0.2, "flex_native": 0.3})
    return dict(env={"gpu": "x"}, config={"heads": 16}, results=[cell])


def test_ab_summary_ratios_per_repeat_and_verdicts():
    ab = _script("hopper_ab_summary")
    s = ab.summarise([_ab_run(0.10, 0.09), _ab_run(0.12, 0.11), _ab_run(0.10, 0.095)],
                     "spattern_hopper", "spattern_hopper_programs")
    c = s["cells"][0]
    assert c["ratios"] == pytest.approx([0.9, 0.11 / 0.12, 0.95])
    assert c["ratio_b_over_a"] == pytest.approx(0.11 / 0.12) and c["verdict"] == "B faster"
    assert c["vs_cudnn"]["spattern_hopper"] == pytest.approx(0.2 / 0.10)
    mixed = ab.summarise([_ab_run(0.10, 0.09), _ab_run(0.10, 0.11)], "spattern_hopper", "spattern_hopper_programs")
    assert mixed["cells"][0]["verdict"] == "mixed"
    slower = ab.summarise([_ab_run(0.10, 0.12), _ab_run(0.10, 0.13)], "spattern_hopper", "spattern_hopper_programs")
    assert slower["cells"][0]["verdict"] == "A faster"


def test_ab_summary_refuses_a_cell_neither_repeat_timed_for_both():
    ab = _script("hopper_ab_summary")
    r = _ab_run(0.10, 0.09)
    r["results"][0]["ms"]["spattern_hopper_programs"] = None
    with pytest.raises(ValueError, match="no repeat timed both"):
        ab.summarise([r], "spattern_hopper", "spattern_hopper_programs")


def _plain_log(path: Path, tok_per_s: list[float], wait_ms: list[float]) -> None:
    """A training loop's metrics.jsonl: step 1, then every 10 steps (ctx_wait_ms: a per-step mean)."""
    steps = [1] + [10 * i for i in range(1, len(tok_per_s))]
    path.write_text("".join(json.dumps({"step": s, "tokens": 100 * s, "tok_per_s": t, "ctx_wait_ms": w}) + "\n"
                            for s, t, w in zip(steps, tok_per_s, wait_ms)))


def test_throughput_summary_medians_waits_and_same_tag_ratios(tmp_path, monkeypatch, capsys):
    ts = _script("throughput_summary")
    (tmp_path / "run.log").write_text("=== a_1: local(8) & causal\n[train] ...\n=== a_2: outline(window=8) & causal\n"
                                      "=== b_1: outline(window=8) & causal\n=== b_2: local(8) & causal\n")
    _plain_log(tmp_path / "a_plain_1.jsonl", [10, 20, 50, 100, 100, 100], [0] * 6)
    _plain_log(tmp_path / "a_plain_2.jsonl", [10, 20, 50, 90, 80, 70], [500, 100, 1, 2, 0, 0])
    _plain_log(tmp_path / "b_plain_1.jsonl", [10, 20, 50, 60, 60, 60], [0] * 6)
    _plain_log(tmp_path / "b_plain_2.jsonl", [10, 20, 50, 30, 30, 30], [0] * 6)
    out = tmp_path / "t.json"
    monkeypatch.setattr("sys.argv", ["x", str(tmp_path), "--baseline", "local(8) & causal", "--json", str(out),
                                     "--logged-by", "OUT=o TAG=a_ bash scripts/profile_train.sh 'local(8) & causal'"])
    ts.main()
    got = json.loads(out.read_text())
    rows = {r["run"]: r for r in got["runs"]}
    assert got["logged_by"] == ["OUT=o TAG=a_ bash scripts/profile_train.sh 'local(8) & causal'"]
    import shlex
    assert shlex.split(got["command"]) == ["python", "scripts/throughput_summary.py", str(tmp_path), "--baseline",
                                           "local(8) & causal", "--json", str(out)]  # logged_by apart
    a2 = rows["a_2"]
    assert a2["tok_per_s_median"] == 80 and a2["intervals"] == 3 and a2["ms_per_step_median"] == 1000 * 100 / 80
    assert a2["ctx_wait_ms_early"] == 500 * 1 + 100 * 9 + 1 * 10 and a2["ctx_wait_ms_late"] == 2 * 10  # x steps
    assert a2["ratio_to_baseline"] == 0.8 and rows["a_1"]["ratio_to_baseline"] == 1.0
    assert rows["b_1"]["ratio_to_baseline"] == 2.0  # against b's own window run, not a's
    assert a2["tok_per_s_p90"] == pytest.approx(88)  # the fast end of 90, 80, 70 (numpy's linear percentile)
    assert a2["ratio_p90_to_baseline"] == pytest.approx(88 / 100)
    assert "outline(window=8)" in capsys.readouterr().out
    # two calls: each run's tag names its call, and ratios stay within a call (call2's window is twice as fast)
    second = tmp_path / "call2"
    second.mkdir()
    (second / "run.log").write_text("=== a_1: local(8) & causal\n=== a_2: outline(window=8) & causal\n")
    _plain_log(second / "a_plain_1.jsonl", [10, 20, 50, 200, 200, 200], [0] * 6)
    _plain_log(second / "a_plain_2.jsonl", [10, 20, 50, 100, 100, 100], [0] * 6)
    first = tmp_path / "call1"
    first.mkdir()
    for f in ("run.log", "a_plain_1.jsonl", "a_plain_2.jsonl"):
        (first / f).write_text((tmp_path / f).read_text())
    monkeypatch.setattr("sys.argv", ["x", str(first), str(second), "--baseline", "local(8) & causal", "--json", str(out)])
    ts.main()
    got = json.loads(out.read_text())
    assert got["calls"] == ["call1", "call2"]
    rows = {r["run"]: r for r in got["runs"]}
    assert rows["call1/a_2"]["ratio_to_baseline"] == 0.8 and rows["call2/a_2"]["ratio_to_baseline"] == 0.5
    assert rows["call2/a_2"]["tag"] == "call2/a_"
    monkeypatch.setattr("sys.argv", ["x", str(first), str(tmp_path / "x" / "call1")])
    with pytest.raises(SystemExit):  # two folders of one name: their runs' tags would collide
        ts.main()


@pytest.mark.slow
def test_bench_train_step_runs_its_modes_on_a_cpu(tmp_path, monkeypatch):
    """scripts/bench_train_step.py end to end on this CPU at a tiny size (its numbers mean nothing
    here): the chosen modes run, window is added, and each gets its times and a ratio to window. The spare
    placement's split is one CPU each here (this machine may have two)."""
    import os

    from spattern.train import contexts

    monkeypatch.chdir(ROOT)
    everywhere = os.sched_getaffinity(0)
    low, high = min(everywhere), max(everywhere)
    monkeypatch.setattr(contexts, "split_cpus", lambda cpus: (frozenset({low}), frozenset({high})))
    bench = _script("bench_train_step")
    out = tmp_path / "step.json"
    import torch

    threads = torch.get_num_threads()  # --threads 1 sets this process's; given back below
    assert bench.main(["--device", "cpu", "--steps", "1", "--rounds", "2", "--batches", "1", "--busy", "1",
                       "--workers", "1", "--set", "data.seq_len=256", "--set", "train.batch_size=2",
                       "--set", 'model.preset="neox-tiny"', "--modes", "window_fresh,window_poolload,outline_pool,window_workload,window_echo,"
                       "window_poolfile,outline_poolfile,window_poolspare,outline_poolspare,outline_pool_tpin,dense_fresh",
                       "--probe", "1000", "--pin", "numpy", "--threads", "1", "--json", str(out),
                       "--cprofile", "window_fresh,dense_fresh", "--cprofile-out", str(tmp_path / "prof.txt"),
                       "--static", "lf=(local(32) | landmark(every=128) | sink(16)) & causal", "--gpu-time"]) == 0
    torch.set_num_threads(threads)
    assert os.sched_getaffinity(0) == everywhere                   # this thread given back its CPUs
    got = json.loads(out.read_text())
    assert list(got["modes"]) == ["window", "window_fresh", "window_poolload", "outline_pool", "window_workload",
                                  "window_echo", "window_poolfile", "outline_poolfile", "window_poolspare",
                                  "outline_poolspare", "outline_pool_tpin", "dense_fresh", "lf_fresh"]
    assert got["static"] == {"lf_fresh": "(local(32) | landmark(every=128) | sink(16)) & causal"}
    assert list(got["gpu_time"]) == list(got["modes"])  # one profiled block per mode; no CUDA here: no device time
    for g in got["gpu_time"].values():
        assert g["ms_per_step"] > 0 and g["gpu_ms_per_step"] == 0 and g["attention_kernels"]["launches_per_step"] == 0
    prof = (tmp_path / "prof.txt").read_text()  # one profiled block per mode: the window's runs spattern's attention
    window_part, dense_part = prof.split("=== dense_fresh")
    assert window_part.startswith("=== window_fresh: 1 steps") and "ms/step" in window_part
    assert "reference.py" in window_part and "reference.py" not in dense_part
    for m in got["modes"].values():
        assert len(m["ms_per_step"]) == 2 and all(v > 0 for v in m["ms_per_step"])
    assert got["modes"]["window"]["median_ratio_to_window"] == 1.0
    assert set(got["modes"]["outline_pool"]["host_ms_per_step"]) == {"ahead", "get", "upload", "cpu_main_thread",
                                                                     "cpu_process", "probe"}
    assert set(got["modes"]["window_fresh"]["host_ms_per_step"]) == {"cpu_main_thread", "cpu_process", "probe"}
    assert set(got["modes"]["window_echo"]["host_ms_per_step"]) == {"ahead", "get", "cpu_main_thread", "cpu_process",
                                                                    "probe"}
    for m in got["modes"].values():  # the probe's CPU time is within the launching thread's
        assert 0 < m["host_ms_per_step"]["probe"] < m["host_ms_per_step"]["cpu_main_thread"]
        assert {"minflt", "nvcsw", "nivcsw"} <= set(m["launching_thread_per_step"])
        assert all(v >= 0 for v in m["launching_thread_per_step"].values())
        assert 0 < m["machine_cpu_share"]["busy"] <= 1  # this process ran during the block
        assert 0 <= m["machine_cpu_share"]["steal"] < 1
    assert got["modes"]["outline_poolfile"]["host_ms_per_step"].keys() == got["modes"]["outline_pool"]["host_ms_per_step"].keys()
    assert got["modes"]["outline_poolspare"]["host_ms_per_step"].keys() == got["modes"]["outline_pool"]["host_ms_per_step"].keys()
    assert got["spare_split"] == [[low], [high]]
    assert (got["pin"], got["torch_threads"]) == ("numpy", 1)
    assert got["modes"]["outline_pool_tpin"]["host_ms_per_step"].keys() == got["modes"]["outline_pool"]["host_ms_per_step"].keys()
    for m in got["modes"].values():  # every thread's CPU time: the launching thread's agrees with thread_time
        t = m["threads_cpu_ms_per_step"]
        assert t["main"] > 0 and t["others"] >= sum(t["top"]) - 0.01 and t["top"] == sorted(t["top"], reverse=True)
        assert abs(t["main"] - m["host_ms_per_step"]["cpu_main_thread"]) <= 0.2 * t["main"] + 1.0
    with pytest.raises(SystemExit):
        bench.main(["--modes", "nonsense"])
    for bad in ("lf", "window=local(8) & causal", "=local(8)", "lf="):  # no NAME=PATTERN, or a mode that exists
        with pytest.raises(SystemExit):
            bench.main(["--static", bad])


@pytest.mark.slow
def test_pool_delivery_probe_runs_both_modes(monkeypatch):
    """scripts/pool_delivery_probe.py at a tiny size: both modes timed, the pool's results taken."""
    import importlib

    monkeypatch.syspath_prepend(str(ROOT / "scripts"))  # the spawned workers import the script's echo by name
    probe = importlib.import_module("pool_delivery_probe")
    out = probe.main(["--ops", "50", "--iters", "2", "--rounds", "2", "--sleep", "0"])
    assert set(out) == {"plain", "pool"} and all(v["ms_per_iter"] > 0 for v in out.values())


@pytest.mark.slow
def test_partial_checkpoints_lists_the_started_unfinished_runs_only(tmp_path, monkeypatch):
    """scripts/partial_checkpoints.py (what study_gpu.sh packs so that a later device call resumes a run
    stopped mid-way): a run stopped by its time guard is listed with its checkpoint folder; a finished run
    and a run never started are not."""
    import shutil

    from spattern.cli import main as cli

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("SPATTERN_CACHE", str(tmp_path / "cache"))
    over = [f'results="{tmp_path / "res"}"', "sweep.seed=[0]",
            'train.overrides=["train.steps=20", "train.eval_every=0", "data.mqar.eval_sequences=8"]']
    args = ["run", "experiments/study_mqar_long.toml", *(x for o in over for x in ("--set", o)),
            "--runtime", "train.device=cpu", "--no-compare", "--no-report"]
    script = _script("partial_checkpoints")
    assert script.partial_checkpoints(["experiments/study_mqar_long.toml"], over) == []  # nothing started
    assert cli([*args, "--only", "dense", "--runtime", "train.max_seconds=0.01"]) == 0   # stopped early
    (stopped,) = script.partial_checkpoints(["experiments/study_mqar_long.toml"], over)
    assert (Path(stopped) / "ckpt.pt").is_file() and "study_mqar_long-dense-s0-" in stopped
    assert cli([*args, "--only", "window"]) == 0                                         # finished
    (window,) = (tmp_path / "res" / "study_mqar_long").glob("window-*")
    assert json.loads((window / "metrics.json").read_text())["status"] == "finished"
    assert script.partial_checkpoints(["experiments/study_mqar_long.toml"], over) == [stopped]
    shutil.rmtree(window)                                                                # never started
    assert script.partial_checkpoints(["experiments/study_mqar_long.toml"], over) == [stopped]


@pytest.mark.slow
def test_a_run_stopped_in_one_device_call_resumes_from_its_carried_checkpoint_in_a_fresh_one(tmp_path):
    """scripts/study_gpu.sh end to end on the CPU, as two device calls on two machines: the first stops a
    training run mid-way (its time guard) and returns the run's folder and its checkpoint in parts; the
    cache and the warm machine's copies are then wiped (a fresh machine), the parts are carried in .carry/,
    and the second call restores them and resumes the run at its checkpoint's step, then finishes it."""
    import os
    import shutil
    import subprocess
    import tarfile

    if shutil.which("bash") is None or shutil.which("split") is None:
        pytest.skip("needs bash and coreutils")
    repo = tmp_path / "repo"  # the tree a call carries (no results/: the runs start here)
    for part in ("spattern", "scripts", "experiments"):
        shutil.copytree(ROOT / part, repo / part, ignore=shutil.ignore_patterns("__pycache__"))
    cache, kept = tmp_path / "cache", tmp_path / "kept"
    sets = ("--only dense --set sweep.seed=[0] "
            '--set train.overrides=["train.steps=20","train.eval_every=0","data.mqar.eval_sequences=8"] '
            "--runtime train.device=cpu")

    def call(out, extra=""):
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the copy's spattern, not ours
        env.update(OUT=str(out), SETS=f"{sets} {extra}", DEADLINE="240", SPATTERN_CACHE=str(cache),
                   SPATTERN_KEPT_RESULTS=str(kept), OMP_NUM_THREADS="1")
        p = subprocess.run(["bash", "scripts/study_gpu.sh", "experiments/study_mqar_long.toml"], cwd=repo, env=env,
                           capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
        return (out / "run.log").read_text()

    first = call(tmp_path / "out1", "--runtime train.max_seconds=0.01")
    assert "stopping at step" in first
    parts = sorted((tmp_path / "out1").glob("checkpoints.tar.gz.[0-9][0-9]"))
    assert parts, first
    (run,) = (repo / "results" / "study_mqar_long").glob("dense-*")
    assert json.loads((run / "metrics.json").read_text())["status"] != "finished"
    # here: unpack the call's results (as after any call); there: a fresh machine, the parts carried
    shutil.rmtree(repo / "results")
    with tarfile.open(tmp_path / "out1" / "results.tar.gz") as tar:
        tar.extractall(repo, filter="data")
    shutil.rmtree(cache)
    shutil.rmtree(kept)
    (repo / ".carry").mkdir()
    for p in parts:
        shutil.copy(p, repo / ".carry" / p.name)
    second = call(tmp_path / "out2")
    step = int(first.split("stopping at step ")[1].split(":")[0])
    assert step > 0 and "resumed study_mqar_long-dense-s0" in second and f"at step {step} from" in second, second
    assert json.loads((run / "metrics.json").read_text())["status"] == "finished"
    assert not list((tmp_path / "out2").glob("checkpoints.tar.gz.*"))  # nothing left unfinished to carry


def test_mqar_reach_on_the_committed_runs_by_hand(tmp_path):
    """scripts/mqar_reach.py over results/study_mqar_long, against MQAR's held-out queries counted here:
    dense attends every value; the window (local(66) & causal: keys up to 65 back) connects within its 2
    layers a value up to 130 back, so of the bucket [128, 256) only the queries whose key is 128-131 back
    (the value sits one after the key); streaming's sink (4 tokens: pairs 0 and 1) lets a far query see
    its value directly exactly when it asks for pair 0 or 1; longformer's far queries have one route (the
    landmark at 128); accuracy is the seeds' mean of each run's bucket line."""
    import numpy as np

    from spattern.data.mqar import MQARConfig, mqar_batch

    script = _script("mqar_reach")
    folder = ROOT / "results" / "study_mqar_long"
    committed = json.loads((folder / "reach_by_distance.json").read_text())
    out = script.mqar_reach(folder, {k: committed["draws"][k] for k in ("label", "template", "seeds")})
    assert out["draws"]["label"] == "bigbird" and out["draws"]["seeds"] == 8 and out["draws"]["lo"] == 128
    assert out["context"] == 256 and out["layers"] == 2 and out["eval_pairs"] == [2, 4, 8, 16]
    rows = {(r["label"], r["n_pairs"], r["lo"]): r for r in out["rows"]}
    assert {r["label"] for r in out["rows"]} == {"dense", "window", "strided", "streaming", "longformer", "bigbird",
                                                 "bigbird_layers", "bigbird_draws"}
    import tomllib

    from spattern import compile as compile_pattern

    # bigbird_layers: a random draw per layer; "attended" is what its last layer's own layout attends
    run = next(folder.glob("bigbird-layers-s*"))
    first, last = (compile_pattern(p, 256, block=(16, 16))
                   for p in tomllib.loads((run / "config.toml").read_text())["model"]["pattern"])
    assert all(r["reach_2"] == 1.0 and r["attended"] == 1.0 for r in out["rows"] if r["label"] == "dense")
    for n in (2, 4, 8, 16):
        b = mqar_batch(MQARConfig(vocab_size=64, seq_len=256, n_pairs=n, power_a=0.01, batch_size=128), 1_000_000, 0)
        d, pair = (b.query_pos - b.key_pos).numpy().ravel(), b.key_pos.numpy().ravel() // 2
        far = (d >= 128) & (d < 256)
        window, streaming = rows[("window", n, 128)], rows[("streaming", n, 128)]
        assert window["queries"] == far.sum() and window["attended"] == 0.0
        assert window["reach_2"] == pytest.approx(((d >= 128) & (d <= 131)).sum() / far.sum())
        assert streaming["attended"] == pytest.approx((pair[far] < 2).mean())
        assert rows[("longformer", n, 128)]["routes_2"] == 1.0
        q, v = b.query_pos.numpy().ravel()[far], b.key_pos.numpy().ravel()[far] + 1
        assert rows[("bigbird_layers", n, 128)]["attended"] == pytest.approx(last.to_dense(0)[q, v].astype(bool).mean())
        two = (last.to_dense(0).astype(bool) | np.eye(256, dtype=bool)).astype(int) @ \
            (first.to_dense(0).astype(bool) | np.eye(256, dtype=bool)).astype(int)  # layer 2's edge after layer 1's
        assert rows[("bigbird_layers", n, 128)]["routes_2"] == float(np.median(two[q, v]))
    acc = [next(json.loads(x)["accuracy"] for x in (r / "per_example.jsonl").read_text().splitlines()
                if '"id": "mqar/n8/distance128"' in x) for r in folder.glob("window-s*")]
    assert rows[("window", 8, 128)]["accuracy"] == pytest.approx(np.mean(acc)) and len(acc) >= 8
    # the committed file (the report's reach sentence reads it) is what the committed runs give now
    assert committed == out
    mean = next(r for r in out["by_distance"] if r["label"] == "streaming" and r["lo"] == 128)
    assert mean["attended"] == pytest.approx(np.mean([rows[("streaming", n, 128)]["attended"] for n in (2, 4, 8, 16)]))


def test_mqar_reach_of_a_draw_per_run_against_each_runs_own_draw():
    """bigbird_draws (a random draw per run, the run's seed): per_run gives each run its own draw's reach at
    the far bucket beside its own accuracy; seed 0's draw is bigbird's, so their reach agrees; the pooled rows
    average the runs' draws; the rank correlation and the paired comparison with bigbird (by seed) are
    scipy's and the toolkit's own on those numbers."""
    import numpy as np
    from scipy.stats import spearmanr

    from spattern.evaluation.stats import paired_compare

    from spattern import parse

    script = _script("mqar_reach")
    folder = ROOT / "results" / "study_mqar_long"
    template = "(local(18) | landmark(every=128) | random(2, block=16, seed={seed})) & causal"
    out = script.mqar_reach(folder)
    (e,) = out["per_run"]
    assert e["label"] == "bigbird_draws" and e["lo"] == 128 and [r["seed"] for r in e["rows"]] == list(range(16))
    far = {r["label"]: r for r in out["by_distance"] if r["lo"] == 128}
    s0 = e["rows"][0]
    bigbird = next(r["pattern"] for r in out["rows"] if r["label"] == "bigbird")
    assert parse(s0["pattern"]) == parse(bigbird)
    for key in ("attended", "reach_2", "routes_2"):
        assert s0[key] == pytest.approx(far["bigbird"][key]), key   # the same draw: the same reach
    for key in ("attended", "reach_2", "accuracy"):                 # pooled: means over the runs' draws
        assert far["bigbird_draws"][key] == pytest.approx(np.mean([r[key] for r in e["rows"]])), key
    # pooled routes: per number of pairs the median over the runs' own cells, then the mean over numbers of pairs
    runs = script._runs(folder)
    setting = script._setting(runs)
    own = [script._cells("x", c["model"]["pattern"], [(c, p)], setting) for c, p in runs["bigbird_draws"]]
    want = np.mean([np.median([cs[i]["routes_2"] for cs in own]) for i, c in enumerate(own[0]) if c["lo"] == 128])
    assert far["bigbird_draws"]["routes_2"] == pytest.approx(want)
    for r in e["rows"]:
        run = next(folder.glob(f"bigbird-draws-s{r['seed']}-*"))
        assert parse(r["pattern"]) == parse(template.format(seed=r["seed"]))
        lines = [json.loads(x) for x in (run / "per_example.jsonl").read_text().splitlines()]
        got = [x["accuracy"] for x in lines if x.get("distance_bucket") == "[128, 256)"]
        assert len(got) == 4 and r["accuracy"] == pytest.approx(np.mean(got))
    acc = [r["accuracy"] for r in e["rows"]]
    assert e["spearman"]["routes_2"]["rho"] == pytest.approx(spearmanr([r["routes_2"] for r in e["rows"]], acc).statistic)
    (fixed,) = e["against_fixed"]
    assert fixed["baseline"] == "bigbird" and fixed["seeds"] == list(range(16))
    base = [np.mean([json.loads(x)["accuracy"] for x in (next(folder.glob(f"bigbird-s{s}-*")) / "per_example.jsonl")
                     .read_text().splitlines() if '"distance_bucket": "[128, 256)"' in x]) for s in range(16)]
    pc = paired_compare(acc, base)
    assert fixed["diff"] == pytest.approx(pc.diff.estimate) and fixed["p"] == pytest.approx(pc.test.p)
    assert fixed["mean_baseline"] == pytest.approx(far["bigbird"]["accuracy"])


def test_mqar_draw_spread_agrees_with_the_trained_draws():
    """scripts/mqar_reach.py --draws: seed 0 in both layers is study_mqar_long's bigbird, seeds (0, 1) per
    layer its bigbird_layers; their rows equal those runs' by_distance rows at 128-255 tokens."""
    script = _script("mqar_reach")
    folder = ROOT / "results" / "study_mqar_long"
    rows = script.draw_spread(folder, "(local(18) | landmark(every=128) | random(2, block=16, seed={seed})) & causal",
                              [0, 1])
    assert [r["draws"] for r in rows] == [[0, 0], [1, 1], [0, 1]]
    committed = {r["label"]: r for r in json.loads((folder / "reach_by_distance.json").read_text())["by_distance"]
                 if r["lo"] == 128}
    for r, label in ((rows[0], "bigbird"), (rows[2], "bigbird_layers")):
        for key in ("attended", "reach_2", "routes_2"):
            assert r[key] == pytest.approx(committed[label][key]), (label, key)


def test_merge_partial_curves_prepends_the_lines_before_the_resumed_checkpoint(tmp_path):
    """scripts/merge_partial_curves.py: a run that resumed at its step-100 checkpoint without its folder
    began a new metrics.jsonl at step 150; the older copy's lines before 150 (those up to the checkpoint,
    and the validation at 100) go in front, its lines from 150 on (rewritten by the resumed run) do not;
    a run whose curve is whole, and a run the older copy lacks, stay as they are."""
    script = _script("merge_partial_curves")

    def write(path: Path, recs: list[dict]) -> None:
        path.mkdir(parents=True, exist_ok=True)
        (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))

    old, new = tmp_path / "old", tmp_path / "new"
    early = [{"step": s, "loss": 5.0 - s / 100} for s in (50, 100)] + [{"step": 100, "val_loss": 3.1}]
    write(old / "a", early + [{"step": 150, "loss": 9.9}])            # 150: logged before the stop
    write(new / "a", [{"step": 150, "loss": 3.4}, {"step": 200, "loss": 3.2}, {"step": 200, "val_loss": 3.0}])
    whole = early + [{"step": 150, "loss": 3.4}]
    write(old / "b", whole)
    write(new / "b", whole)
    write(new / "c", [{"step": 150, "loss": 3.4}])
    assert script.merge(old, new, dry_run=True) == [{"run": "a", "first_step": 150, "added": 3}]
    assert (new / "a" / "metrics.jsonl").read_text().count("\n") == 3             # a dry run writes nothing
    assert script.merge(old, new) == [{"run": "a", "first_step": 150, "added": 3}]
    got = [json.loads(x) for x in (new / "a" / "metrics.jsonl").read_text().splitlines()]
    assert got == early + [{"step": 150, "loss": 3.4}, {"step": 200, "loss": 3.2}, {"step": 200, "val_loss": 3.0}]
    assert [json.loads(x) for x in (new / "b" / "metrics.jsonl").read_text().splitlines()] == whole
    assert script.merge(old, new) == []                                            # done: nothing more to add


def test_bench_train_layouts_takes_saved_layouts_and_compiled_patterns(tmp_path):
    """scripts/bench_train_layouts.py's inputs (its timing needs a GPU): a folder's saved layouts, sorted by
    name, then each --pattern compiled here; a spec without NAME=PATTERN is refused."""
    import spattern as sp

    bench = _script("bench_train_layouts")
    sp.compile("local(100) & causal", 512, 512).save(tmp_path / "b_window.npz")
    sp.compile("(local(64) | sink(16)) & causal", 512, 512).save(tmp_path / "a_sink.npz")
    errors = []
    got = bench.layouts(str(tmp_path), ["lf=(local(64) | landmark(every=256)) & causal"], 512, errors.append)
    assert [n for n, _ in got] == ["a_sink", "b_window", "lf"] and not errors
    assert got[2][1].equals(sp.compile("(local(64) | landmark(every=256)) & causal", 512, 512))

    def error(msg):
        raise SystemExit(msg)
    with pytest.raises(SystemExit, match="--pattern: expected NAME=PATTERN, got 'nonsense'"):
        bench.layouts(None, ["nonsense"], 512, error)
    with pytest.raises(SystemExit):
        bench.main([])


def test_tree_agreement_of_the_text_and_ast_trees():
    """scripts/tree_agreement.py: the longest prefix that parses ends before a top-level line; code with a
    blank line between statements gives the text tree the AST's statement structure (outline's pairs all
    but identical: the spans differ only at line ends), while statements in one paragraph become its head's
    continuations in the text tree, pairs that the AST tree's outline does not have."""
    script = _script("tree_agreement")
    assert script.parsed_prefix("x = (1,\n 2)\ny = 3\nz = (\n") == len("x = (1,\n 2)\ny = 3\n")
    assert script.parsed_prefix("    return 1\n") == 0  # a window that starts inside a block: nothing parses
    spaced = "".join(f"def f{i}():\n    x = {i}\n\n    y = {i}\n\n\n" for i in range(40)) + "z = ("
    dense = "".join(f"def f{i}():\n    x = {i}\n    y = {i}\n    w = {i}\n" for i in range(40)) + "z = ("
    a, b = script.agreement(spaced, 16, 8, 1), script.agreement(dense, 16, 8, 1)
    assert a["chars"] == len(spaced) - len("z = (") and a["jaccard"] > 0.99
    assert b["jaccard"] < a["jaccard"] - 0.02 and b["text_beyond_window_in_ast"] < 0.95 < b["ast_beyond_window_in_text"]
    assert script.agreement("x = 1\n", 16, 8, 1) is None  # shorter than the window: nothing to compare


def test_fragment_agreement_of_a_window_tree_and_the_whole_files(tmp_path):
    """scripts/fragment_agreement.py: identical key ends agree fully; windows of a file cut anywhere give the
    fragment tree a higher agreement with the whole file's statement tree than the text tree has; the
    JSON holds a row per window."""
    import json

    script = _script("fragment_agreement")
    import numpy as np

    e = np.array([5, 9, 9, 10])
    assert script.pair_agreement(e, e, 2) == {"jaccard": 1.0, "recall_beyond_window": 1.0,
                                              "precision_beyond_window": 1.0}
    body = "".join(f"def f{i}(a,\n       b):\n    x = [a,\n         b]\n    y = x\n    return y\n\n"
                   for i in range(60))
    (tmp_path / "m.py").write_text(body)
    out = tmp_path / "a.json"
    assert script.main(["--root", str(tmp_path), "--files", "1", "--per-file", "4", "--chars", "600",
                        "--window", "16", "--header", "8", "--json", str(out)]) == 0
    got = json.loads(out.read_text())
    assert got["windows"] == 4 and len(got["rows"]) == 4
    s = got["summary"]
    assert s["fragment"]["jaccard"]["median"] > s["text"]["jaccard"]["median"]
    assert script.main(["--root", str(tmp_path / "none")]) == 1  # no file: says so
