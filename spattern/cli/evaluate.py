"""``spattern perplexity``: evaluation of a model (pretrained or trained) with a pattern swapped in."""

from __future__ import annotations

import json

from spattern.cli._args import positive_int
from spattern.cli.train import add_model_source, load_model
from spattern.utils.errors import UserError


def cmd_perplexity(args) -> int:
    import numpy as np

    from spattern.data import iter_documents, split_of
    from spattern.evaluation.perplexity import window_perplexity

    model, tok = load_model(args)
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
        raise UserError(f"--corpus {args.corpus}: no {args.split} document has more than {args.window} tokens")
    offsets = np.concatenate([[0], np.cumsum([len(x) for x in ids])])
    r = window_perplexity(model, np.concatenate(ids), offsets, args.window, device=args.device)
    pattern = getattr(model.cfg, "pattern", None)
    print(json.dumps({"corpus": args.corpus, "split": args.split, "window": args.window, "docs": len(ids),
                      "tokens": r["tokens"], "ppl": round(r["ppl"], 3),
                      "pattern": pattern if pattern not in (None, "", "dense") else "dense"}))
    return 0


def register(sub) -> None:
    p = sub.add_parser("perplexity", help="window perplexity on a corpus's test split, for the pretrained "
                                          "SmolLM2 or a trained checkpoint, with an optional pattern")
    add_model_source(p)
    p.add_argument("--corpus", default="sotu", help="corpus spec (see `spattern data list`; default sotu)")
    p.add_argument("--split", default="test", choices=["train", "validation", "test"],
                   help="document split (default test)")
    p.add_argument("--window", type=positive_int, default=2048, help="tokens per window (default 2048)")
    p.add_argument("--docs", type=positive_int, default=8,
                   help="score the first window of this many long documents (default 8)")
    p.set_defaults(func=cmd_perplexity)
