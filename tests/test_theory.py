"""Single-index theory: drift, V, escape integrals, critical step sizes, and the ODE engine."""

import math

import numpy as np
import pytest
import scipy.integrate
from numpy.polynomial import hermite_e as He

from sgdlab import ODE, Problem, Student, Training, run
from sgdlab.theory import (
    V,
    critical_delta,
    critical_lr,
    critical_lr_closed_form,
    critical_overlap,
    drift,
    effective_drift,
    escape_integral,
    escape_steps_effective,
    theory_lr,
)

M = np.array([0.0, 0.05, 0.3, 0.7, 0.95])


def test_drift_h3_and_mixed_students():
    np.testing.assert_allclose(drift(M, "h3"), 3 * M**2 * (1 - M**2), rtol=0, atol=1e-15)
    # He3 = sqrt(6) h3: the product of coefficients carries sqrt(6)
    np.testing.assert_allclose(drift(M, "h3", "He3"), 3 * math.sqrt(6) * M**2 * (1 - M**2), atol=1e-14)
    # h1 + h2 target, h2 student: only the j = 2 term survives
    np.testing.assert_allclose(drift(M, [0, 1, 1], "h2"), 2 * M * (1 - M**2), atol=1e-15)
    assert drift(0.3, "h3").shape == ()


def test_escape_integral_h3_closed_form():
    F = lambda m: -1 / (3 * m) + math.log((1 + m) / (1 - m)) / 6  # noqa: E731
    for m0, m1 in [(0.05, 0.5), (0.01, 0.9), (0.3, 0.4)]:
        assert escape_integral("h3", m0, m1) == pytest.approx(F(m1) - F(m0), rel=1e-10)
    assert escape_integral("h3", 0.0, 0.5) == math.inf
    # an anti-aligned student never escapes towards +m
    assert escape_integral("h3", 0.05, 0.5, student=[0, 0, 0, -1]) == math.inf


def _expect_poly(c):
    """E[p(Z)] for p in the HermiteE basis: the He_0 coefficient."""
    return float(c[0])


def test_V0_h3_by_hermite_linearisation():
    # u, v independent at m = 0: V = E[h3^2 h3'^2] - 2 E[h3 h3'^2] E[h3] + E[h3'^2] E[h3^2]
    h3 = np.array([0, 0, 0, 1]) / math.sqrt(6)  # HermiteE coefficients
    dh3 = He.hermeder(h3)
    d2 = He.hermemul(dh3, dh3)
    ref = _expect_poly(He.hermemul(He.hermemul(h3, h3), d2)) + _expect_poly(d2) * _expect_poly(He.hermemul(h3, h3))
    assert ref == pytest.approx(96.0, rel=1e-12)
    assert float(V(0.0, "h3")) == pytest.approx(ref, rel=1e-12)
    # noise adds noise^2 E[sigma'^2] = 3 noise^2; correlation loss drops sigma^2 terms
    assert float(V(0.0, "h3", noise=0.5)) == pytest.approx(96.0 + 0.75, rel=1e-12)
    assert float(V(0.0, "h3", loss="correlation")) == pytest.approx(3.0, rel=1e-12)


def test_V_at_correlation_by_dblquad():
    m = 0.6
    s = math.sqrt(1 - m * m)
    h3 = lambda x: (x**3 - 3 * x) / math.sqrt(6)  # noqa: E731
    dh3 = lambda x: (3 * x**2 - 3) / math.sqrt(6)  # noqa: E731
    phi = lambda x: math.exp(-x * x / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    f = lambda z2, z1: (h3(z1) - h3(m * z1 + s * z2)) ** 2 * dh3(z1) ** 2 * phi(z1) * phi(z2)  # noqa: E731
    ref, _ = scipy.integrate.dblquad(f, -12, 12, -12, 12, epsabs=1e-10, epsrel=1e-10)
    assert float(V(m, "h3")) == pytest.approx(ref, rel=1e-7)
    assert V(M, "h3").shape == M.shape


def test_effective_drift_is_drift_minus_renormalisation():
    lr, d = 1e-6, 1e4
    expected = lr * drift(M, "h3") - 0.5 * lr**2 * d * M * V(M, "h3")
    np.testing.assert_allclose(effective_drift(M, lr, d, "h3"), expected, rtol=1e-14)
    # tiny lr d: the noise-free escape integral
    assert escape_steps_effective("h3", 0.05, 0.5, 1e-15, 10.0) * 1e-15 == pytest.approx(
        escape_integral("h3", 0.05, 0.5), rel=1e-9
    )


def test_critical_overlap_and_lr_are_inverse():
    d = 1e4
    for m0 in (0.01, 0.02, 0.05):
        lr_c = critical_lr_closed_form("h3", m0, d)
        assert critical_overlap("h3", lr_c, d) == pytest.approx(m0, rel=1e-12)
    assert critical_overlap("h3", 0.01 / 1e6, 1e6) == pytest.approx(0.01 * 96 / 6, rel=1e-12)
    # numerical threshold (bisection on the finiteness of the escape step count) vs closed form:
    # they differ by the (1 - m^2) factor and V(m) - V(0) = O(m^2)
    m0 = 0.02
    num = critical_lr("h3", m0, d)
    assert num == pytest.approx(critical_lr_closed_form("h3", m0, d), rel=2e-3)
    assert math.isfinite(escape_steps_effective("h3", m0, 0.5, 0.99 * num, d))
    assert escape_steps_effective("h3", m0, 0.5, 1.01 * num, d) == math.inf
    # k = 4: m_c = (lr d V(0) / 8)^(1/2)
    lr_c = critical_lr_closed_form("h4", 0.1, d)
    assert critical_overlap("h4", lr_c, d) == pytest.approx(0.1, rel=1e-12)
    with pytest.raises(ValueError):
        critical_overlap("h2", 1e-4, d)


def test_theory_lr_conventions():
    d = 1000.0
    assert theory_lr(1, d, 0.5) == pytest.approx(0.5 / d)
    assert theory_lr(2, d, 0.5) == pytest.approx(0.5 / (d * math.log(d)))
    assert theory_lr(2, d, 0.5, log_step=False) == pytest.approx(0.5 / d)
    assert theory_lr(3, d, 0.5) == pytest.approx(0.5 * d**-1.5)
    assert theory_lr(4, d, 0.5) == pytest.approx(0.5 / d**2)
    # delta_c = 2 k |c_k| / V(0): h3 square loss V(0) = 96
    assert critical_delta("h3") == pytest.approx(6 / 96, rel=1e-12)
    dc = critical_delta("h3")
    for dd in (1e3, 1e5):
        m0 = dd**-0.5
        assert theory_lr(3, dd, dc) == pytest.approx(critical_lr_closed_form("h3", m0, dd), rel=1e-12)


@pytest.mark.parametrize("lrd, escapes", [(0.001, True), (0.01, False)])
def test_effective_escape_matches_ode_engine(lrd, escapes):
    d, m0 = 10**6, 0.05
    lr = lrd / d
    theory = escape_steps_effective("h3", m0, 0.5, lr, d)
    res = run(
        Problem(d=d, link="h3"),
        Student(activation="h3"),
        Training(lr=lr, steps=2 * 10**10, spherical=True, init=m0, record_every=10**9),
        engine=ODE(),
    )
    step = res.escape_step[0]
    if escapes:
        # lr d = 1e-3: m_c = 0.016 < m0, escape in ~7.6e9 steps; the ODE's extra terms are O(1/d)
        assert math.isfinite(theory) and step > 0
        assert abs(step - theory) / theory < 1e-3
    else:
        # lr d = 1e-2: m_c = 0.16 > m0 = 0.05, the renormalisation term traps the overlap
        assert critical_overlap("h3", lr, d) > m0
        assert theory == math.inf and np.isnan(step)
