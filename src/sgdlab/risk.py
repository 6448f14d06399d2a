"""Population loss as an exact function of the order parameters (M, Q, a).

For a committee target y = sum_k b_k g(nu_k) + noise xi and the student
f = s sum_j a_j sigma(lambda_j), the square loss decomposes into Gaussian pair kernels

    E[(f - y)^2] = s^2 sum_ij a_i a_j K_ss(Q_ii, Q_jj, Q_ij)
                   - 2 s sum_ik a_i b_k K_sg(Q_ii, 1, M_ik)
                   + sum_kl b_k b_l K_gg(1, 1, delta_kl) + noise^2,

with K_fg(q1, q2, c) = E[f(u) g(v)] from closed forms where they exist (Mehler for
polynomials, Saad–Solla for erf, arc-cosine kernels for relu) and otherwise quadrature
(``sgdlab._kernels``). ``square`` reports 1/2 E[(f - y)^2]; ``correlation`` reports -E[y f].
Targets given as a function of all r fields use (1 + r)- and r-dimensional Gauss–Hermite
rules; custom losses a (p + r + 1)-dimensional one (noise as the last axis).
With a smoothed loss (``Training.smoothing``) the risk is that of the unsmoothed base loss.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ._kernels import gaussian_expectation, pair_expectation
from .model import Model

__all__ = ["population_risk", "quadrature_nodes"]

MAX_POINTS = 200_000  # tensor-product quadrature budget


def quadrature_nodes(k: int, cap: int = 40, budget: int = MAX_POINTS) -> int:
    """Nodes per axis for a k-dimensional tensor rule within ``budget`` points."""
    return max(3, min(cap, int(budget ** (1.0 / k) + 1e-9)))


def _cross_function_target(model: Model, Q, M):
    """E[sigma(lambda_i) g(nu)] per i, and E[g(nu)^2], for a target function of all r fields."""
    stu, prob, r = model.student, model.problem, model.r
    n = quadrature_nodes(1 + r)

    def one(qii, mi):
        cov = jnp.block([[qii[None, None], mi[None, :]], [mi[:, None], jnp.eye(r)]])
        return gaussian_expectation(lambda z: stu.activation(z[:, 0]) * prob.label(z[:, 1:]), cov, n)

    cross = jax.vmap(one)(jnp.diag(Q), M)
    gg = gaussian_expectation(lambda z: prob.label(z) ** 2, jnp.eye(r), quadrature_nodes(r))
    return cross, gg


def _committee_terms(model: Model, Q, M, a):
    """E[f^2], E[f y_clean], E[y_clean^2]."""
    stu, prob, p, r = model.student, model.problem, model.p, model.r
    sig = stu.activation
    s = stu.scale
    qd = jnp.diag(Q)
    i, j = jnp.triu_indices(p)
    kss = pair_expectation(sig, sig, qd[i], qd[j], Q[i, j])
    K = jnp.zeros((p, p)).at[i, j].set(kss).at[j, i].set(kss)
    ff = s**2 * a @ K @ a
    if prob.is_committee:
        b = jnp.asarray(prob.weights)
        ksg = pair_expectation(sig, prob.link, jnp.broadcast_to(qd[:, None], (p, r)), 1.0, M)
        fy = s * a @ ksg @ b
        kgg = jnp.where(jnp.eye(r, dtype=bool), pair_expectation(prob.link, prob.link, 1.0, 1.0, 1.0),
                        pair_expectation(prob.link, prob.link, 1.0, 1.0, 0.0))
        yy = b @ kgg @ b
    else:
        cross, yy = _cross_function_target(model, Q, M)
        fy = s * a @ cross
    return ff, fy, yy


def population_risk(model: Model, M: jax.Array, Q: jax.Array, a: jax.Array) -> jax.Array:
    """Population value of the training loss at order parameters (M (p, r), Q (p, p), a (p,))."""
    tr, prob = model.training, model.problem
    if hasattr(model, "population_risk"):  # sequence models carry their own
        return model.population_risk(M, Q, a)
    if tr.loss in ("square", "correlation"):
        ff, fy, yy = _committee_terms(model, Q, M, a)
        if tr.loss == "square":
            return 0.5 * (ff - 2.0 * fy + yy + prob.noise**2)
        return -fy
    p, r = model.p, model.r
    G = jnp.block([[Q, M], [M.T, jnp.eye(r)]])
    cov = jnp.zeros((p + r + 1, p + r + 1)).at[: p + r, : p + r].set(G).at[-1, -1].set(1.0)
    n = quadrature_nodes(p + r + 1)
    loss = jax.vmap(lambda z: model.base_loss(z[:-1], a, z[-1]))  # unsmoothed base loss
    return gaussian_expectation(loss, cov, n)


@functools.lru_cache(maxsize=64)
def _risk_fn(model: Model):
    return jax.jit(jax.vmap(jax.vmap(lambda m, q, aa: population_risk(model, m, q, aa))))


def risk_table(model: Model, M, Q, a) -> jax.Array:
    """population_risk over leading (seed, record) axes (compiled once per model)."""
    return _risk_fn(model)(jnp.asarray(M), jnp.asarray(Q), jnp.asarray(a))
