"""Executes attention over a BlockLayout: reference (torch), cupy (CUDA kernels), flex."""

from spattern.runtime.api import BACKENDS, attention, check_inputs

__all__ = ["attention", "check_inputs", "BACKENDS"]
