"""Population risk from order parameters against closed forms and Monte Carlo on sampled data."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgdlab import Problem, Student, Training, population_risk
from sgdlab.model import Model

N_MC = 400_000


def _mc_risk(model: Model, M, Q, a, key=0):
    """Monte Carlo of the training loss on sampled inputs: x ~ N(0, I_d) projected on [W; W*]."""
    p, r = model.p, model.r
    G = np.block([[Q, M], [M.T, np.eye(r)]])
    L = np.linalg.cholesky(G + 1e-14 * np.eye(p + r))
    k1, k2 = jax.random.split(jax.random.key(key))
    Z = jax.random.normal(k1, (N_MC, p + r)) @ jnp.asarray(L).T
    xi = jax.random.normal(k2, (N_MC,))
    vals = jax.vmap(lambda z, e: model.sample_loss(z, jnp.asarray(a), e))(Z, xi)
    return float(vals.mean()), float(vals.std() / np.sqrt(N_MC))


def _state(p, r, seed):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(p + r, p + r + 3))
    G = A @ A.T / (p + r + 3)
    Wt = np.linalg.cholesky(G[p:, p:])  # whiten the teacher block to the identity
    T = np.eye(p + r)
    T[p:, p:] = np.linalg.inv(Wt)
    G = T @ G @ T.T
    return G[:p, p:], G[:p, :p], rng.uniform(0.5, 1.5, size=p)


CASES = [
    ("erf committee", Problem(d=100, link="erf", directions=2, noise=0.3), Student(width=2, activation="erf"),
     "square"),
    ("relu on h2", Problem(d=100, link="h2"), Student(width=3, activation="relu", output_scale="sqrt"), "square"),
    ("tanh on He3", Problem(d=100, link="He3", noise=0.1), Student(width=1, activation="tanh"), "square"),
    ("correlation", Problem(d=100, link="h3", directions=2), Student(width=2, activation="h3"), "correlation"),
    ("staircase", Problem(d=100, directions=2, function=lambda nu: nu[..., 0] + nu[..., 0] * nu[..., 1]),
     Student(width=2, activation="relu"), "square"),
    ("custom loss", Problem(d=100, link="h2", noise=0.2), Student(width=1, activation="h2"),
     lambda f, y: jnp.log(jnp.cosh(f - y))),
]


@pytest.mark.parametrize("name, problem, student, loss", CASES, ids=[c[0] for c in CASES])
def test_population_risk_matches_monte_carlo(name, problem, student, loss):
    """Exact risk within 4.5 Monte Carlo standard errors (4e5 samples) at a generic,
    non-spherical state. Catches a wrong kernel (e.g. the factor-2 erf read-out), a missing
    noise term or a wrong output scale."""
    model = Model(problem, student, Training(loss=loss))
    M, Q, a = _state(student.width, problem.r, seed=hash(name) % 1000)
    exact = float(population_risk(model, jnp.asarray(M), jnp.asarray(Q), jnp.asarray(a)))
    mc, se = _mc_risk(model, M, Q, a)
    assert abs(exact - mc) < 4.5 * se, (exact, mc, se)


@pytest.mark.parametrize("m", [0.0, 0.3, -0.5, 0.9])
def test_single_index_closed_form(m):
    """Square loss, sigma = g = h3, unit norm: risk = sum_j c_j^2 (1 - m^j) + noise^2 / 2
    = 1 - m^3 + noise^2 / 2 (Ben Arous, Gheissari, Jagannath 2021)."""
    model = Model(Problem(d=100, link="h3", noise=0.4), Student(activation="h3"), Training())
    risk = population_risk(model, jnp.array([[m]]), jnp.array([[1.0]]), jnp.array([1.0]))
    assert float(risk) == pytest.approx(1 - m**3 + 0.08, abs=1e-12)
