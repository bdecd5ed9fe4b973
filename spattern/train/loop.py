"""The training loop: every model, pattern and corpus goes through `train(config)`.

AdamW, linear warm-up + cosine decay, bf16 autocast on CUDA, gradient clipping and accumulation,
checkpoint + exact resume, periodic validation loss/perplexity, metrics as JSON lines, a progress
bar with tokens/s, fixed and recorded seeds, DDP when started by torchrun (NCCL on GPUs, gloo on
CPUs). Until a backward kernel exists, patterned layers on CUDA train through FlexAttention
("flex") when it works, else the torch reference; the backend used is recorded in run.json.
"""
from __future__ import annotations

import json
import math
import os
import platform
import random
import subprocess
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from ..data.cache import cache_dir
from ..data.packing import PackedSequences, sample_indices
from ..data.prepare import PreparedData, PrepareSettings, prepare
from ..models.attention import per_layer_patterns
from ..models.config import get_config
from ..models.decoder import DecoderLM


def lr_at(step: int, total: int, warmup: int, lr: float, min_ratio: float) -> float:
    """Linear warm-up over `warmup` steps, then cosine from lr to lr * min_ratio at `total`."""
    if warmup > 0 and step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def resolve_backend(backend: str, device: torch.device, patterns: list) -> str:
    """The backend patterned layers train with: 'auto' on CUDA -> flex if importable, else reference
    (the CuPy kernels have no backward yet); 'auto' on CPU -> reference."""
    if all(p is None for p in patterns):
        return "sdpa"
    if backend != "auto":
        return backend
    if device.type == "cuda":
        try:
            import spattern.runtime.flex  # noqa: F401, PLC0415

            return "flex"
        except Exception:  # noqa: BLE001 (any import failure means: not usable)
            return "reference"
    return "reference"


def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")), world


def _device(choice: str, local_rank: int) -> torch.device:
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda":
        return torch.device("cuda", local_rank)
    return torch.device(choice)


def _git_rev() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def load_data(cfg: dict, log=print) -> PreparedData:
    d = cfg["data"]
    if d.get("path"):
        return PreparedData(d["path"])
    settings = PrepareSettings(corpus=d["corpus"], tokenizer=d["tokenizer"], vocab_size=int(d["vocab_size"]),
                               max_docs=d.get("max_docs"))
    return PreparedData(prepare(settings, log=log))


def build_from_config(cfg: dict, vocab_size: int) -> DecoderLM:
    m = dict(cfg["model"])
    preset = m.pop("preset")
    if "block" in m:
        m["block"] = tuple(m["block"])
    m.setdefault("vocab_size", vocab_size)
    seq_len = int(cfg["data"]["seq_len"])
    mc = get_config(preset, **m)
    if mc.max_seq_len < seq_len:
        mc.max_seq_len = seq_len
    if mc.vocab_size < vocab_size:
        raise ValueError(f"model.vocab_size: expected >= the tokenizer's {vocab_size}, got {mc.vocab_size}")
    return DecoderLM(mc)


class _Progress:
    def __init__(self, total: int, initial: int, enabled: bool) -> None:
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm  # noqa: PLC0415

                self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)
            except ImportError:
                pass

    def update(self, **postfix) -> None:
        if self.bar is not None:
            self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: PackedSequences, n_batches: int, batch_size: int,
             device: torch.device, autocast) -> float:
    """Mean next-token loss over the first n_batches * batch_size validation chunks (fixed)."""
    model.eval()
    total, count = 0.0, 0
    n = min(len(data), n_batches * batch_size)
    for start in range(0, n, batch_size):
        chunk = torch.from_numpy(data.batch(np.arange(start, min(n, start + batch_size)))).to(device)  # (B, L+1)
        with autocast():
            _, loss = model(chunk[:, :-1], chunk[:, 1:])
        total += loss.item() * chunk.shape[0]
        count += chunk.shape[0]
    model.train()
    return total / max(count, 1)


def set_indexer_mode(model, mode):
    from spattern.indexer.train import set_mode  # noqa: PLC0415

    set_mode(model, mode)


def indexer_aux_loss(model):
    from spattern.indexer.train import aux_loss  # noqa: PLC0415

    return aux_loss(model)


def indexer_stats(model) -> dict:
    from spattern.indexer.train import mean_stats  # noqa: PLC0415

    return mean_stats(model)


def train(cfg: dict, log=print) -> dict:
    """Run (or resume) one training run; returns a summary (final losses, tokens/s, paths)."""
    t_cfg, d_cfg = cfg["train"], cfg["data"]
    rank, local_rank, world = _dist_info()
    device = _device(t_cfg["device"], local_rank)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    is_main = rank == 0
    log = log if is_main else (lambda *a, **k: None)

    seed = int(t_cfg["seed"])
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # same on every rank: identical initial weights (DDP also broadcasts them)

    if world > 1 and not is_main:
        dist.barrier()  # rank 0 prepares (or finds) the data first
    data = load_data(cfg, log)
    if world > 1 and is_main:
        dist.barrier()
    seq_len = int(d_cfg["seq_len"])
    train_seqs = PackedSequences(data.stream("train"), seq_len)
    val_seqs = PackedSequences(data.stream("validation"), seq_len)
    model = build_from_config(cfg, data.vocab_size).to(device)
    patterns = per_layer_patterns(model.cfg.pattern, model.cfg.n_layers)
    backend = resolve_backend(model.cfg.backend, device, patterns)
    if backend != "sdpa":
        model.set_pattern(model.cfg.pattern, backend)

    i_cfg = cfg.get("indexer") or {}
    indexed = int(i_cfg.get("k", 0)) > 0
    if indexed:  # before the optimizer, so that it holds the indexers' parameters too
        from spattern.indexer.train import attach_indexers  # noqa: PLC0415

        layers = i_cfg["layers"]
        attach_indexers(model, int(i_cfg["k"]), layers=None if layers == "all" else list(layers),
                        block=tuple(i_cfg["block"]), n_heads=int(i_cfg["n_heads"]),
                        head_dim=int(i_cfg["head_dim"]), sink=int(i_cfg["sink"]), local=int(i_cfg["local"]),
                        backend=backend if backend != "sdpa" else "auto")
        model.to(device)
        backend = f"indexer-topk({backend})"

    use_bf16 = t_cfg["dtype"] == "bf16" or (t_cfg["dtype"] == "auto" and device.type == "cuda")
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use_bf16 else nullcontext
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": float(t_cfg["weight_decay"])},
                             {"params": no_decay, "weight_decay": 0.0}], lr=float(t_cfg["lr"]),
                            betas=(float(t_cfg["beta1"]), float(t_cfg["beta2"])),
                            fused=device.type == "cuda")

    name = cfg["name"]
    out_dir = Path(t_cfg["out_dir"] or cache_dir("runs", name, create=False))
    ckpt_dir = Path(t_cfg["ckpt_dir"] or cache_dir("checkpoints", name, create=False))
    ckpt_path = ckpt_dir / "ckpt.pt"
    metrics_path = out_dir / "metrics.jsonl"
    step = 0
    if t_cfg["resume"] and ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step = int(state["step"])
        log(f"[train] resumed {name} at step {step} from {ckpt_path}")
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        _truncate_metrics(metrics_path, step)

    raw_model = model
    if t_cfg["compile"]:
        model = torch.compile(model)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP  # noqa: PLC0415

        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)

    steps, n_micro, bs = int(t_cfg["steps"]), int(t_cfg["grad_accum"]), int(t_cfg["batch_size"])
    tokens_per_step = bs * seq_len * n_micro * world
    run_info = {"name": name, "config": cfg, "seed": seed, "backend": backend, "patterns": patterns,
                "device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
                else platform.processor() or platform.machine(), "world_size": world,
                "dist_backend": dist.get_backend() if dist.is_initialized() else None,
                "autocast_bf16": use_bf16, "params": raw_model.num_params(),
                "params_non_embedding": raw_model.num_params(non_embedding=True),
                "tokens_per_step": tokens_per_step, "data": {"folder": str(data.folder), **data.meta},
                "torch": torch.__version__, "python": platform.python_version(), "git": _git_rev()}
    if is_main:
        _atomic_write(out_dir / "run.json", json.dumps(run_info, indent=1, default=str))
        log(f"[train] {name}: {run_info['params'] / 1e6:.2f}M params, backend {backend}, device {device}, "
            f"world {world}, {tokens_per_step} tokens/step, train {len(train_seqs)} seqs of {seq_len}")

    def save_ckpt(at: int) -> None:
        if not is_main:
            return
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save({"model": raw_model.state_dict(), "optimizer": opt.state_dict(), "step": at,
                    "model_config": raw_model.cfg.to_dict(), "config": cfg}, tmp)
        os.replace(tmp, ckpt_path)

    def emit(rec: dict) -> None:
        if is_main:
            with open(metrics_path, "a") as fh:
                fh.write(json.dumps(rec) + "\n")

    model.train()
    progress = _Progress(steps, step, is_main and t_cfg["progress"])
    t_start = time.time()
    t_last, tokens_since, last_loss, val_loss, first_loss = time.time(), 0, float("nan"), None, None
    log_every, eval_every, ckpt_every = int(t_cfg["log_every"]), int(t_cfg["eval_every"]), int(t_cfg["ckpt_every"])
    max_seconds = float(t_cfg.get("max_seconds") or 0)
    while step < steps:
        lr = lr_at(step, steps, int(t_cfg["warmup"]), float(t_cfg["lr"]), float(t_cfg["min_lr_ratio"]))
        for g in opt.param_groups:
            g["lr"] = lr
        loss_sum = torch.zeros((), device=device)
        if indexed:  # stage 1 (dense warm-up): the indexers alone learn their KL; stage 2: sparse
            warm = step < int(i_cfg["warmup_steps"])
            set_indexer_mode(raw_model, "dense" if warm else "sparse")
        for micro in range(n_micro):
            idx = sample_indices(step, micro, n_micro, rank, world, bs, len(train_seqs), seed)
            batch = torch.from_numpy(train_seqs.batch(idx)).to(device, non_blocking=True)  # (B, L+1)
            sync = nullcontext() if (world == 1 or micro == n_micro - 1) else model.no_sync()
            with sync:
                with autocast():
                    _, loss = model(batch[:, :-1], batch[:, 1:])
                total = loss
                if indexed:
                    kl = indexer_aux_loss(raw_model)
                    w = float(i_cfg["aux_weight"])
                    total = w * kl if warm else loss + w * kl  # warm-up: only the indexers' KL
                (total / n_micro).backward()
            loss_sum += loss.detach()
        gnorm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), float(t_cfg["grad_clip"]))
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        tokens_since += tokens_per_step
        if step % log_every == 0 or step == steps or step == 1:
            if world > 1:
                dist.all_reduce(loss_sum, op=dist.ReduceOp.AVG)
            last_loss = loss_sum.item() / n_micro
            first_loss = last_loss if first_loss is None else first_loss
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            now = time.time()
            tps = tokens_since / max(now - t_last, 1e-9)
            t_last, tokens_since = now, 0
            rec = {"step": step, "loss": round(last_loss, 5), "lr": lr, "grad_norm": round(float(gnorm), 4),
                   "tokens": step * tokens_per_step, "tok_per_s": round(tps, 1), "time": round(now - t_start, 2)}
            if indexed:  # selection statistics: density, dense-attention mass kept, top-mass overlap
                rec["indexer_stage"] = "dense-warmup" if warm else "sparse"
                rec["indexer_kl"] = round(float(indexer_aux_loss(raw_model).detach()), 5)
                rec.update({f"indexer_{k}": round(v, 5) for k, v in indexer_stats(raw_model).items()})
            emit(rec)
        stop = bool(max_seconds) and time.time() - t_start > max_seconds and step < steps
        if (eval_every and step % eval_every == 0) or step == steps or stop:
            if is_main:
                val_loss = evaluate(raw_model, val_seqs, int(t_cfg["eval_batches"]), bs, device, autocast)
                emit({"step": step, "val_loss": round(val_loss, 5), "val_ppl": round(math.exp(min(val_loss, 50)), 3),
                      "time": round(time.time() - t_start, 2)})
                t_last = time.time()  # evaluation time is not training throughput
            if world > 1:
                dist.barrier()
        if (ckpt_every and step % ckpt_every == 0) or step == steps or stop:
            save_ckpt(step)
        progress.update(loss=f"{last_loss:.3f}", lr=f"{lr:.1e}",
                        tok_s=f"{(tokens_per_step * step) / max(time.time() - t_start, 1e-9):.0f}")
        if stop:
            log(f"[train] stopping at step {step}: max_seconds={max_seconds} reached")
            break
    progress.close()
    elapsed = time.time() - t_start
    summary = {"name": name, "step": step, "first_loss": first_loss, "final_loss": last_loss,
               "val_loss": val_loss, "backend": backend, "seconds": round(elapsed, 2),
               "metrics": str(metrics_path), "checkpoint": str(ckpt_path), "out_dir": str(out_dir)}
    if is_main:
        _atomic_write(out_dir / "summary.json", json.dumps(summary, indent=1))
        log(f"[train] done: loss {first_loss} -> {last_loss}, val {val_loss}, {elapsed:.1f}s")
    return summary


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines past the checkpoint being resumed (or all of them on a fresh start)."""
    if not path.is_file():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= step]
    _atomic_write(path, "".join(ln + "\n" for ln in keep))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> DecoderLM:
    """A trained model back from a checkpoint written by `train`."""
    from ..models.config import ModelConfig  # noqa: PLC0415

    state = torch.load(path, map_location=device, weights_only=False)
    mc = dict(state["model_config"])
    mc["block"] = tuple(mc["block"])
    model = DecoderLM(ModelConfig(**mc)).to(device)
    model.load_state_dict(state["model"])
    return model.eval()
