"""XLA compiler options of sgdlab's own compiled loops.

On the CPU backend the chain's two programs (``_start``, ``_advance`` of
:mod:`sgdlab.engines._driver`) are compiled with XLA's element-wise fusion emitters instead of
its newer MLIR ones, an option of those programs only (``jax.jit(..., compiler_options=...)``),
not of the process. These programs are many small fusions, which the older emitters compile in
under half the time at XLA's backend optimisation level 0 and about a fifth less at its default
level, and the chain runs as fast (BENCHMARKS.md, "Compilation"). The other programs keep
XLA's own emitters: without them the full engine's batched products ran several times slower
at level 0, and the ODE's ReLU solves up to 1.6x slower (first calls of the erf ODE were
shorter). ``SGDLAB_XLA=default`` gives the chain XLA's own options too.
"""

from __future__ import annotations

import os

import jax

__all__ = ["CPU_COMPILER_OPTIONS", "compiler_options"]

CPU_COMPILER_OPTIONS = (("xla_cpu_use_fusion_emitters", False),)


def compiler_options() -> tuple:
    """:data:`CPU_COMPILER_OPTIONS` ((name, value) pairs) on the CPU backend unless
    ``SGDLAB_XLA=default``; none on other backends."""
    if jax.default_backend() != "cpu" or os.environ.get("SGDLAB_XLA", "").strip().lower() == "default":
        return ()
    return CPU_COMPILER_OPTIONS
