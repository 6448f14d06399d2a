"""The stochastic engines' common loop: vmap over seeds, nested lax.scan over steps.

An engine supplies, per seed, ``init(key, hyper, start) -> state`` and ``step(state) -> state``
(a PyTree holding its step count, parameters and PRNG key) plus three read-outs of a state: the escape
statistic max_j |M_j0| / sqrt(Q_jj), a health flag (finite, Gram positive semi-definite)
and the recorded order parameters (M, Q, a). The driver runs ``steps`` steps for all seeds
at once: an outer loop over recording points, an inner loop over the steps between them,
so nothing is stored over time but the order parameters, and no Python runs per step.
Escape and divergence are checked after every step (the state of a seed that diverged is
frozen by a selection that only runs while some seed is unhealthy).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .. import _interrupt as interrupt
from .base import Program, Trajectory

__all__ = ["MAX_NORM2", "Program", "drive", "seed_keys"]

STOP_CHECKS = 200  # with stop_fraction, the escaped fraction is checked at most this often per run
MAX_NORM2 = 1e30  # a squared row norm (or a_j^2) beyond this counts as divergence (far before overflow)


def seed_keys(seed: int, n: int) -> jax.Array:
    """One independent key per seed index: fold_in(key(seed), i)."""
    base = jax.random.key(seed)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(n))


def _all_steps(engine: Program, threshold, carry):
    """One step of every seed. A seed whose new state is unhealthy keeps its old state from
    then on (its divergence step is recorded); the state selection that this needs runs only
    on steps where some seed is (or has been) unhealthy: a batch-level ``lax.cond``, so a
    healthy batch pays for the health flags but not for selecting its state."""
    state, k, esc, div = carry
    new = jax.vmap(engine.step)(state)
    ok = jax.vmap(engine.healthy)(new) & (div < 0)
    state = lax.cond(jnp.all(ok), lambda: new,
                     lambda: jax.tree.map(lambda n, o: jnp.where(_bcast(ok, n), n, o), new, state))
    k = k + 1
    div = jnp.where((div < 0) & ~ok, k, div)
    hit = ok & (esc < 0) & (jax.vmap(engine.escape_stat)(new) >= threshold)
    esc = jnp.where(hit, k, esc)
    return state, k, esc, div


def _bcast(flag, x):
    """The per-seed ``flag`` shaped to broadcast against ``x`` (seed axis first)."""
    return flag.reshape(flag.shape + (1,) * (x.ndim - 1))


def bucket(n: int) -> int:
    """The padded size of ``n`` (seeds, records): the next power of two up to 8, then the next
    multiple of 2^(floor(log2 n) - 2) (4 sizes per octave, padding below 25%), so nearby
    counts share one compiled program."""
    if n <= 8:
        return 1 << max(0, (n - 1).bit_length())
    step = 1 << (n.bit_length() - 3)
    return -(-n // step) * step


def _advance(engine: Program, carry, buffers, start, stop, every, threshold):
    """Records ``start`` to ``stop`` (traced): ``every`` steps for every seed, then observe.

    Observations go into preallocated ``buffers`` (record, seed, ...), so one compiled
    function serves every chunk length, the final partial block and the progress chunks.
    """
    vstep = partial(_all_steps, engine, threshold)

    def block(i, cb):
        c, bufs = cb
        c = lax.fori_loop(0, every, lambda _, cc: vstep(cc), c)
        obs = jax.vmap(engine.observe)(c[0])
        bufs = jax.tree.map(lambda b, o: lax.dynamic_update_index_in_dim(b, o.astype(b.dtype), i, 0), bufs, obs)
        return c, bufs

    return lax.fori_loop(start, stop, block, (carry, buffers))


def _start(engine: Program, keys, hyper, start, threshold):
    state = jax.vmap(engine.init, in_axes=(0, None, 0))(keys, hyper, start)
    n = keys.shape[0]
    k = jnp.zeros(n, dtype=jnp.int64)
    ok = jax.vmap(engine.healthy)(state)
    esc = jnp.where(jax.vmap(engine.escape_stat)(state) >= threshold, 0, -1).astype(jnp.int64)
    div = jnp.where(ok, -1, 0).astype(jnp.int64)
    return (state, k, esc, div), jax.vmap(engine.observe)(state)


_JITTED: dict = {}  # (function, compiler options) -> its jitted form


def _compiled(fun: Callable, options: tuple) -> Callable:
    """``fun`` jitted with the engine static and XLA's ``options`` ((name, value) pairs)."""
    key = (fun, options)
    if key not in _JITTED:
        _JITTED[key] = jax.jit(fun, static_argnums=(0,), compiler_options=dict(options) or None)
    return _JITTED[key]


def compiled_programs() -> tuple[int, int]:
    """How many ``_start`` and ``_advance`` programs have been compiled in this process
    (jit cache entries, over every set of compiler options)."""
    sizes = [(fun, jitted._cache_size()) for (fun, _), jitted in _JITTED.items()]
    return sum(n for f, n in sizes if f is _start), sum(n for f, n in sizes if f is _advance)


def drive(
    engine: Program,
    keys: jax.Array,
    *,
    steps: int,
    every: int,
    threshold: float,
    progress: Callable[[int], None] | None = None,
    chunk_seconds: float = 0.5,
    lr: float | None = None,
    lr_a: float | None = None,
    stop_fraction: float | None = None,
    start: dict | None = None,
    hyper: dict | None = None,
) -> Trajectory:
    """Run all seeds; return recorded steps, (M, Q, a) per record, escape and divergence steps.

    Records are taken at step 0, every ``every`` steps and at the last step. The records
    are run in chunks of about ``chunk_seconds`` (the same compiled function, with traced
    bounds, so the result is bit for bit that of one call), ``progress(steps_done)`` is
    called between chunks, and a SIGINT/SIGTERM noted by :mod:`sgdlab._interrupt` is
    honoured between chunks: the run raises :class:`~sgdlab._interrupt.Interrupted`, or,
    inside :func:`~sgdlab._interrupt.keep_partial`, returns the records so far with
    ``info["interrupted"]`` set to the signal's name. With ``stop_fraction`` the records are
    run in ``STOP_CHECKS`` equal chunks (fixed by ``steps`` and ``every`` alone, so the result
    does not depend on timing), and the run ends after the first chunk whose last record finds at least that fraction
    of the seeds escaped or diverged (the recorded steps end there). ``start``: per-seed
    data of the initial state (arrays with a leading seed axis), or ``None``. ``hyper``:
    traced numbers of the program (``lr``, ``lr_a``, ``noise``, ``d``) that override the
    built engine's own (``engine.hyper``).
    """
    values = {**dict(engine.hyper), **(hyper or {})}
    if lr is not None:
        values["lr"] = lr
    if lr_a is not None:
        values["lr_a"] = lr_a
    hyper = {k: jnp.asarray(v, jnp.float64) for k, v in values.items()}
    # seeds and records are padded to bucketed sizes (seed i's stream depends on its key
    # only), so nearby seed counts and horizons reuse one compiled program
    n_seeds = keys.shape[0]
    pad = jnp.concatenate([jnp.arange(n_seeds), jnp.zeros(bucket(n_seeds) - n_seeds, jnp.int32)])
    keys = keys[pad]
    if start is not None:
        start = jax.tree.map(lambda v: jnp.asarray(v)[pad], start)
    thr = jnp.asarray(threshold, jnp.float64)
    carry, obs0 = _compiled(_start, engine.compiler_options)(engine, keys, hyper, start, thr)
    n_full, rem = divmod(steps, every)
    n_rec = n_full + 1 + (1 if rem else 0)
    buffers = jax.tree.map(lambda o: jnp.zeros((bucket(n_rec), *o.shape), jnp.float64).at[0].set(o), obs0)
    every_ = jnp.asarray(every, jnp.int64)

    advance_ = _compiled(_advance, engine.compiler_options)

    def advance(c, b, lo, hi, ev):
        return advance_(engine, c, b, jnp.asarray(lo, jnp.int64), jnp.asarray(hi, jnp.int64),
                        every_ if ev == every else jnp.asarray(ev, jnp.int64), thr)

    def finished(c) -> bool:
        if stop_fraction is None:
            return False
        ended = (np.asarray(c[2])[:n_seeds] >= 0) | (np.asarray(c[3])[:n_seeds] >= 0)
        return bool(ended.mean() >= stop_fraction)

    stopped = interrupted = False
    stop_chunk = max(1, -(-n_full // STOP_CHECKS))
    done, chunk, calls = 0, 1 if stop_fraction is None else stop_chunk, 0
    while done < n_full and not stopped:
        if interrupt.requested() is not None:
            interrupted = True
            break
        n = min(chunk, n_full - done)
        t0 = time.perf_counter()
        carry, buffers = advance(carry, buffers, done + 1, done + 1 + n, every)
        jax.block_until_ready(buffers)
        dt = time.perf_counter() - t0
        done += n
        calls += 1
        if progress is not None:
            progress(done * every)
        if stop_fraction is not None:  # fixed chunks: where a run stops must not depend on timing
            chunk = stop_chunk
        elif calls == 2:  # the first call also compiled: size the chunks on the second
            chunk = max(1, int(chunk_seconds * n / max(dt, 1e-6)))
        stopped = finished(carry)
    if rem and not stopped and interrupt.requested() is not None:
        interrupted = True
    if interrupted:
        if not interrupt.partial_wanted():
            interrupt.check(f"run stopped after {done * every} of {steps} steps")
        interrupt.acknowledge()
    if stopped or interrupted:
        n_full, rem = done, 0
    if rem:
        carry, buffers = advance(carry, buffers, n_full + 1, n_full + 2, rem)
        if progress is not None:
            progress(steps)
    recorded = np.arange(n_full + 1, dtype=np.int64) * every
    if rem:
        recorded = np.append(recorded, steps)
    M, Q, a = (np.asarray(b)[: len(recorded), :n_seeds] for b in buffers)
    _, _, esc, div = carry
    esc, div = np.asarray(esc)[:n_seeds], np.asarray(div)[:n_seeds]
    # observations are (record, seed, ...): put seeds first
    return Trajectory(
        steps=recorded,
        M=np.moveaxis(M, 0, 1).astype(np.float64),
        Q=np.moveaxis(Q, 0, 1).astype(np.float64),
        a=np.moveaxis(a, 0, 1).astype(np.float64),
        escape_step=np.asarray(esc, dtype=np.int64),
        diverged_step=np.asarray(div, dtype=np.int64),
        info={"interrupted": interrupt.signal_name(interrupt.requested())} if interrupted else {},
    )
