"""The ODE engine against closed-form theory (BAGJ effective dynamics) and against the chain."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate

from sgdlab import ODE, Chain, Problem, Student, Training, hermite_coefficients, run
from sgdlab._functions import gauss_hermite, resolve_fn


def single(d, link, lr, steps, m0, every=None, second_order=True, thr=0.5):
    return run(
        Problem(d=d, link=link),
        Student(activation=link),
        Training(lr=lr, steps=steps, spherical=True, init=m0, record_every=every or steps, escape_threshold=thr),
        engine=ODE(second_order=second_order),
    )


@pytest.mark.parametrize("link", ["h3", [0.0, 0.0, 0.6, 0.8], "He2"])
def test_first_order_escape_matches_the_noise_free_integral(link):
    """Without the lr^2 term, spherical gradient flow on phi(m) = sum_j c_j^2 (1 - m^j):
    dm/dk = lr (1 - m^2) sum_j j c_j^2 m^(j-1); the escape step is the integral of 1/(that)
    from m0 to the threshold. Catches a missing tangent projection (1 - m^2), a wrong
    factor of the drift or a wrong event location (checked to one step in ~10^5)."""
    c = hermite_coefficients(link, K=8)
    lr, m0, thr = 1e-5, 0.2, 0.5
    drift = lambda m: (1 - m * m) * sum(j * c[j] ** 2 * m ** (j - 1) for j in range(1, len(c)))
    T, _ = integrate.quad(lambda m: 1.0 / drift(m), m0, thr, epsabs=1e-13, epsrel=1e-13)
    expected = math.ceil(T / lr)
    res = single(10**6, link, lr, 2 * expected, m0, second_order=False, thr=thr)
    assert abs(res.escape_step[0] - expected) <= 1, (res.escape_step[0], expected)


def _v0(link):
    """V(0) = E[(sigma(u) - g(v))^2 sigma'(u)^2], u, v independent (sigma = g = link)."""
    f = resolve_fn(link)
    x, w = gauss_hermite(40)
    u, v = np.meshgrid(x, x, indexing="ij")
    W = np.outer(w, w)
    return float(np.sum(W * (np.asarray(f(u)) - np.asarray(f(v))) ** 2 * np.asarray(f.deriv(u)) ** 2))


@pytest.mark.parametrize("factor, escapes", [(1.15, True), (0.85, False)])
def test_second_order_term_makes_the_equator_attracting_below_m_c(factor, escapes):
    """BAGJ: with k = 3 the equator is attracting below m_c = lr d V(0) / (2 k c_k^2).
    Starting 15% above m_c escapes, 15% below decays. Catches an ODE without the lr^2 d
    term (everything would escape) or with a wrong factor (e.g. d/2 vs d)."""
    d, lr = 10**6, 0.02 / 10**6
    m_c = lr * d * _v0("h3") / (2 * 3 * 1.0)
    m0 = factor * m_c
    steps = int(20 / (lr * 3 * m_c))
    res = single(d, "h3", lr, steps, m0, every=steps // 10)
    m = res.M[0, :, 0, 0]
    if escapes:
        assert res.escape_step[0] > 0 and m[-1] > 0.9
    else:
        assert np.isnan(res.escape_step[0]) and m[-1] < 0.5 * m0
    no_second = single(d, "h3", lr, steps, m0, every=steps // 10, second_order=False)
    assert no_second.escape_step[0] > 0  # without the term both starts escape


def test_trillion_step_horizon_and_escape_beyond_int32():
    """A 10^12-step run costs a few hundred adaptive steps; the escape step (~10^11) is
    exact in int64, after the noise-free time and before twice it (start at 3 m_c)."""
    d = 10**6
    m0 = math.sqrt(d * _v0("h3") / 3e12)  # = 3 m_c for lr = 1 / (3 m0 5e11)
    lr = 1.0 / (3 * m0 * 5e11)
    res = single(d, "h3", lr, 10**12, m0, every=10**10)
    assert res.steps[-1] == 10**12 and res.steps.dtype == np.int64
    T, _ = integrate.quad(lambda m: 1.0 / (3 * m * m * (1 - m * m)), m0, 0.5)
    first_order = T / lr
    assert res.escape_step[0] > 2**31
    # the lr^2 d term only slows the search
    assert first_order < res.escape_step[0] < 2 * first_order


def _warm_gap(d, seeds=400):
    pb, st = Problem(d=d, link="h3"), Student(activation="h3")
    tr = Training(lr=0.1 / d, steps=int(7 * d), spherical=True, init=0.3, record_every=int(7 * d) // 14)
    ode = run(pb, st, tr, engine=ODE())
    ch = run(pb, st, tr, engine=Chain(), seeds=seeds, seed=11)
    return np.max(np.abs(ode.M[0, :, 0, 0] - ch.M[:, :, 0, 0].mean(axis=0))), ch


def test_ode_is_the_large_d_limit_of_the_chain():
    """Mean chain trajectory vs ODE on a warm start (m0 = 0.3, lr d = 0.1): the largest
    gap shrinks with d (fitted log-log slope near -1/2, measured -0.49 with 1000 seeds)
    and is small at the largest d. Catches an ODE whose drift or lr^2 term is off by a
    d-independent amount (the gap would not shrink)."""
    ds = np.array([64, 256, 1024])
    gaps = np.array([_warm_gap(int(d))[0] for d in ds])
    slope = np.polyfit(np.log(ds), np.log(gaps), 1)[0]
    assert -1.2 < slope < -0.25, (gaps, slope)
    assert gaps[-1] < 0.06, gaps


def test_ode_matches_chain_for_a_trained_committee_with_batches_and_noise():
    """p = 2, r = 2 erf committee, plain SGD, batch 4, label noise, trained second layer:
    at d = 2000 the chain's mean M, Q, a agree with the ODE within 5 standard errors at
    every record, while the ODE without the lr^2 term misses Q by many standard errors.
    Catches a wrong batch factor d/n_b or a missing (1 - 1/n_b) squared-mean term."""
    d, seeds = 2000, 300
    pb = Problem(d=d, link="erf", directions=2, noise=0.2)
    st = Student(width=2, activation="erf", second_layer="trained")
    tr = Training(lr=4.0 / d, batch=4, steps=2000, record_every=500, init=0.1)
    ode = run(pb, st, tr, engine=ODE(nodes=8))
    assert ode.info["quadrature_error"] < 5e-3  # 8 vs 6 nodes per axis: a bound on the 8-node error
    ch = run(pb, st, tr, engine=Chain(), seeds=seeds, seed=3)
    for name in ("M", "Q", "a"):
        x = getattr(ch, name)
        mean, se = x.mean(axis=0), x.std(axis=0) / math.sqrt(seeds) + 1e-12
        z = np.abs(getattr(ode, name)[0] - mean) / se
        assert z.max() < 5, (name, z.max())
    first = run(pb, st, tr, engine=ODE(nodes=8, second_order=False))
    q_mean, q_se = ch.Q[:, -1, 0, 0].mean(), ch.Q[:, -1, 0, 0].std() / math.sqrt(seeds)
    assert abs(first.Q[0, -1, 0, 0] - q_mean) > 20 * q_se


def test_runaway_is_reported_as_divergence_not_a_hang():
    """Plain SGD with a step far too large: Q explodes. The ODE stops at the divergence
    event (a squared norm past MAX_NORM2), reports the step, and later records are NaN.
    Catches a solver that grinds to max_steps or returns inf silently."""
    tr = Training(lr=1.0, steps=10_000, record_every=1000, init=0.3)
    res = run(Problem(d=100, link="h3"), Student(activation="h3"), tr, engine=ODE())
    k = res.diverged_step[0]
    assert 0 < k < 10_000
    after = res.steps >= k
    assert np.isnan(res.Q[0][after]).all() and np.isfinite(res.Q[0][~after]).all()


def test_declared_schedule_jumps_are_solver_stops():
    """A mixture whose orthogonal noise switches at step 300 (``Switch``, which declares its
    jump): the ODE steps to the switch exactly, with far fewer rejected steps than when the
    jump is hidden (the solver then finds it by shrinking its steps), and the same solution
    (within the solver's tolerance). Catches declared jumps that never reach the solver, or
    a stop placed at the wrong time (the solutions would then differ after the switch)."""
    import sgdlab.engines.ode as ode_mod
    from sgdlab.data import Mixture, Switch, schedule_jumps

    law = Mixture(means=[[1.0, 0.0], [0.0, 1.0]], sigma_perp=Switch(300, (0.6, 0.6), (1.0, 1.0)))
    assert schedule_jumps(law) == (300.0,)
    args = (Problem(d=100, link="h2", directions=1, data=law), Student(activation="h2", second_layer="trained"),
            Training(lr=0.01, steps=600, init=0.3, record_every=50))
    seen = run(*args, engine=ODE())
    hidden = ode_mod.schedule_jumps
    try:
        ode_mod.schedule_jumps = lambda *objs: ()
        blind = run(*args, engine=ODE())
    finally:
        ode_mod.schedule_jumps = hidden
    assert seen.info["solver"]["jumps"] == 1 and blind.info["solver"]["jumps"] == 0
    assert seen.info["solver"]["rejected_steps"] * 3 <= blind.info["solver"]["rejected_steps"], (seen.info, blind.info)
    np.testing.assert_allclose(seen.Q, blind.Q, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(seen.M, blind.M, rtol=1e-6, atol=1e-8)
