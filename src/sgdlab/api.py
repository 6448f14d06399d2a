"""``run``: one problem, one student, one training rule, on any engine."""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from ._progress import progress_callback
from .engines import ODE, SDE, Chain, Full
from .engines._driver import drive, seed_keys
from .engines.base import DeterministicEngine, StochasticEngine
from .model import Model, Problem, Record, Student, Training, _bad, _positive_int
from .result import Result
from .risk import risk_table

__all__ = ["run"]

_ENGINES = {"full": Full, "chain": Chain, "ode": ODE, "sde": SDE}


def _engine(engine: Any) -> Any:
    """``engine`` as an engine object: ``None`` is ``Chain()``, a name its default engine."""
    if engine is None:
        return Chain()
    if isinstance(engine, str):
        if engine.lower() not in _ENGINES:
            raise _bad("engine", engine, "'full', 'chain', 'ode', 'sde', Full(), Chain(), ODE() or SDE()")
        return _ENGINES[engine.lower()]()
    if not isinstance(engine, StochasticEngine | DeterministicEngine):
        raise _bad("engine", engine, "'full', 'chain', 'ode', 'sde', Full(), Chain(), ODE() or SDE()")
    return engine


def _check_x64() -> None:
    """sgdlab's engines compute in float64; ``import sgdlab`` turns ``jax_enable_x64`` on, and a
    caller who turned it off afterwards would get float32 arithmetic without a word."""
    if not jax.config.jax_enable_x64:
        raise RuntimeError(
            "jax_enable_x64: got False (turned off after importing sgdlab); allowed: True, "
            "which sgdlab needs: jax.config.update('jax_enable_x64', True)"
        )


def _description(problem: Any, student: Any, training: Any, engine: Any, seeds: int, seed: int) -> dict[str, Any]:
    """The resolved configuration of a Python run: the fields of its objects (functions and
    laws by their repr), kept in ``Result.config`` and ``summary.json``."""
    from ._functions import Fn
    from .io import _jsonable

    def fields(obj: Any) -> Any:
        if isinstance(obj, Fn):
            return obj.name
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            own = {f.name: fields(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
            return {"type": type(obj).__name__} | own
        return obj

    train = fields(training)
    if isinstance(train, dict) and train.get("norm") == "euclidean":
        del train["norm"]  # the default norm is left out: descriptions of earlier runs are unchanged
    return _jsonable({
        "problem": fields(problem),
        "student": fields(student),
        "training": train,
        "engine": engine.name,
        "engine_options": fields(engine),
        "seeds": seeds,
        "seed": seed,
    })


@functools.lru_cache(maxsize=64)
def _built_cached(engine: Any, model: Model):
    return engine.build(model)


def _built(engine: Any, model: Model):
    """One built engine per (engine, model structure): step sizes, label noise, warm-start m0,
    horizon, recording and (chain) d are traced inputs of the compiled program (passed to
    ``drive``), so runs differing only in them reuse one compilation."""
    return _built_cached(engine, engine.structure(model))


def _model(problem: Any, student: Any, training: Training):
    """A :class:`Model`, or a :class:`~sgdlab.sequence.SequenceModel` for sequence problems."""
    from .sequence import SequenceModel, SequenceProblem, SequenceStudent

    seq_p, seq_s = isinstance(problem, SequenceProblem), isinstance(student, SequenceStudent)
    if seq_p != seq_s:
        what = "a SequenceStudent" if seq_p else "a Student"
        raise _bad("student", type(student).__name__, f"{what} for a {type(problem).__name__}")
    return SequenceModel(problem, student, training) if seq_p else Model(problem, student, training)


def run(
    problem: Problem,
    student: Student,
    training: Training,
    *,
    engine: Any = None,
    record: Record | None = None,
    seeds: int = 1,
    seed: int = 0,
    progress: bool | Callable[[int], None] | None = None,
) -> Result:
    """Train ``student`` on ``problem`` with ``training`` on ``engine`` (default ``Chain()``;
    ``"full"``, ``"chain"`` or ``"ode"`` name the engines with their default options).

    ``record`` (a :class:`Record`) says what is recorded: every how many steps, the escape
    threshold, the stop fraction (default: the values in ``training``). ``seeds``
    independent runs (vmapped) use the keys fold_in(key(seed), i), i < seeds.
    ``progress=True`` shows a rich progress bar of the steps (on a terminal or in a notebook);
    a callable ``progress(steps_done)`` is called between the compiled chunks instead.
    Every engine returns the same :class:`Result`. Ctrl-C stops a run between two chunks
    (``KeyboardInterrupt`` as usual), never inside a compiled call.
    """
    _check_x64()
    engine = _engine(engine)
    if record is not None and not isinstance(record, Record):
        raise _bad("record", record, "a Record(every=..., escape_threshold=..., stop_fraction=...)")
    record = Record.of(training) if record is None else record
    seeds = _positive_int("seeds", seeds)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise _bad("seed", seed, "a non-negative integer")
    model = _model(problem, student, training)
    model.check()
    engine.check(model)
    progress = progress_callback(progress, training.steps, f"{engine.name} d={problem.d}")
    t0 = time.perf_counter()
    if getattr(engine, "paths", False):  # a diffusion: one path per seed
        out = engine.solve(model, record, progress=progress, seeds=seeds, seed=seed)
        labels = np.arange(seeds, dtype=np.int64)
    elif isinstance(engine, DeterministicEngine):
        out = engine.solve(model, record, progress=progress)
        labels = np.zeros(1, dtype=np.int64)
    else:
        out = drive(
            _built(engine, model),
            seed_keys(seed, seeds),
            steps=training.steps,
            every=record.every,
            threshold=record.escape_threshold,
            progress=progress,
            hyper=engine.hyper(model),
            stop_fraction=record.stop_fraction,
            start=model.init.per_seed(model, seeds),
        )
        labels = np.arange(seeds, dtype=np.int64)
    if hasattr(progress, "close"):
        progress.close()
    info = dict(out.info)
    if model.data.gaussian:
        risk = np.asarray(risk_table(model, out.M, out.Q, out.a))
    else:  # the loss is not a function of the order parameters: no population risk
        risk = np.full(out.M.shape[:2], np.nan)
        info["risk"] = f"not computed: data law {model.data.name!r} is not Gaussian given its frame"
    return Result(
        engine=engine.name,
        d=problem.d,
        batch=training.batch,
        steps=out.steps,
        M=out.M,
        Q=out.Q,
        a=out.a,
        risk=risk,
        escape_step=out.escape_step,
        diverged_step=out.diverged_step,
        seeds=labels,
        trained_second_layer=student.trained,
        wall_time=time.perf_counter() - t0,
        info=info,
        config=_description(problem, student, training, engine, seeds, seed),
    )
