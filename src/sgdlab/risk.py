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
rules; custom losses a (p + r)-dimensional one (p + r + 1 with label noise as the last
axis), with at most GENERAL_POINTS points.
With a smoothed loss (``Training.smoothing``) the risk is that of the unsmoothed base loss.

Other Gaussian data laws (``sgdlab.data``): per mixture component k the student fields and
the frame coordinates are jointly Gaussian, s ~ N(mu_k, B_k B_k^T) and
lam = M s + sigma_k R y (R R^T = Q - M M^T), i.e. mean (M mu_k, mu_k) and covariance

    [[M S_k M^T + sigma_k^2 (Q - M M^T), M S_k], [S_k M^T, S_k]],   S_k = B_k B_k^T.

With zero means and a committee target the pair kernels apply with these variances and
covariances (a spiked covariance); otherwise (means, labels of the latent c) a tensor
Gauss–Hermite rule over the p + a fields per component (+ the label noise).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ._kernels import gaussian_expectation, pair_expectation
from .model import Model, Training

__all__ = ["population_risk", "quadrature_nodes"]

MAX_POINTS = 200_000  # tensor-product quadrature budget
# budget per mixture component of the general rule: it runs for every (seed, record) state
# (hundreds to thousands per run), so 2e4 points (11 nodes per axis in 4-D, 7 in 5-D: exact
# for polynomials of degree 21 and 13) instead of 2e5
GENERAL_POINTS = 20_000


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


def population_risk(model, M: jax.Array, Q: jax.Array, a: jax.Array) -> jax.Array:
    """Population value of the training loss at order parameters (M (p, a), Q (p, p), a (p,))."""
    return model.population_risk(M, Q, a)


def _component_gaussian(model: Model, M, Q, comp, k: int):
    """Mean (p + a,) and covariance of (lam, s) in component k of the data law."""
    a = model.a
    S = jnp.eye(a) if comp.chol is None else comp.chol[k] @ comp.chol[k].T
    mu = jnp.zeros(a) if comp.mean is None else comp.mean[k, 0]
    sig = 1.0 if comp.sigma is None else comp.sigma[k, 0]
    MS = M @ S
    cov_l = MS @ M.T + sig**2 * (Q - M @ M.T)
    cov = jnp.block([[cov_l, MS], [MS.T, S]])
    return jnp.concatenate([M @ mu, mu]), cov


def _standard(model: Model) -> bool:
    comp = model.data.components(model.r, 0)
    return comp.prob.shape[0] == 1 and comp.mean is None and comp.chol is None and comp.sigma is None


def _general_risk(model: Model, M, Q, a):
    """Mixture over components of a tensor Gauss–Hermite rule over (lam, s) and, with label
    noise, xi (without noise, or with the noise added outside, the xi axis is dropped)."""
    p, a_dim = model.p, model.a
    comp = model.data.components(model.r, 0)
    K = comp.prob.shape[0]
    noisy = model.problem.noise != 0
    k = p + a_dim + int(noisy)
    n = quadrature_nodes(k, budget=GENERAL_POINTS)
    total = 0.0
    for kk in range(K):
        mean, cov = _component_gaussian(model, M, Q, comp, kk)
        c = jnp.asarray(kk, jnp.int32)
        if noisy:
            cov = jnp.zeros((k, k)).at[:-1, :-1].set(cov).at[-1, -1].set(1.0)
            mean = jnp.concatenate([mean, jnp.zeros(1)])
            loss = jax.vmap(lambda z: model.base_loss(z[:-1], a, z[-1], c))  # noqa: B023
        else:
            loss = jax.vmap(lambda z: model.base_loss(z, a, jnp.zeros((), z.dtype), c))  # noqa: B023
        total = total + comp.prob[kk] * gaussian_expectation(lambda z: loss(z + mean), cov, n)  # noqa: B023
    return total


def _spiked_committee(model: Model, M, Q, a):
    """Square / correlation loss of a committee target, zero-mean components: pair kernels."""
    stu, prob, p, r = model.student, model.problem, model.p, model.r
    comp = model.data.components(model.r, 0)
    sig, s = stu.activation, stu.scale
    b = jnp.asarray(prob.weights)
    i, j = jnp.triu_indices(p)
    total_ff = total_fy = total_yy = 0.0
    for kk in range(comp.prob.shape[0]):
        _, cov = _component_gaussian(model, M, Q, comp, kk)
        cl, cls, css = cov[:p, :p], cov[:p, p : p + r], cov[p : p + r, p : p + r]
        ld = jnp.diag(cl)
        kss = pair_expectation(sig, sig, ld[i], ld[j], cl[i, j])
        Kss = jnp.zeros((p, p)).at[i, j].set(kss).at[j, i].set(kss)
        ksg = pair_expectation(sig, prob.link, jnp.broadcast_to(ld[:, None], (p, r)),
                               jnp.broadcast_to(jnp.diag(css)[None, :], (p, r)), cls)
        sd = jnp.diag(css)
        kgg = pair_expectation(prob.link, prob.link, jnp.broadcast_to(sd[:, None], (r, r)),
                               jnp.broadcast_to(sd[None, :], (r, r)), css)
        w = comp.prob[kk]
        total_ff = total_ff + w * s**2 * a @ Kss @ a
        total_fy = total_fy + w * s * a @ ksg @ b
        total_yy = total_yy + w * b @ kgg @ b
    return total_ff, total_fy, total_yy


def _population_risk(model: Model, M: jax.Array, Q: jax.Array, a: jax.Array) -> jax.Array:
    tr, prob = model.training, model.problem
    if not _standard(model) or prob.uses_latent:
        comp = model.data.components(model.r, 0)
        if tr.loss in ("square", "correlation") and prob.is_committee and comp.mean is None:
            ff, fy, yy = _spiked_committee(model, M, Q, a)
            return 0.5 * (ff - 2.0 * fy + yy + prob.noise**2) if tr.loss == "square" else -fy
        return _general_risk(model, M, Q, a)
    if tr.loss in ("square", "correlation"):
        ff, fy, yy = _committee_terms(model, Q, M, a)
        if tr.loss == "square":
            return 0.5 * (ff - 2.0 * fy + yy + prob.noise**2)
        return -fy
    # a custom loss: a tensor Gauss–Hermite rule over (lam, nu) and, with label noise, xi; it
    # runs for every (seed, record) state, so the budget of the general rule (GENERAL_POINTS)
    p, r = model.p, model.r
    G = jnp.block([[Q, M], [M.T, jnp.eye(r)]])
    if prob.noise == 0:
        loss = jax.vmap(lambda z: model.base_loss(z, a, jnp.zeros((), z.dtype)))  # unsmoothed base loss
        return gaussian_expectation(loss, G, quadrature_nodes(p + r, budget=GENERAL_POINTS))
    cov = jnp.zeros((p + r + 1, p + r + 1)).at[: p + r, : p + r].set(G).at[-1, -1].set(1.0)
    loss = jax.vmap(lambda z: model.base_loss(z[:-1], a, z[-1]))  # unsmoothed base loss
    return gaussian_expectation(loss, cov, quadrature_nodes(p + r + 1, budget=GENERAL_POINTS))


@functools.lru_cache(maxsize=64)
def _risk_fn(model: Model):
    return jax.jit(jax.vmap(jax.vmap(lambda m, q, aa: population_risk(model, m, q, aa))))



@functools.lru_cache(maxsize=64)
def _risk_map(model: Model):
    """Sequential over (seed, record) in blocks: the general rule holds ~1e5 points per state."""
    one = lambda x: population_risk(model, *x)  # noqa: E731
    return jax.jit(lambda M, Q, a: jax.lax.map(one, (M, Q, a), batch_size=8))


def _risk_structure(model):
    """The model as far as the risk sees it: the problem (d aside), the student and the loss."""
    import dataclasses

    from .model import D_CANONICAL

    smooth = model.training.smoothed  # the risk is the base loss's; d enters only the smoothing rule
    tr = Training(loss=model.training.loss)
    changes = {} if smooth else {"d": D_CANONICAL}
    if _noise_apart(model):
        changes["noise"] = 0.0
    prob = dataclasses.replace(model.problem, **changes) if changes else model.problem
    return dataclasses.replace(model, problem=prob, training=tr)


def _noise_apart(model) -> bool:
    """Square and correlation losses of a single-sample model: the label noise adds
    noise^2 / 2 (square) or nothing (correlation) to the risk, so it stays out of the
    compiled risk and a sweep over the noise compiles it once."""
    return isinstance(model, Model) and model.training.loss in ("square", "correlation") and model.problem.noise > 0


def risk_table(model: Model, M, Q, a) -> jax.Array:
    """population_risk over leading (seed, record) axes, compiled once per structure (the
    seed and record axes are padded to bucketed sizes, ``_driver.bucket``)."""
    from .engines._driver import bucket

    M, Q, a = np.asarray(M), np.asarray(Q), np.asarray(a)
    S, R = M.shape[:2]
    idx_s = np.concatenate([np.arange(S), np.zeros(bucket(S) - S, np.int64)])
    idx_r = np.concatenate([np.arange(R), np.zeros(bucket(R) - R, np.int64)])
    M, Q, a = (jnp.asarray(x[idx_s][:, idx_r]) for x in (M, Q, a))
    extra = 0.5 * model.problem.noise**2 if _noise_apart(model) and model.training.loss == "square" else 0.0
    model = _risk_structure(model)
    if not isinstance(model, Model) or _standard(model):
        return np.asarray(_risk_fn(model)(M, Q, a))[:S, :R] + extra
    Sp, Rp = M.shape[:2]
    flat = _risk_map(model)(M.reshape(Sp * Rp, *M.shape[2:]), Q.reshape(Sp * Rp, *Q.shape[2:]),
                            a.reshape(Sp * Rp, *a.shape[2:]))
    return np.asarray(flat).reshape(Sp, Rp)[:S, :R] + extra
