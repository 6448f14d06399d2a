"""Links, Hermite expansions and information exponents (sgdlab._functions)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.polynomial import hermite_e as H
from scipy import integrate

from sgdlab._functions import (
    LINK_NAMES,
    Fn,
    gauss_hermite,
    hermite_coefficients,
    information_exponent,
    resolve_fn,
)

jax.config.update("jax_enable_x64", True)

K = 12
SMOOTH = [f"h{k}" for k in range(1, 9)] + [f"He{k}" for k in range(1, 9)] + ["erf", "tanh"]
KINKED = ["relu", "sign", "abs"]
PY = {  # independent scalar implementations
    "relu": lambda z: max(z, 0.0),
    "sign": lambda z: float(np.sign(z)),
    "abs": abs,
    "erf": lambda z: math.erf(z / math.sqrt(2.0)),
    "tanh": math.tanh,
}


def h_np(j, x):
    """Orthonormal Hermite h_j via numpy's HermiteE series."""
    return H.hermeval(x, [0.0] * j + [1.0]) / math.sqrt(math.factorial(j))


def gh_reference(f, k=K, n=200):
    x, w = H.hermegauss(n)
    w = w / w.sum()
    fx = np.asarray(f(x), dtype=np.float64)
    return np.array([np.sum(w * fx * h_np(j, x)) for j in range(k + 1)])


def quad_reference(f, j):
    def g(z):
        return f(z) * h_np(j, z) * math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)

    kw = dict(epsabs=1e-14, epsrel=1e-14, limit=200)
    return integrate.quad(g, -np.inf, 0.0, **kw)[0] + integrate.quad(g, 0.0, np.inf, **kw)[0]


def test_link_names():
    assert set(LINK_NAMES) == set(SMOOTH) | set(KINKED)


def test_gauss_hermite_rule():
    x, w = gauss_hermite(20)
    assert x.dtype == np.float64 and abs(w.sum() - 1.0) < 1e-15
    assert abs(np.sum(w * x**4) - 3.0) < 1e-13 and abs(np.sum(w * x**6) - 15.0) < 1e-12
    assert gauss_hermite(20) is gauss_hermite(20)  # cached
    x, w = gauss_hermite(400)  # beyond numpy's overflow limit
    assert np.all(np.isfinite(w)) and abs(np.sum(w * x**2) - 1.0) < 1e-12


@pytest.mark.parametrize("k", range(9))
def test_hermite_recurrence_matches_numpy(k):
    x = np.linspace(-4, 4, 17)
    if k >= 1:
        np.testing.assert_allclose(resolve_fn(f"He{k}")(x), H.hermeval(x, [0] * k + [1]), atol=1e-10)
        np.testing.assert_allclose(resolve_fn(f"h{k}")(x), h_np(k, x), atol=1e-10)
    c = np.zeros(k + 1)
    c[k] = 1.0
    np.testing.assert_allclose(resolve_fn(list(c))(x), h_np(k, x), atol=1e-10)


@pytest.mark.parametrize("name", SMOOTH)
def test_coefficients_smooth_vs_quadrature(name):
    f = resolve_fn(name)
    ref = gh_reference(lambda x: np.asarray(f(jnp.asarray(x))))
    np.testing.assert_allclose(hermite_coefficients(name, K), ref, atol=1e-10)


@pytest.mark.parametrize("name", KINKED + ["erf", "tanh"])
def test_coefficients_vs_adaptive_quadrature(name):
    ref = np.array([quad_reference(PY[name], j) for j in range(K + 1)])
    np.testing.assert_allclose(hermite_coefficients(name, K), ref, atol=1e-12)


def test_closed_forms_low_order():
    s2pi = math.sqrt(2 * math.pi)
    np.testing.assert_allclose(
        hermite_coefficients("relu", 4),
        [1 / s2pi, 0.5, 1 / (s2pi * math.sqrt(2)), 0, -1 / (s2pi * math.sqrt(24))],
        atol=1e-15,
    )
    np.testing.assert_allclose(
        hermite_coefficients("sign", 3),
        [0, math.sqrt(2 / math.pi), 0, -math.sqrt(2 / math.pi) / math.sqrt(6)],
        atol=1e-15,
    )
    np.testing.assert_allclose(
        hermite_coefficients("erf", 3), [0, 1 / math.sqrt(math.pi), 0, -1 / (2 * math.sqrt(6 * math.pi))], atol=1e-15
    )
    np.testing.assert_allclose(
        hermite_coefficients("abs", 2), [math.sqrt(2 / math.pi), 0, 2 / (s2pi * math.sqrt(2))], atol=1e-15
    )


def test_hermite_link_coefficients():
    np.testing.assert_array_equal(hermite_coefficients("h3"), [0, 0, 0, 1, 0, 0, 0, 0, 0])
    c = hermite_coefficients("He3")
    assert c[3] == pytest.approx(math.sqrt(6), abs=1e-15) and np.count_nonzero(c) == 1
    np.testing.assert_array_equal(hermite_coefficients([0.5, 0, 2.0], K=4), [0.5, 0, 2.0, 0, 0])
    np.testing.assert_array_equal(hermite_coefficients([1, 2, 3, 4], K=1), [1, 2])
    assert hermite_coefficients("tanh").dtype == np.float64


def test_callable_coefficients_numerical():
    c = hermite_coefficients(lambda x: x**3, K=5)  # z^3 = He3 + 3 He1
    np.testing.assert_allclose(c, [0, 3, 0, math.sqrt(6), 0, 0], atol=1e-12)


@pytest.mark.parametrize(
    "target,student,expected",
    [(f"h{k}", None, k) for k in range(1, 9)]
    + [(f"He{k}", None, k) for k in range(1, 9)]
    + [("relu", None, 1), ("erf", None, 1), ("tanh", None, 1), ("sign", None, 1), ("abs", None, 2)]
    + [
        ("h3", "relu", None),
        ("He4", "relu", 4),
        ("h2", "relu", 2),
        ("h3", "erf", 3),
        ("sign", "abs", None),
        ("abs", "relu", 2),
        ([0, 0, 1, 1], "tanh", 3),
        ([0, 0, 0], None, None),
        ("h8", "h1", None),
    ],
)
def test_information_exponent(target, student, expected):
    assert information_exponent(target, student=student) == expected


def test_information_exponent_K():
    assert information_exponent("h6", K=5) is None
    assert information_exponent("h6", K=6) == 6


def test_resolve_fn():
    relu = resolve_fn("relu")
    assert resolve_fn(relu) is relu and relu.kink and relu.degree is None
    assert resolve_fn("He5").degree == 5 and not resolve_fn("He5").kink
    fn = resolve_fn([0, 0, 1.5])
    assert fn.name == "hermite[0,0,1.5]" and fn.degree == 2
    assert resolve_fn(fn.name).coeffs == fn.coeffs  # the name round-trips
    assert resolve_fn(np.array([0.0, 1.0])).degree == 1
    custom = resolve_fn(jnp.sin)
    assert isinstance(custom, Fn) and custom.degree is None and not custom.kink
    assert custom.name == getattr(jnp.sin, "__name__", "custom")

    def my_link(x):
        return x**2

    assert resolve_fn(my_link).name == "my_link"


@pytest.mark.parametrize("bad", ["foo", "h9", "hermite[a,b]", 3.0, None, [], ["x"]])
def test_resolve_fn_errors(bad):
    with pytest.raises(ValueError) as ei:
        resolve_fn(bad, field="target")
    msg = str(ei.value)
    assert msg.startswith("target:") and repr(bad) in msg and "allowed" in msg and "\n" not in msg


def test_deriv():
    x = jnp.array([[-1.5, -0.2, 0.3], [0.7, 2.0, -3.0]])
    np.testing.assert_array_equal(resolve_fn("relu").deriv(x), (x > 0).astype(float))
    np.testing.assert_array_equal(resolve_fn("sign").deriv(x), jnp.zeros_like(x))
    np.testing.assert_array_equal(resolve_fn("abs").deriv(x), jnp.sign(x))
    # h_k' = sqrt(k) h_{k-1}
    np.testing.assert_allclose(resolve_fn("h3").deriv(x), math.sqrt(3) * resolve_fn("h2")(x), atol=1e-13)
    np.testing.assert_allclose(resolve_fn("tanh").deriv(x), 1 - jnp.tanh(x) ** 2, atol=1e-14)
    np.testing.assert_allclose(resolve_fn("erf").deriv(x), math.sqrt(2 / math.pi) * jnp.exp(-(x**2) / 2), atol=1e-14)
    d = resolve_fn("He4").deriv
    np.testing.assert_allclose(jax.jit(d)(x), 4 * resolve_fn("He3")(x), atol=1e-12)
    np.testing.assert_allclose(jax.vmap(d)(x), 4 * resolve_fn("He3")(x), atol=1e-12)
    assert resolve_fn("relu").deriv(2.0).shape == ()
