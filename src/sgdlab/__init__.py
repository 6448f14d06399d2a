"""sgdlab: online SGD in high dimension, on three engines that share one model definition.

- ``Full()``: the d-dimensional simulation (JAX; vmap over seeds, lax.scan over steps);
- ``Chain()``: the exact Markov chain of the Gram matrix, whose cost does not depend on d;
- ``ODE()``: the deterministic limit of the order parameters, with the finite-d eta^2 term.

>>> from sgdlab import Problem, Student, Training, run, Chain
>>> res = run(Problem(d=1000, link="h3"), Student(activation="h3"),
...           Training(lr=1e-3, steps=10_000, spherical=True), engine=Chain(), seeds=64)

Precision: ``import sgdlab`` turns on JAX's ``jax_enable_x64`` for the whole process, because
the engines and the theory compute in float64 (the chain's statistics near m ~ d^{-1/2}, the
ODE, the quadratures). JAX has one such switch per process, so after the import a JAX array
made *without* a dtype is float64 in the caller's code too; arrays and functions given an
explicit ``dtype=jnp.float32`` stay float32, and ``Full(dtype="float32")`` and
``Chain(dtype="float32")`` run the engines in single precision. Turning the switch off again
after the import makes :func:`run` stop with a one-line error rather than compute in float32.
"""

import os as _os
import sys as _sys

if _os.path.basename(_sys.argv[0] if _sys.argv else "") == "sgdlab":  # the command line: a SIGINT/SIGTERM
    from . import _interrupt  # during the imports ends it in one line (no KeyboardInterrupt inside an import)

    _interrupt.early()

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)  # the one place: see "Precision" above

from ._functions import Fn, hermite_coefficients, information_exponent, resolve_fn  # noqa: E402
from .api import run  # noqa: E402
from .engines import ODE, Chain, Full  # noqa: E402
from .model import Model, Problem, Student, Training  # noqa: E402
from .result import Result  # noqa: E402
from .risk import population_risk  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "ODE",
    "Chain",
    "Fn",
    "Full",
    "Model",
    "Problem",
    "Result",
    "Student",
    "Training",
    "hermite_coefficients",
    "information_exponent",
    "population_risk",
    "resolve_fn",
    "run",
]
