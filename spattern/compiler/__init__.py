"""Pattern -> BlockLayout (CSR block metadata) and its costs."""

from spattern.compiler.compile import clear_cache, compile
from spattern.compiler.layout import BITMASK, FULL, PROGRAM, BlockLayout, LayoutError

__all__ = ["compile", "clear_cache", "BlockLayout", "LayoutError", "FULL", "PROGRAM", "BITMASK"]
