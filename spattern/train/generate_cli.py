"""`spattern generate ...` (spattern/cli.py delegates here): see spattern.train.cli.main_generate."""
from .cli import main_generate as main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
