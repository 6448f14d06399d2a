"""Only true structure compiles: a sweep over d (chain), label noise, warm start m0, escape
threshold, stop fraction, horizon, recording or seed count reuses the compiled programs.

Counted: the jit cache entries of the driver's two programs (``_start``, ``_advance``) and of
the risk table. Each test runs a first configuration, then a set of runs that differ from
it in one traced parameter each, and asserts that no cache gained an entry. Catches a
parameter that slipped back into the compile key (e.g. d as a Python number in the chain's
Wishart draw, or the threshold as a static argument): its run would add an entry.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from sgdlab import Chain, Full, Problem, Student, Training, run
from sgdlab.engines._driver import bucket, compiled_programs
from sgdlab.risk import _risk_fn


def counts() -> tuple[int, int, int]:
    return (*compiled_programs(), _risk_fn.cache_info().currsize)


BASE_PB = Problem(d=200, link="h3", noise=0.1)
BASE_ST = Student(activation="h3")
BASE_TR = Training(lr=0.01, steps=100, record_every=10, spherical=True, init=0.3, escape_threshold=0.5)
SEEDS = 17  # bucket 20: 17..20 seeds share a program


def _variants(engine):
    tr = BASE_TR
    out = [
        ("noise", BASE_PB.__class__(d=200, link="h3", noise=0.4), tr, SEEDS),
        ("m0", BASE_PB, dataclasses.replace(tr, init=0.1), SEEDS),
        ("escape_threshold", BASE_PB, dataclasses.replace(tr, escape_threshold=0.2), SEEDS),
        ("stop_fraction", BASE_PB, dataclasses.replace(tr, stop_fraction=0.5), SEEDS),
        ("steps (same record bucket)", BASE_PB, dataclasses.replace(tr, steps=110), SEEDS),
        ("record_every (same record bucket)", BASE_PB, dataclasses.replace(tr, record_every=11), SEEDS),
        ("seeds (same bucket)", BASE_PB, tr, 19),
        ("lr", BASE_PB, dataclasses.replace(tr, lr=0.02), SEEDS),
    ]
    if isinstance(engine, Chain):
        out += [(f"d={d}", Problem(d=d, link="h3", noise=0.1), tr, SEEDS) for d in (1000, 10_000, 100_000)]
    return out


@pytest.mark.parametrize("engine", [Chain(), Full()], ids=["chain", "full"])
def test_traced_parameters_do_not_compile(engine):
    run(BASE_PB, BASE_ST, BASE_TR, engine=engine, seeds=SEEDS, seed=1)
    before = counts()
    for name, pb, tr, seeds in _variants(engine):
        res = run(pb, BASE_ST, tr, engine=engine, seeds=seeds, seed=2)
        assert res.M.shape[0] == seeds
        assert counts() == before, f"{name} compiled a new program: {before} -> {counts()}"


def test_the_traced_values_are_used():
    """The traced numbers reach the program: a different d, noise or m0 gives a different
    trajectory from the same keys (and the same d gives the same one)."""
    ref = run(BASE_PB, BASE_ST, BASE_TR, seeds=4, seed=3)
    same = run(BASE_PB, BASE_ST, BASE_TR, seeds=4, seed=3)
    assert (ref.Q == same.Q).all()
    for pb, tr in ((Problem(d=400, link="h3", noise=0.1), BASE_TR), (Problem(d=200, link="h3", noise=0.5), BASE_TR),
                   (BASE_PB, dataclasses.replace(BASE_TR, init=0.35))):
        other = run(pb, BASE_ST, tr, seeds=4, seed=3)
        assert (other.M[:, -1] != ref.M[:, -1]).all()


def test_structure_still_compiles():
    """A new batch size is structure: it must compile (the counter works)."""
    run(BASE_PB, BASE_ST, BASE_TR, seeds=SEEDS)
    before = counts()
    run(BASE_PB, BASE_ST, dataclasses.replace(BASE_TR, batch=3), seeds=SEEDS)
    assert counts()[1] > before[1]


@pytest.mark.parametrize("n, b", [(1, 1), (3, 4), (5, 8), (8, 8), (9, 10), (17, 20), (400, 448), (1500, 1536)])
def test_buckets(n, b):
    assert bucket(n) == b and bucket(b) == b


def test_ode_traced_numbers_do_not_compile():
    """The ODE's field and solver are built per structure: a new lr, lr_second, horizon (same
    record bucket), d, label noise, m0 or threshold traces nothing (counted with jax's trace
    events), and each new value is used."""
    import collections

    from jax import monitoring

    from sgdlab import ODE

    events = collections.Counter()
    monitoring.register_event_duration_secs_listener(lambda name, dur, **kw: events.update([name]))
    pb, st = Problem(d=500, link="h3", noise=0.2), Student(activation="h3", second_layer="trained")
    tr = Training(lr=1e-3, steps=1000, record_every=100, spherical=True, init=0.3)
    first = run(pb, st, tr, engine=ODE())
    events.clear()
    for vpb, variant in ((pb, dataclasses.replace(tr, lr=2e-3)), (pb, dataclasses.replace(tr, lr_second=5e-4)),
                         (pb, dataclasses.replace(tr, steps=1100)), (pb, dataclasses.replace(tr, init=0.25)),
                         (Problem(d=800, link="h3", noise=0.2), tr), (Problem(d=500, link="h3", noise=0.6), tr)):
        res = run(vpb, st, variant, engine=ODE())
        assert not np.array_equal(res.M[0, -1], first.M[0, -1])  # the new value was used
    res = run(pb, st, dataclasses.replace(tr, escape_threshold=0.9), engine=ODE())
    assert np.isnan(res.escape_step[0]) or res.escape_step[0] >= first.escape_step[0]
    assert events["/jax/core/compile/jaxpr_trace_duration"] == 0, dict(events)


def test_chain_programs_take_the_cpu_compiler_options(monkeypatch):
    """On CPU the chain's two programs are compiled with ``CPU_COMPILER_OPTIONS`` (XLA's
    element-wise fusion emitters: about half the compile time at XLA level 0, BENCHMARKS.md)
    and the full engine's with XLA's own; ``SGDLAB_XLA=default`` gives the chain XLA's
    own too. Catches options that stop reaching the compiler (a driver that jits every
    program alike) or an environment switch that does nothing."""
    import jax

    from sgdlab._xla import CPU_COMPILER_OPTIONS
    from sgdlab.engines._driver import _JITTED
    from sgdlab.model import Model

    if jax.default_backend() != "cpu":
        pytest.skip("the options are for the CPU backend")
    model = Model(BASE_PB, BASE_ST, BASE_TR)
    assert Chain().build(model).compiler_options == CPU_COMPILER_OPTIONS != ()
    assert Full(dtype="float32").build(model).compiler_options == ()
    run(BASE_PB, BASE_ST, BASE_TR, engine=Chain(), seeds=SEEDS)
    assert any(opts == CPU_COMPILER_OPTIONS for _, opts in _JITTED)
    monkeypatch.setenv("SGDLAB_XLA", "default")
    assert Chain().build(model).compiler_options == ()
