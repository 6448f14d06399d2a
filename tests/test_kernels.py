"""Gaussian pair kernels and quadrature (sgdlab._kernels)."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

from sgdlab._functions import hermite_coefficients, resolve_fn
from sgdlab._kernels import expectation_1d, gaussian_expectation, mehler, pair_expectation

jax.config.update("jax_enable_x64", True)

PY = {
    "relu": lambda z: max(z, 0.0),
    "sign": lambda z: float(np.sign(z)),
    "abs": abs,
    "erf": lambda z: math.erf(z / math.sqrt(2.0)),
    "tanh": math.tanh,
    "h3": lambda z: (z**3 - 3 * z) / math.sqrt(6.0),
}
COVS = [(1.0, 1.0, 0.3), (2.0, 0.5, 0.7), (0.3, 4.0, -0.9), (1.5, 0.8, 0.0), (3.0, 2.0, -2.0)]


def dblquad_reference(f, g, q1, q2, c):
    """E[f(u) g(v)] by adaptive quadrature of the bivariate normal density,
    split into the four quadrants (the kinks of relu/sign/abs lie on the axes)."""
    det = q1 * q2 - c * c
    norm = 1.0 / (2 * math.pi * math.sqrt(det))

    def dens(v, u):
        return f(u) * g(v) * norm * math.exp(-0.5 * (q2 * u * u - 2 * c * u * v + q1 * v * v) / det)

    total = 0.0
    for su, sv in itertools.product((-1.0, 1.0), repeat=2):
        val, _ = integrate.dblquad(
            lambda v, u, su=su, sv=sv: dens(sv * v, su * u), 0, np.inf, 0, np.inf, epsabs=1e-13, epsrel=1e-13
        )
        total += val
    return total


def abs_abs(q1, q2, c):
    s = math.sqrt(q1 * q2)
    r = c / s
    return 2 * s / math.pi * (math.sqrt(1 - r * r) + r * math.asin(r))


@pytest.mark.parametrize("cov", COVS)
@pytest.mark.parametrize("pair", [("erf", "erf"), ("relu", "relu"), ("sign", "sign")])
def test_closed_forms_vs_dblquad(pair, cov):
    ref = dblquad_reference(PY[pair[0]], PY[pair[1]], *cov)
    assert float(pair_expectation(*pair, *cov)) == pytest.approx(ref, abs=1e-10)


@pytest.mark.parametrize("cov", COVS[:3])
@pytest.mark.parametrize("pair", [("tanh", "tanh"), ("relu", "h3"), ("tanh", "relu"), ("sign", "erf"), ("abs", "abs")])
def test_quadrature_pairs_vs_dblquad(pair, cov):
    ref = dblquad_reference(PY[pair[0]], PY[pair[1]], *cov)
    assert float(pair_expectation(*pair, *cov)) == pytest.approx(ref, abs=1e-10)


RHOS = [0.0, 0.3, -0.7, 0.95, 0.999, -0.99999]


@pytest.mark.parametrize("rho", RHOS)
@pytest.mark.parametrize("qs", [(1.0, 1.0), (2.5, 0.4), (0.1, 3.0), (100.0, 30.0)])
def test_kinked_quadrature_vs_closed_forms(qs, rho):
    q1, q2 = qs
    c = rho * math.sqrt(q1 * q2)
    for name in ("relu", "sign"):
        closed = float(pair_expectation(name, name, q1, q2, c))
        quad = float(pair_expectation(name, name, q1, q2, c, n=64))
        assert quad == pytest.approx(closed, abs=5e-14 * math.sqrt(q1 * q2))
    absq = float(pair_expectation("abs", "abs", q1, q2, c))
    assert absq == pytest.approx(abs_abs(q1, q2, c), abs=5e-14 * math.sqrt(q1 * q2))
    erf_quad = float(pair_expectation("erf", "erf", q1, q2, c, n=64))
    assert erf_quad == pytest.approx(float(pair_expectation("erf", "erf", q1, q2, c)), abs=1e-14)


POLY = ["h1", "h2", "h3", "He4", "h5", "He8", [0.3, -0.2, 0.5, 0.0, 0.1], [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0]]


@pytest.mark.parametrize("f,g", list(itertools.combinations_with_replacement(range(len(POLY)), 2)))
def test_mehler_polynomials(f, g):
    f, g = POLY[f], POLY[g]
    cf, cg = hermite_coefficients(f, 8), hermite_coefficients(g, 8)
    for rho in (-0.9, -0.3, 0.0, 0.5, 0.8, 1.0):
        assert float(pair_expectation(f, g, 1.0, 1.0, rho)) == pytest.approx(
            float(mehler(cf, cg, rho)), rel=1e-14, abs=1e-12
        )


def test_mehler_smooth_and_kinked():
    # the Mehler series (truncated at K=60) for relu/erf vs the closed forms
    for name in ("relu", "erf"):
        c = hermite_coefficients(name, 60)
        for rho in (-0.5, 0.2, 0.6):
            closed = float(pair_expectation(name, name, 1.0, 1.0, rho))
            if name == "erf":  # erf(z/sqrt2) at unit variance: (2/pi) arcsin(rho/2)
                assert closed == pytest.approx(2 / math.pi * math.asin(rho / 2), abs=1e-15)
            assert float(mehler(c, c, rho)) == pytest.approx(closed, abs=1e-9)
    np.testing.assert_allclose(mehler([1.0, 2.0], [3.0, 4.0, 5.0], jnp.array([0.0, 0.5])), [3.0, 7.0])


def test_polynomial_nonunit_variance():
    # E[He2(u) He2(v)] = E[(u^2-1)(v^2-1)] = q1 q2 + 2c^2 - q1 - q2 + 1
    for q1, q2, c in COVS:
        expect = q1 * q2 + 2 * c * c - q1 - q2 + 1
        assert float(pair_expectation("He2", "He2", q1, q2, c)) == pytest.approx(expect, abs=1e-12)
    # E[u^3 v] = 3 q1 c  (He3 = u^3 - 3u, He1 = v: E = 3 q1 c - 3 c)
    assert float(pair_expectation("He3", "He1", 2.0, 0.7, 0.5)) == pytest.approx(3 * 2 * 0.5 - 3 * 0.5, abs=1e-13)


def test_degenerate_covariances():
    assert float(pair_expectation("h2", "h2", 0.0, 1.0, 0.0)) == pytest.approx(0.0, abs=1e-15)  # h2(0) E h2 = 0
    assert float(pair_expectation("He2", "He2", 2.0, 2.0, 2.0)) == pytest.approx(3 * 4 - 2 * 2 + 1, abs=1e-12)
    assert float(pair_expectation("relu", "relu", 2.0, 2.0, 2.0)) == pytest.approx(1.0, abs=1e-14)  # E relu(u)^2 = q/2
    assert float(pair_expectation("relu", "relu", 2.0, 2.0, 2.0, n=64)) == pytest.approx(1.0, abs=1e-13)
    assert float(pair_expectation("relu", "tanh", 0.0, 1.0, 0.0)) == 0.0
    for name in ("relu", "sign", "tanh"):
        assert np.isfinite(float(pair_expectation(name, name, 0.0, 0.0, 0.0)))


@pytest.mark.parametrize(
    "pair", [("relu", "relu"), ("erf", "erf"), ("sign", "sign"), ("h2", "He3"), ("tanh", "tanh"), ("relu", "h3")]
)
def test_jit_vmap_broadcast(pair):
    cs = jnp.linspace(-0.8, 0.8, 5)
    loop = np.array([float(pair_expectation(*pair, 1.2, 0.9, c)) for c in cs])
    vm = jax.jit(jax.vmap(lambda c: pair_expectation(*pair, 1.2, 0.9, c)))(cs)
    np.testing.assert_allclose(vm, loop, atol=1e-14)
    vq = jax.vmap(lambda q1, c: pair_expectation(*pair, q1, 0.9, c))(jnp.full(5, 1.2), cs)
    np.testing.assert_allclose(vq, loop, atol=1e-14)
    np.testing.assert_allclose(pair_expectation(*pair, 1.2, 0.9, cs), loop, atol=1e-14)


def test_gradients_finite_and_correct():
    # d/dc E[h3(u) h3(v)] = 3 c^2 at unit variance (Mehler)
    g = jax.grad(lambda c: pair_expectation("h3", "h3", 1.0, 1.0, c))(0.4)
    assert float(g) == pytest.approx(3 * 0.16, abs=1e-12)
    # relu-relu: d/dc = (pi - arccos rho) / (2 pi)
    g = jax.grad(lambda c: pair_expectation("relu", "relu", 1.0, 1.0, c))(0.4)
    assert float(g) == pytest.approx((math.pi - math.acos(0.4)) / (2 * math.pi), abs=1e-12)
    assert np.isfinite(float(jax.grad(lambda q: pair_expectation("h2", "h2", q, 1.0, 0.0))(0.0)))


def test_expectation_1d():
    for q in (0.0, 0.3, 1.0, 4.0):
        assert float(expectation_1d("relu", q)) == pytest.approx(math.sqrt(q / (2 * math.pi)), abs=1e-14)
        assert float(expectation_1d("abs", q)) == pytest.approx(math.sqrt(2 * q / math.pi), abs=1e-14)
        assert float(expectation_1d("He4", q)) == pytest.approx(3 * q * q - 6 * q + 3, abs=1e-12)
        assert float(expectation_1d(lambda x: jnp.cos(x), q)) == pytest.approx(math.exp(-q / 2), abs=1e-14)

        def integrand(z, q=q):
            return math.tanh(math.sqrt(q) * z) ** 2 * math.exp(-z * z / 2) / math.sqrt(2 * math.pi)

        ref = integrate.quad(integrand, -np.inf, np.inf, epsabs=1e-14)[0]
        assert float(expectation_1d(lambda x: jnp.tanh(x) ** 2, q)) == pytest.approx(ref, abs=1e-13)
    qs = jnp.array([0.5, 2.0])
    np.testing.assert_allclose(
        jax.jit(jax.vmap(lambda q: expectation_1d("h2", q)))(qs), (qs - 1) / math.sqrt(2), atol=1e-14
    )


@pytest.mark.parametrize(
    "Q",
    [
        np.array([[2.0, 0.5, -0.3], [0.5, 1.0, 0.2], [-0.3, 0.2, 1.5]]),
        np.outer([1.0, -2.0, 0.5], [1.0, -2.0, 0.5]),  # rank 1
        np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]),  # rank 1, zero row
        np.array([[1.0, 0.3, 1.3], [0.3, 2.0, 2.3], [1.3, 2.3, 3.6]]),  # rank 2: z3 = z1 + z2
    ],
)
def test_gaussian_expectation_moments(Q):
    def fun(z):
        z1, z2, z3 = z[..., 0], z[..., 1], z[..., 2]
        return jnp.stack([z1**2 * z2**2, z1 * z3, z1 * z2 * z3**2, z3**4], axis=-1)

    expect = [
        Q[0, 0] * Q[1, 1] + 2 * Q[0, 1] ** 2,
        Q[0, 2],
        Q[0, 1] * Q[2, 2] + 2 * Q[0, 2] * Q[1, 2],
        3 * Q[2, 2] ** 2,
    ]
    np.testing.assert_allclose(gaussian_expectation(fun, Q, 3), expect, atol=1e-12)
    scalar = jax.jit(lambda C: gaussian_expectation(lambda z: z[..., 0] ** 2 * z[..., 1] ** 2, C, 3))(jnp.asarray(Q))
    assert scalar.shape == () and float(scalar) == pytest.approx(expect[0], abs=1e-12)


def test_gaussian_expectation_vmap_smooth():
    Qs = jnp.stack([jnp.array([[1.0, r], [r, 1.0]]) for r in (0.0, 0.4, -0.8)])
    # E[sign(u) v] = sqrt(2/pi) c
    ref = [float(pair_expectation("sign", "h1", 1.0, 1.0, r)) for r in (0.0, 0.4, -0.8)]
    np.testing.assert_allclose(ref, np.sqrt(2 / np.pi) * np.array([0.0, 0.4, -0.8]), atol=1e-14)
    v = jax.vmap(lambda C: gaussian_expectation(lambda z: jnp.cos(z[..., 0] - z[..., 1]), C, 30))(Qs)
    # E cos(u - v) = exp(-Var(u - v)/2) = exp(-(1 - r))
    np.testing.assert_allclose(v, np.exp(-(1 - np.array([0.0, 0.4, -0.8]))), atol=1e-14)


def test_fn_objects_accepted():
    f = resolve_fn("relu")
    assert float(pair_expectation(f, f, 1.0, 1.0, 1.0)) == pytest.approx(0.5, abs=1e-15)
