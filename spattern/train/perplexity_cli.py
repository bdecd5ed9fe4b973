"""`spattern perplexity ...` (to delegate from spattern/cli.py): see spattern.train.cli.main_perplexity."""
from .cli import main_perplexity as main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
