"""The engine protocol: what an engine is, what it returns, what it can run.

Two kinds, as abstract base classes:

- :class:`StochasticEngine` (``full``, ``chain``): ``build(model)`` returns a
  :class:`Program`, per-seed functions over an explicit state (a PyTree holding the step
  count ``t``, the parameters, the step sizes and the PRNG key): ``init(key, hyper, start)``,
  ``step(state)``, and the read-outs ``escape_stat``, ``healthy`` and ``observe``. The
  common driver (``_driver.drive``) runs them for all seeds at once.
- :class:`DeterministicEngine` (``ode``): ``solve(model, record, progress)`` integrates
  the model's vector field.

Both return a :class:`Trajectory`; ``check(model)`` raises a one-line ``ValueError`` for a
model the engine cannot run (e.g. non-Gaussian data on the chain).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["DeterministicEngine", "Engine", "Program", "StochasticEngine", "Trajectory"]


@dataclass
class Trajectory:
    """Recorded steps (R,), order parameters M (S, R, p, a), Q (S, R, p, p), a (S, R, p),
    per-seed escape and divergence steps (-1: never), and engine information."""

    steps: np.ndarray
    M: np.ndarray
    Q: np.ndarray
    a: np.ndarray
    escape_step: np.ndarray
    diverged_step: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Program:
    """Per-seed functions of a built stochastic engine. ``init(key, hyper, start)`` receives
    the step sizes ``hyper = {"lr": ..., "lr_a": ...}`` as traced numbers (kept in the state,
    so runs that differ only in step size share one compiled program) and this seed's
    ``start`` data of the initial state (or ``None``). ``hyper`` holds the built model's own
    traced numbers (step sizes ``lr``, ``lr_a``; ``noise``, a factor on the label-noise draws;
    ``d``), used when ``drive`` is given none; it takes no part in equality.
    ``compiler_options``: XLA options the driver compiles this program's loops with
    ((name, value) pairs; see :mod:`sgdlab._xla`)."""

    init: Callable[[Any, dict, Any], Any]
    step: Callable[[Any], Any]
    escape_stat: Callable[[Any], Any]
    healthy: Callable[[Any], Any]
    observe: Callable[[Any], tuple[Any, Any, Any]]
    hyper: tuple = field(default=(), compare=False)  # (name, value) pairs
    compiler_options: tuple = ()  # (name, value) pairs


class Engine(ABC):  # noqa: B024 (the two kinds below add the abstract methods)
    """Base class of engines: a ``name`` and a capability check."""

    name: str = "engine"
    gaussian_only: bool = True

    def check(self, model) -> None:
        """Raise a one-line ``ValueError`` if this engine cannot run ``model``."""
        law = model.data
        if self.gaussian_only and not law.gaussian:
            raise ValueError(f"data: got {law.name!r}; allowed on engine {self.name!r}: Gaussian data laws")


class StochasticEngine(Engine):
    """An engine that simulates seeds: ``build(model) -> Program``.

    ``traced_d``: the program takes d as a traced number (the chain), so ``structure``
    drops it from the compile key."""

    traced_d: bool = False

    def structure(self, model):
        """The model with every number that the program takes traced set to a canonical
        value: runs that differ only in them share one build and one compilation."""
        return model.structure(d=self.traced_d)

    def hyper(self, model) -> dict:
        """The traced numbers of ``model`` for a program built from ``structure(model)``."""
        return model.traced_numbers()

    @abstractmethod
    def build(self, model) -> Program: ...


def check_dtype(dtype: str) -> None:
    """The one-line error of an engine's ``dtype`` option (``float32`` or ``float64``)."""
    if dtype not in ("float32", "float64"):
        raise ValueError(f"engine.dtype: got {dtype!r}; allowed: 'float32' or 'float64'")


class DeterministicEngine(Engine):
    """An engine that integrates the order parameters: ``solve(model, record, progress)``."""

    @abstractmethod
    def solve(self, model, record, progress=None) -> Trajectory: ...
