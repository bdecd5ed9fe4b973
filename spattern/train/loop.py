"""The training loop: every model, pattern and corpus goes through `train(config)`.

AdamW, linear warm-up + cosine decay, bf16 autocast on CUDA, gradient clipping and accumulation,
checkpoint + exact resume, periodic validation loss/perplexity, metrics as JSON lines, a progress
bar with tokens/s, fixed and recorded seeds, DDP when started by torchrun (NCCL on GPUs, gloo on
CPUs). Patterned layers run through ``spattern.attention`` with the configured backend (``auto``:
the CUDA kernels where they run, else FlexAttention, else the torch reference).

Under torchrun (``spattern.distributed``): ``train.parallel = "fsdp"`` shards parameters and
optimizer state with FSDP2 and checkpoints with torch.distributed.checkpoint into
``<ckpt_dir>/dcp`` (+ ``dcp.json``: step, elapsed seconds), which resume on any number of ranks
(also in one process); the finished model is also written whole to ``ckpt.pt``.
``train.context_parallel = cp`` makes a (dp, cp) mesh of the world: dp groups read their batches by
dp rank; the cp ranks of a group hold the shards of the same sequences (``cp_sharding``, default
zigzag), attention layers exchange the key/value blocks their layout needs
(``context_parallel_attention``; dense layers use the layout of ``causal``), rotary uses the
shard's global positions, and the loss is ``context_parallel_loss``: the gradients are those of
one process training the dp groups' batches together.

A run directory (``train.out_dir``) holds (docs/design.md, "Runs"):

- ``config.toml``       the resolved config
- ``env.json``          git revision, versions, device (``spattern.utils.env``) and the run's facts
                        (backend, parameters, tokens per step, data)
- ``metrics.jsonl``     one strict-JSON line per logged step and per validation
- ``metrics.json``      the summary: status (running / stopped / finished), first and final loss,
                        validation loss, steps, total seconds over every resumed segment
- ``per_example.jsonl`` the final validation loss of each validation sequence (paired comparisons),
                        then of each validation file the scored sequences hold (``file_loss``, the
                        mean over its scored tokens, and ``file_tokens``; ``DocumentLosses``);
                        with ``data.corpus = "mqar"`` each held-out MQAR sequence's accuracy and loss
                        (``spattern.train.mqar``; training batch i is a pure function of i)

Results are never lost: checkpoints are written atomically about every tenth of the run and at the
end; a finished run started again is left alone; a resumed run drops only the metric lines written
after its checkpoint (and says so); a torn last line (a kill during a write) is dropped.
"""
from __future__ import annotations

import hashlib
import math
import os
import platform
import random
import time
from contextlib import ExitStack, nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from ..data.cache import cache_dir
from ..data.packing import DocumentLosses, PackedSequences, sample_indices
from ..data.prepare import PreparedData, PrepareSettings, prepare
from ..models.attention import per_layer_patterns
from ..models.config import get_config
from ..models.decoder import DecoderLM
from ..utils.env import capture_env
from ..utils.errors import UserError
from ..utils.io import (append_jsonl, atomic_save, atomic_write_text, dumps_strict, read_json, read_jsonl,
                        write_json)
from .config import TrainConfig, to_toml
from .mqar import MQARSource


def lr_at(step: int, total: int, warmup: int, lr: float, min_ratio: float) -> float:
    """Linear warm-up over `warmup` steps, then cosine from lr to lr * min_ratio at `total`."""
    if warmup > 0 and step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def resolve_backend(backend: str, device: torch.device, patterns: list) -> str:
    """The backend patterned layers train with ("sdpa" when every layer is dense). ``auto`` is
    decided per call by ``spattern.attention`` from the backends' declarations."""
    if all(p is None for p in patterns):
        return "sdpa"
    return backend


def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")), world


def _device(choice: str, local_rank: int) -> torch.device:
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda":
        return torch.device("cuda", local_rank)
    return torch.device(choice)


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host batch on ``device``; on CUDA through pinned memory and without blocking (a copy from
    pageable memory may hold the host until the GPU's queue has drained).

    The host copy into the pinned buffer is numpy's, on this thread. ``t.pin_memory()`` copies with
    torch's CPU thread pool once a tensor has more than 32,768 elements (an 8 x 4,097 batch has 32,776),
    and the pool's OpenMP threads then spin-wait on their cores for milliseconds after each copy: 90-150 ms
    of CPU a step of the study's 20M model, which cost outline's step 11-22% on a slow GPU host and under 2%
    on a quiet one (``scripts/bench_train_step.py``'s ``_tpin`` modes, notes/study.md). Torch's caching host
    allocator keeps the pinned buffer until the copy has run."""
    if device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    src = t.numpy() if t.dtype in _NUMPY_DTYPES and not t.requires_grad else None
    if src is None:  # a dtype numpy lacks (bf16): torch's copy
        return t.pin_memory().to(device, non_blocking=True)
    host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    np.copyto(host.numpy(), src)
    return host.to(device, non_blocking=True)


_NUMPY_DTYPES = (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8, torch.bool, torch.float32,
                 torch.float64, torch.float16)


def as_config(cfg) -> TrainConfig:
    """A TrainConfig from itself or from its dict form (checkpoints store the dict)."""
    return cfg if isinstance(cfg, TrainConfig) else TrainConfig.model_validate(cfg)


def load_data(cfg, log=print) -> PreparedData:
    d = as_config(cfg).data
    if d.corpus == "mqar":
        raise UserError('data.corpus = "mqar": the task is generated (spattern.data.mqar); it has no prepared '
                        'data or tokenizer')
    if d.path:
        return PreparedData(d.path)
    settings = PrepareSettings(corpus=d.corpus, tokenizer=d.tokenizer, vocab_size=d.vocab_size, max_docs=d.max_docs)
    return PreparedData(prepare(settings, log=log))


def build_from_config(cfg, vocab_size: int) -> DecoderLM:
    cfg = as_config(cfg)
    m = cfg.model.overrides()
    m.setdefault("vocab_size", vocab_size)
    seq_len = cfg.data.seq_len
    mc = get_config(cfg.model.preset, **m)
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
             device: torch.device, autocast, per_sequence: bool = False, before=None, files=None):
    """Mean next-token loss over the first n_batches * batch_size validation chunks (fixed, so the
    same chunks are scored in every run on the same data). With ``per_sequence``, also the mean
    loss of each chunk ({chunk index: loss}), for paired comparisons. ``before(x)`` runs before
    each forward (``sequence_contexts``); ``files`` (a ``DocumentLosses``) gets every token's loss,
    summed per document of the stream."""
    model.eval()
    per: dict[int, float] = {}
    n = min(len(data), n_batches * batch_size)
    for start in range(0, n, batch_size):
        idx = np.arange(start, min(n, start + batch_size))
        chunk = torch.from_numpy(data.batch(idx)).to(device)  # (B, L+1)
        if before is not None:
            before(chunk[:, :-1])
        with autocast():
            _, nll = model(chunk[:, :-1], chunk[:, 1:], reduction="none")  # (B, L)
        for i, v in zip(idx.tolist(), nll.float().mean(dim=1).tolist()):
            per[i] = v
        if files is not None:
            files.add(idx, nll.float().cpu().numpy())
    model.train()
    mean = sum(per.values()) / max(len(per), 1)
    return (mean, per) if per_sequence else mean


def sequence_contexts(model, tokenizer, workers: int = 0, transport: str | None = None, cpus: str | None = None):
    """For a model with a content-dependent pattern (outline): a ``ContextPrefetch`` that builds
    one context per sequence (``spattern.data.structure``: the outline tree of the text the ids
    spell, and its layouts) ahead of the forward that needs it, in ``workers`` processes (0: on
    demand, in this process; ``transport``: how their results come back, default "pipe"; ``cpus``:
    where the workers run, default "shared"); None for every other model."""
    if not getattr(model, "needs_contexts", False):
        return None
    from spattern.train.contexts import ContextPrefetch  # noqa: PLC0415

    return ContextPrefetch(model, tokenizer, workers, transport or "pipe", cpus or "shared")


def prefetch_depth(workers: int) -> int:
    """Micro-batches whose contexts are queued ahead of the one that trains: one per worker and one
    more, so that every worker is busy. With depth d a batch is queued d steps before its use, so a
    step can be no shorter than (build time of one batch) / d: at the former fixed depth 2, outline at
    4K on the H200 was held at 117 ms per step while its GPU work took about 45 ms."""
    return max(2, workers + 1)


def context_workers(choice: int | None, device: torch.device) -> int:
    """``train.context_workers``: None = 0 on the CPU (the cores train), else up to 8 (one core left)."""
    if choice is not None:
        return choice
    return 0 if device.type == "cpu" else max(1, min(8, (os.cpu_count() or 2) - 1))


def set_indexer_mode(model, mode):
    from spattern.indexer.train import set_mode  # noqa: PLC0415

    set_mode(model, mode)


def indexer_aux_loss(model):
    from spattern.indexer.train import aux_loss  # noqa: PLC0415

    return aux_loss(model)


def indexer_stats(model) -> dict:
    from spattern.indexer.train import mean_stats  # noqa: PLC0415

    return mean_stats(model)


def indexer_collect(model):
    from spattern.indexer.train import collect_stats  # noqa: PLC0415

    return collect_stats(model)


def _dir_key(out_dir: Path) -> str:
    """A run directory as its checkpoint's key: a relative one normalised as written, an absolute one resolved."""
    return os.path.normpath(out_dir) if not out_dir.is_absolute() else str(out_dir.resolve())


def run_paths(cfg: TrainConfig) -> tuple[Path, Path]:
    """(run directory, checkpoint file) of a config."""
    t = cfg.train
    out_dir = Path(t.out_dir or cache_dir("runs", cfg.name, create=False))
    # default checkpoints: per name, and per run directory when one is given (two runs of one name in
    # different directories must not resume from each other's checkpoint). A relative run directory (an
    # experiment's results/<experiment>/<run>) is keyed as written, so that the same project checked out
    # elsewhere, or on another machine with the checkpoint carried over (scripts/study_gpu.sh), resumes it;
    # an absolute one by its resolved path.
    where = cfg.name if not t.out_dir else \
        f"{cfg.name}-{hashlib.sha256(_dir_key(out_dir).encode()).hexdigest()[:10]}"
    ckpt_dir = Path(t.ckpt_dir or cache_dir("checkpoints", where, create=False))
    return out_dir, ckpt_dir / "ckpt.pt"


def finished_summary(cfg: TrainConfig) -> dict | None:
    """The summary of this config's run if it already finished, else None. A finished run of a
    *different* config in the same directory is an error (results are never overwritten)."""
    out_dir, _ = run_paths(cfg)
    summary_path = out_dir / "metrics.json"
    if not summary_path.is_file():
        return None
    try:
        summary = read_json(summary_path)
    except ValueError:
        return None
    if summary.get("status") != "finished":
        return None
    stored = (out_dir / "config.toml").read_text() if (out_dir / "config.toml").is_file() else None
    if stored is not None and stored != to_toml(cfg):
        raise UserError(f"{out_dir} holds a finished run of a different config; choose another train.out_dir "
                        f"(or name), or run with --new-run to train into a fresh directory")
    return summary


def new_run_dir(cfg: TrainConfig) -> TrainConfig:
    """The same config pointed at a fresh run directory (``<out_dir>-2``, ``-3``, ...) and fresh
    checkpoints: how a finished run is trained again without touching its results."""
    out_dir, ckpt = run_paths(cfg)
    n = 2
    while Path(f"{out_dir}-{n}").exists():
        n += 1
    new_out = Path(f"{out_dir}-{n}")
    inside = ckpt.parent.resolve().is_relative_to(out_dir.resolve())
    new_ckpt = new_out / ckpt.parent.resolve().relative_to(out_dir.resolve()) if inside else Path(f"{ckpt.parent}-{n}")
    t = cfg.train.model_copy(update={"out_dir": str(new_out), "ckpt_dir": str(new_ckpt)})
    return cfg.model_copy(update={"train": t})


def _load_checkpoint_state(path: Path, device) -> dict:
    if not Path(path).is_file():
        raise UserError(f"checkpoint: expected a file written by `spattern train`, got {path} (no such file)")
    try:
        return torch.load(path, map_location=device, weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling/zip error: the file is damaged
        raise UserError(f"checkpoint {path} is damaged and cannot be read ({type(e).__name__}: {e}); "
                        f"delete it to start over, or set train.resume=false") from None


def _jsonl_line(rec: dict) -> str:
    return dumps_strict(rec, indent=None) + "\n"


def _restore_metrics(path: Path, step: int, log) -> list[dict]:
    """The metric records up to ``step`` (the checkpoint being resumed). Lines past it are dropped
    (they were written after the checkpoint and will be written again), and a torn last line is
    dropped; both are reported. With no checkpoint (step 0), earlier lines are moved aside, not
    deleted."""
    if not path.is_file():
        return []
    recs = read_jsonl(path, on_torn=lambda m: log(f"[train] {m}"), repair=True)
    if step == 0:
        if recs:
            n = 1
            while path.with_name(f"{path.name}.stale-{n}").exists():
                n += 1
            stale = path.with_name(f"{path.name}.stale-{n}")
            os.replace(path, stale)
            log(f"[train] no checkpoint to resume: the {len(recs)} earlier metric lines were moved to {stale}")
        return []
    keep = [r for r in recs if int(r.get("step", 0)) <= step]
    if len(keep) < len(recs):
        log(f"[train] resuming at step {step}: dropped {len(recs) - len(keep)} metric lines written after "
            f"that checkpoint (they are recomputed)")
        atomic_write_text(path, "".join(_jsonl_line(r) for r in keep))
    return keep


def train(cfg, log=print, new_run: bool = False) -> dict:
    """Run, resume, or recognise as finished one training run; returns its summary (also in
    ``metrics.json``). ``new_run=True`` trains a finished config again into a new directory.

    Under torchrun, a process group this call creates is also destroyed by it, before the
    interpreter exits: left to interpreter teardown, gloo's threads can abort a rank after the
    run finished ("terminate called without an active exception")."""
    owns_group = _dist_info()[2] > 1 and not dist.is_initialized()
    try:
        with ExitStack() as closing:  # what the run opened (the context pool), closed after an error too
            summary = _train(cfg, log, new_run, closing)
        if owns_group and dist.is_initialized():
            dist.barrier()  # no rank tears its connections down while another still uses them
        return summary
    finally:  # after an error too (then without the barrier: the other ranks may never reach it)
        if owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg, log, new_run: bool, closing: ExitStack) -> dict:
    cfg = as_config(cfg)
    if new_run and finished_summary(cfg) is not None:
        cfg = new_run_dir(cfg)
    t_cfg, d_cfg = cfg.train, cfg.data
    rank, local_rank, world = _dist_info()
    is_main = rank == 0
    parallel, cp = t_cfg.parallel or "ddp", t_cfg.context_parallel or 1
    if world % cp:
        raise UserError(f"train.context_parallel: expected a divisor of the number of processes {world}, got {cp}")
    dp = world // cp
    fsdp = parallel == "fsdp" and world > 1
    log = log if is_main else (lambda *a, **k: None)
    done = finished_summary(cfg)
    if done is not None:
        log(f"[train] {cfg.name}: already finished ({done.get('step')} steps) in {run_paths(cfg)[0]}; "
            f"nothing to do (--new-run trains it again into a new directory)")
        return done
    device = _device(t_cfg.device, local_rank)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"train.device: expected a device this machine has, got {t_cfg.device!r} "
                        f"(torch {torch.__version__} sees no CUDA device)")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dp_rank, cp_rank, cp_group, shard_mesh = rank, 0, None, None
    if fsdp or cp > 1:  # a (dp, cp) mesh: batches by dp rank, sequence shards by cp rank
        from spattern.distributed.training import make_mesh  # noqa: PLC0415

        mesh, shard_mesh = make_mesh(dp, cp, device.type)
        dp_rank, cp_rank, cp_group = mesh.get_local_rank("dp"), mesh.get_local_rank("cp"), mesh.get_group("cp")

    seed = t_cfg.seed
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # same on every rank: identical initial weights (DDP also broadcasts them)

    seq_len = d_cfg.seq_len
    mqar = MQARSource(cfg) if d_cfg.corpus == "mqar" else None  # generated batches: nothing to prepare
    if mqar is not None:
        if cp > 1:
            raise UserError(f'train.context_parallel: expected 1 with data.corpus = "mqar", got {cp}')
        vocab_size, data_info, n_train = mqar.vocab_size, mqar.meta, "generated"
    else:
        if world > 1 and not is_main:
            dist.barrier()  # rank 0 prepares (or finds) the data first
        data = load_data(cfg, log)
        if world > 1 and is_main:
            dist.barrier()
        train_seqs = PackedSequences(data.stream("train"), seq_len)
        val_seqs = PackedSequences(data.stream("validation"), seq_len)
        val_files = data.offsets("validation"), data.doc_ids("validation")  # for the per-file losses
        if len(train_seqs) == 0 or len(val_seqs) == 0:
            raise UserError(f"data: the corpus has too few tokens for data.seq_len={seq_len} "
                            f"({len(train_seqs)} train and {len(val_seqs)} validation sequences)")
        vocab_size, data_info, n_train = data.vocab_size, {"folder": str(data.folder), **data.meta}, len(train_seqs)
    model = build_from_config(cfg, vocab_size).to(device)
    n_workers = context_workers(t_cfg.context_workers, device)
    prefetch = None if mqar is not None else sequence_contexts(model, data.tokenizer(), n_workers,
                                                               t_cfg.context_transport, t_cfg.context_cpus)
    if prefetch is not None:  # its workers, spool and CPU placement go with the run, however it ends
        closing.callback(prefetch.close)
    depth = prefetch_depth(n_workers)  # micro-batches whose contexts are queued ahead of the one that trains
    if getattr(model, "needs_contexts", False) and (mqar is not None or cp > 1):
        raise UserError(f"model.pattern: a content-dependent pattern ({model.cfg.pattern!r}) needs text "
                        "(not data.corpus = 'mqar') and train.context_parallel = 1")
    patterns = per_layer_patterns(model.cfg.pattern, model.cfg.n_layers)
    backend = resolve_backend(model.cfg.backend, device, patterns)
    if backend != "sdpa":
        model.set_pattern(model.cfg.pattern, backend)

    i_cfg = cfg.indexer
    indexed = i_cfg.k > 0
    if indexed:  # before the optimizer, so that it holds the indexers' parameters too
        from spattern.indexer.train import attach_indexers  # noqa: PLC0415

        attach_indexers(model, i_cfg.k, layers=None if i_cfg.layers == "all" else list(i_cfg.layers),
                        block=tuple(i_cfg.block), n_heads=i_cfg.n_heads, head_dim=i_cfg.head_dim,
                        sink=i_cfg.sink, local=i_cfg.local, backend=backend if backend != "sdpa" else "auto")
        model.to(device)
        backend = f"indexer-topk({backend})"
    sharding = _cp_sharding(cfg, model, cp, indexed) if cp > 1 else None
    if sharding is not None and backend == "sdpa":  # dense layers: the causal layout, through spattern.attention
        backend = model.cfg.backend
    if fsdp:  # before the optimizer: it must hold the sharded (DTensor) parameters
        from spattern.distributed.training import fully_shard_model  # noqa: PLC0415

        fully_shard_model(model, mesh=shard_mesh)

    use_bf16 = t_cfg.dtype == "bf16" or (t_cfg.dtype == "auto" and device.type == "cuda")
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use_bf16 else nullcontext
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": t_cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=t_cfg.lr,
                            betas=(t_cfg.beta1, t_cfg.beta2),
                            **({"foreach": True, "fused": False} if fsdp else {"fused": device.type == "cuda"}))

    name = cfg.name
    out_dir, ckpt_path = run_paths(cfg)
    metrics_path = out_dir / "metrics.jsonl"
    step, elapsed_before = 0, 0.0
    use_dcp = parallel == "fsdp"  # sharded checkpoints (torch.distributed.checkpoint): any number of ranks
    dcp_dir = ckpt_path.parent / "dcp"
    # a kill between _save_dcp's two renames leaves the previous checkpoint as dcp.old
    dcp_src = next((p for p in (dcp_dir, dcp_dir.with_name("dcp.old")) if (p / ".metadata").is_file()), None)
    if use_dcp and t_cfg.resume and dcp_src is not None:
        from spattern.distributed.training import load_checkpoint as load_dcp  # noqa: PLC0415

        step = load_dcp(dcp_src, model, opt)  # collective: every rank reads its shards
        meta = dcp_dir.with_name("dcp.json")
        elapsed_before = float(read_json(meta).get("elapsed", 0.0)) if meta.is_file() else 0.0
        log(f"[train] resumed {name} at step {step} from {dcp_src} (world {world})")
    elif not use_dcp and t_cfg.resume and ckpt_path.is_file():
        state = _load_checkpoint_state(ckpt_path, device)
        stored = as_config(state["config"]) if state.get("config") else None
        if stored is not None and (stored.model != cfg.model or stored.data != cfg.data):
            raise UserError(f"checkpoint {ckpt_path} holds a run with another model or data config; set "
                            "train.ckpt_dir (or train.resume=false) to start this one afresh")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step = int(state["step"])
        elapsed_before = float(state.get("elapsed", 0.0))
        log(f"[train] resumed {name} at step {step} from {ckpt_path}")
    earlier: list[dict] = []
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        earlier = _restore_metrics(metrics_path, step, log)

    raw_model = model
    if t_cfg.compile:
        model = torch.compile(model)
    if world > 1 and not fsdp:
        from torch.nn.parallel import DistributedDataParallel as DDP  # noqa: PLC0415

        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)

    steps, n_micro, bs = t_cfg.steps, t_cfg.grad_accum, t_cfg.batch_size
    tokens_per_step = bs * seq_len * n_micro * dp
    before_val = None

    def train_rows(g: int) -> np.ndarray:  # micro-batch g of the run (step * n_micro + micro): (B, L+1)
        s_g, m_g = divmod(g, n_micro)
        return train_seqs.batch(sample_indices(s_g, m_g, n_micro, dp_rank, dp, bs, len(train_seqs), seed))

    if prefetch is not None:
        # the workers take jobs in order: first the micro-batches after this run's first one (the
        # first one is built here, while the workers start), then the validation batches (fixed:
        # built once, kept for every evaluation, first needed at the first evaluation)
        g0 = step * n_micro
        queued = min(g0 + depth, steps * n_micro - 1)
        for g in range(g0 + 1, queued + 1):
            prefetch.ahead(train_rows(g)[:, :-1])
        n_val = min(len(val_seqs), t_cfg.eval_batches * bs)
        for start in range(0, n_val, bs):
            prefetch.ahead(val_seqs.batch(np.arange(start, min(n_val, start + bs)))[:, :-1])

        def before_val(x: torch.Tensor) -> None:
            raw_model.set_contexts(prefetch.get(x.cpu().numpy(), keep=True))
    run_info = {"name": name, "seed": seed, "backend": backend, "patterns": patterns,
                "device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
                else platform.processor() or platform.machine(), "world_size": world,
                "dist_backend": dist.get_backend() if dist.is_initialized() else None,
                "autocast_bf16": use_bf16, "params": raw_model.num_params(),
                "params_non_embedding": raw_model.num_params(non_embedding=True),
                "tokens_per_step": tokens_per_step, "data": data_info}
    if parallel != "ddp" or cp > 1:
        run_info.update(parallel=parallel, dp=dp, context_parallel=cp,
                        cp_sharding=sharding.strategy if sharding is not None else None)
    if is_main:
        atomic_write_text(out_dir / "config.toml", to_toml(cfg))
        write_json(out_dir / "env.json", capture_env(seed=seed, run=run_info))
        log(f"[train] {name}: {run_info['params'] / 1e6:.2f}M params, backend {backend}, device {device}, "
            f"world {world}, {tokens_per_step} tokens/step, train {n_train} seqs of {seq_len}; "
            f"writing {out_dir}")
        if indexed and step < i_cfg.warmup_steps and not i_cfg.warmup_train_lm:  # (not when resumed past it)
            log(f"[train] indexer warm-up of {i_cfg.warmup_steps} steps with the LM frozen (indexer.warmup_train_lm "
                "is not true): DeepSeek's warm-up of a pretrained model; this model starts from its initialisation, "
                "so its loss will not move until the sparse stage: set indexer.warmup_train_lm = true to train it")

    t_start = time.time()

    def elapsed() -> float:
        return elapsed_before + time.time() - t_start

    def save_ckpt(at: int) -> None:
        if use_dcp:
            meta = {"step": at, "elapsed": elapsed(), "world_size": world, "model_config": raw_model.cfg.to_dict(),
                    "config": cfg.model_dump(mode="json")}
            _save_dcp(dcp_dir, raw_model, opt, at, meta, is_main, world)
            if step == steps:  # the finished model also as one plain file (generate, perplexity)
                _save_full(ckpt_path, raw_model, meta, is_main, fsdp)
            return
        if not is_main:
            return
        state = {"model": raw_model.state_dict(), "optimizer": opt.state_dict(), "step": at,
                 "elapsed": elapsed(), "model_config": raw_model.cfg.to_dict(),
                 "config": cfg.model_dump(mode="json")}
        atomic_save(ckpt_path, lambda tmp: torch.save(state, tmp))

    def emit(rec: dict) -> None:
        if is_main:
            append_jsonl(metrics_path, rec)

    first_loss = next((r["loss"] for r in earlier if r.get("loss") is not None), None)
    val_loss = next((r["val_loss"] for r in reversed(earlier) if "val_loss" in r), None)
    last_loss = next((r["loss"] for r in reversed(earlier) if "loss" in r), None)

    def validate() -> tuple[float, list[dict], dict]:
        """(validation loss, one record per validation sequence, task metrics for the summary)."""
        if mqar is not None:
            return mqar.evaluate(raw_model, bs, device, autocast)
        files = DocumentLosses(val_files[0], seq_len)
        loss, per = evaluate(raw_model, val_seqs, t_cfg.eval_batches, bs, device, autocast, per_sequence=True,
                             before=before_val, files=files)
        return loss, [{"id": f"val/{i}", "loss": v} for i, v in sorted(per.items())] + files.records(val_files[1]), {}

    def summarize(status: str, per_val: list[dict] | None = None, task: dict | None = None) -> dict:
        finite = val_loss is not None and math.isfinite(val_loss)
        summary = {"name": name, "status": status, "step": step, "steps": steps, "first_loss": first_loss,
                   "final_loss": last_loss, "val_loss": val_loss,
                   "val_ppl": math.exp(min(val_loss, 50)) if finite else None, **(task or {}),
                   "backend": backend, "device": str(device), "seconds": round(elapsed(), 2), "tokens": step * tokens_per_step,
                   **({"context_wait_s": round(prefetch.stats()[0], 2)} if prefetch is not None else {}),
                   "checkpoint_s": round(checkpoint_s, 2),
                   "metrics": str(metrics_path), "checkpoint": str(dcp_dir if use_dcp else ckpt_path),
                   "out_dir": str(out_dir)}
        if is_main:
            if per_val is not None:
                atomic_write_text(out_dir / "per_example.jsonl", "".join(_jsonl_line(r) for r in per_val))
            write_json(out_dir / "metrics.json", summary)
        return summary

    checkpoint_s = 0.0  # seconds this process spent writing checkpoints (in the summary, not in tok/s)
    if is_main:
        summarize("running")
    model.train()
    progress = _Progress(steps, step, is_main and t_cfg.progress)
    t_last, tokens_since = time.time(), 0
    ctx_last, steps_since = (prefetch.stats() if prefetch is not None else None), 0
    log_every, eval_every, ckpt_every = t_cfg.log_every, t_cfg.eval_every, t_cfg.checkpoint_interval()
    max_seconds = t_cfg.max_seconds
    per_val, task_metrics = None, None
    stop = False
    while step < steps:
        lr = lr_at(step, steps, t_cfg.warmup, t_cfg.lr, t_cfg.min_lr_ratio)
        for g in opt.param_groups:
            g["lr"] = lr
        loss_sum = torch.zeros((), device=device)
        if indexed:  # stage 1 (dense warm-up): the indexers alone learn their KL; stage 2: sparse
            warm = step < i_cfg.warmup_steps
            set_indexer_mode(raw_model, "dense" if warm else "sparse")
        for micro in range(n_micro):
            if mqar is not None:  # (B, L) inputs and targets (-100 but at the queries); batch index = step in one process
                x, y = (to_device(t, device) for t in mqar.batch((step * n_micro + micro) * dp + dp_rank))
            else:
                g = step * n_micro + micro  # this micro-batch's index in the run
                rows = train_rows(g)                                                    # (B, L+1)
                if prefetch is not None:  # the next micro-batches' contexts build while this one trains
                    while queued < min(g + depth, steps * n_micro - 1):  # each one queued once, none past the run
                        queued += 1
                        prefetch.ahead(train_rows(queued)[:, :-1])
                    contexts = prefetch.get(rows[:, :-1])
                    if device.type == "cuda":  # its layouts' forward and backward arrays: one pinned copy each
                        contexts.to_device(device, csc=True)
                    raw_model.set_contexts(contexts)
                batch = to_device(torch.from_numpy(rows), device)  # (B, L+1)
                x, y = batch[:, :-1], batch[:, 1:]
            last_micro = world == 1 or micro == n_micro - 1
            if fsdp:
                model.set_requires_gradient_sync(last_micro)
            sync = nullcontext() if (last_micro or fsdp) else model.no_sync()
            with sync:
                if sharding is None:
                    with autocast():
                        _, loss = model(x, y)
                else:
                    loss = _cp_forward(model, raw_model, batch, sharding, cp_rank, cp_group, autocast)
                total = loss
                if indexed:
                    kl = indexer_aux_loss(raw_model)
                    w = i_cfg.aux_weight
                    # warm-up: only the indexers' KL (the LM frozen) unless indexer.warmup_train_lm
                    total = loss + w * kl if not warm or i_cfg.warmup_train_lm else w * kl
                (total / n_micro).backward()
            loss_sum += loss.detach()
        gnorm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), t_cfg.grad_clip)
        if hasattr(gnorm, "full_tensor"):  # FSDP2: a DTensor (the norm over every shard)
            gnorm = gnorm.full_tensor()
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        tokens_since += tokens_per_step
        steps_since += 1
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
            rec = {"step": step, "loss": last_loss, "lr": lr, "grad_norm": float(gnorm),
                   "tokens": step * tokens_per_step, "tok_per_s": round(tps, 1), "time": round(elapsed(), 2)}
            if prefetch is not None:  # the context pipeline: this interval's wait per step, build per batch
                ctx_now = prefetch.stats()
                waited, built, n = (a - b for a, b in zip(ctx_now, ctx_last))
                rec["ctx_wait_ms"] = round(1e3 * waited / max(steps_since, 1), 3)
                rec["ctx_build_ms"] = round(1e3 * built / n, 3) if n else None
                ctx_last = ctx_now
            steps_since = 0
            if indexed:  # selection statistics: density, dense-attention mass kept, top-mass overlap
                rec["indexer_stage"] = "dense-warmup" if warm else "sparse"
                rec["indexer_kl"] = round(float(indexer_aux_loss(raw_model).detach()), 5)
                rec.update({f"indexer_{k}": round(v, 5) for k, v in indexer_stats(raw_model).items()})
            emit(rec)
        stop = bool(max_seconds) and time.time() - t_start > max_seconds and step < steps
        if max_seconds and world > 1:  # every rank stops at the same step (checkpoints are collective)
            flag = torch.tensor(float(stop), device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            stop = bool(flag.item())
        if (eval_every and step % eval_every == 0) or step == steps or stop:
            t_paused = time.time()
            if is_main or fsdp:  # FSDP: every rank runs the forward (its all-gathers are collective)
                with indexer_collect(raw_model) as val_stats:  # the indexers' statistics on validation
                    val_loss, per_val, task_metrics = validate()
                emit({"step": step, "val_loss": val_loss, "val_ppl": math.exp(min(val_loss, 50)),
                      **{k: v for k, v in task_metrics.items() if isinstance(v, float)},
                      "time": round(elapsed(), 2), **{f"val_indexer_{k}": round(v, 5) for k, v in val_stats.items()}})
            if world > 1:
                dist.barrier()
            t_last += time.time() - t_paused  # evaluation time is not training throughput
        if step % ckpt_every == 0 or step == steps or stop:
            t_paused = time.time()
            save_ckpt(step)
            if is_main and step < steps:
                summarize("stopped" if stop else "running")
            dt = time.time() - t_paused
            checkpoint_s += dt
            t_last += dt  # nor is writing a checkpoint
        progress.update(loss="-" if last_loss is None else f"{last_loss:.3f}", lr=f"{lr:.1e}",
                        tok_s=f"{(tokens_per_step * step) / max(time.time() - t_start, 1e-9):.0f}")
        if stop:
            log(f"[train] stopping at step {step}: max_seconds={max_seconds} reached (run it again to resume)")
            break
    progress.close()
    if prefetch is not None:
        prefetch.close()
    if (is_main or fsdp) and step == steps and per_val is None:  # resumed at the very end: score once more
        val_loss, per_val, task_metrics = validate()
    end = step == steps
    summary = summarize("finished" if end else "stopped", per_val if end else None, task_metrics if end else None)
    log(f"[train] {summary['status']}: loss {first_loss} -> {last_loss}, val {val_loss}, {summary['seconds']:.1f}s")
    return summary


def _cp_sharding(cfg: TrainConfig, model: DecoderLM, cp: int, indexed: bool):
    """The split of a training sequence over the cp ranks (``spattern.distributed.make_sharding``)."""
    from spattern.distributed.sharding import make_sharding  # noqa: PLC0415

    t = cfg.train
    if indexed:
        raise UserError(f"train.context_parallel: expected 1 with an [indexer] (its top-k layouts are built per "
                        f"rank's whole sequence), got {cp}")
    if model.pos_embed is not None:
        raise UserError(f"train.context_parallel: expected a model with rotary positions, got arch "
                        f"{model.cfg.arch!r} (learned positions); use context_parallel=1")
    if t.compile:
        raise UserError("train.compile: expected false with context_parallel > 1")
    try:
        return make_sharding(cfg.data.seq_len, cp, block=tuple(model.cfg.block), strategy=t.cp_sharding or "zigzag")
    except ValueError as e:
        raise UserError(f"train.context_parallel={cp}: {e}") from None


def _set_cp(model: torch.nn.Module, ctx) -> None:
    from ..models.layers import SelfAttention  # noqa: PLC0415

    for m in model.modules():
        if isinstance(m, SelfAttention):
            m.cp = ctx


def _cp_forward(model, raw_model, batch: torch.Tensor, sharding, cp_rank: int, group, autocast) -> torch.Tensor:
    """The loss this cp rank backpropagates for a (B, L+1) batch: its shard's token losses summed,
    times cp / (B * L) (``context_parallel_loss``), so that the ranks' averaged gradients equal the
    one-process gradient of the batch's mean loss. Attention layers read the shard's positions."""
    from spattern.distributed.training import context_parallel_loss, shard_batch  # noqa: PLC0415

    from ..models.layers import ContextParallel  # noqa: PLC0415

    x, y, pos = shard_batch(batch[:, :-1], batch[:, 1:], sharding, cp_rank)  # (B, n_r), (B, n_r), (n_r,)
    _set_cp(raw_model, ContextParallel(group, sharding, pos))
    try:
        with autocast():
            _, nll = model(x, y, reduction="none")                                 # (B, n_r)
    finally:
        _set_cp(raw_model, None)  # backward needs no layer state; evaluation runs whole sequences
    return context_parallel_loss(nll.float().sum(), batch.shape[0] * sharding.n_tokens, sharding.world)


def _save_dcp(dcp_dir: Path, model, opt, step: int, meta: dict, is_main: bool, world: int) -> None:
    """Every rank writes its shards into ``dcp.partial``; then rank 0 swaps it in for ``dcp`` (the
    previous checkpoint is removed only after the new one is complete) and writes ``dcp.json``."""
    import shutil  # noqa: PLC0415

    from spattern.distributed.training import save_checkpoint  # noqa: PLC0415

    partial, old = dcp_dir.with_name("dcp.partial"), dcp_dir.with_name("dcp.old")
    if is_main:
        shutil.rmtree(partial, ignore_errors=True)
    if world > 1:
        dist.barrier()
    save_checkpoint(partial, model, opt, step=step)  # collective
    if world > 1:
        dist.barrier()
    if is_main:
        shutil.rmtree(old, ignore_errors=True)
        if dcp_dir.exists():
            os.replace(dcp_dir, old)
        os.replace(partial, dcp_dir)
        write_json(dcp_dir.with_name("dcp.json"), meta)
        shutil.rmtree(old, ignore_errors=True)
    if world > 1:
        dist.barrier()


def _save_full(path: Path, model, meta: dict, is_main: bool, fsdp: bool) -> None:
    """The full (unsharded) model in ``ckpt.pt`` (what ``load_checkpoint`` reads); collective under FSDP."""
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict  # noqa: PLC0415

        sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    else:
        sd = model.state_dict()
    if is_main:
        state = {"model": sd, "step": meta["step"], "elapsed": meta["elapsed"], "model_config": meta["model_config"],
                 "config": meta["config"]}
        atomic_save(path, lambda tmp: torch.save(state, tmp))


def _model_from_state(state: dict, device) -> DecoderLM:
    from ..models.config import ModelConfig  # noqa: PLC0415

    mc = dict(state["model_config"])
    mc["block"] = tuple(mc["block"])
    model = DecoderLM(ModelConfig(**mc)).to(device)
    model.load_state_dict(state["model"])
    return model.eval()


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> DecoderLM:
    """A trained model back from a checkpoint written by `train`."""
    return _model_from_state(_load_checkpoint_state(Path(path), device), device)


def load_trained(path: str | Path, device: str | torch.device = "cpu", log=lambda *a: None):
    """(model, tokenizer) of a checkpoint written by `train` (the file is read once; the tokenizer
    is the prepared data's, found through the config stored in the checkpoint)."""
    state = _load_checkpoint_state(Path(path), device)
    return _model_from_state(state, device), load_data(as_config(state["config"]), log=log).tokenizer()
