"""``run``: one problem, one student, one training rule, on any engine."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .engines import Chain
from .engines._driver import drive, seed_keys
from .engines.base import DeterministicEngine, StochasticEngine
from .model import Model, Problem, Record, Student, Training, _bad, _positive_int
from .result import Result
from .risk import risk_table

__all__ = ["run"]


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
    progress: Callable[[int], None] | None = None,
) -> Result:
    """Train ``student`` on ``problem`` with ``training`` on ``engine`` (default ``Chain()``).

    ``record`` (a :class:`Record`) says what is recorded: every how many steps, the escape
    threshold, the stop fraction (default: the values in ``training``). ``seeds``
    independent runs (vmapped) use the keys fold_in(key(seed), i), i < seeds.
    ``progress(steps_done)`` is called between compiled chunks for long runs.
    Every engine returns the same :class:`Result`.
    """
    engine = Chain() if engine is None else engine
    if not isinstance(engine, StochasticEngine | DeterministicEngine):
        raise _bad("engine", engine, "Full(), Chain() or ODE()")
    if record is not None and not isinstance(record, Record):
        raise _bad("record", record, "a Record(every=..., escape_threshold=..., stop_fraction=...)")
    record = Record.of(training) if record is None else record
    seeds = _positive_int("seeds", seeds)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise _bad("seed", seed, "a non-negative integer")
    model = _model(problem, student, training)
    model.check()
    engine.check(model)
    t0 = time.perf_counter()
    if isinstance(engine, DeterministicEngine):
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
    )
