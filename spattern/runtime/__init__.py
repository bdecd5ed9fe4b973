"""Executes attention over a BlockLayout: reference (torch), cupy (CUDA kernels), flex."""

from spattern.runtime.api import BACKENDS, attention, backend_for
from spattern.runtime.problem import Problem, describe

__all__ = ["attention", "backend_for", "describe", "Problem", "BACKENDS"]
