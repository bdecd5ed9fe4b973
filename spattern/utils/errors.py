"""Errors that mean "the user asked for something that cannot be done" (the CLI prints them as one
line and exits with code 2); anything else that escapes is a bug and keeps its traceback."""

from __future__ import annotations


class UserError(Exception):
    """A bad input from the user: a clear message naming the argument, what was expected and what
    came. The CLI prints ``error: <message>`` and exits 2 (no traceback)."""


class ConfigError(UserError, ValueError):
    """A config file (or an override) that does not validate: names the file, the key, what was
    expected and what came."""
