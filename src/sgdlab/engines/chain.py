"""``Chain``: the exact Markov chain of the Gram matrix G = [W; W*][W; W*]^T.

Derivation in EXACT_CHAIN.md. With G = L L^T (a Cholesky factor that tolerates rank loss),
the fields of a batch are Z = Y L^T with Y (n x P) standard Gaussian, P = p + r, and

    X X^T = Y Y^T + K_perp,     K_perp ~ Wishart_n(d - P, I), independent of Y.

(Using all P columns of Y even when G is singular is exact: the surplus columns add a
Wishart_n(P - rank) that completes K_perp to Wishart_n(d - rank).) One SGD step is then

    Q' = A Q A + lr (A Lam^T C + C^T Lam A) + lr^2 C^T (Y Y^T + K_perp) C
    M' = A M + lr C^T N,          A = I - lr D (spherical) or I,

followed by the renormalisation of the rows (a function of Q'). Only
C^T K_perp C ~ Wishart_p(d - P, C^T C) carries d; it is drawn by Bartlett's decomposition,
so the cost per step does not depend on d.

A loss that needs each sample's squared norm (``model.needs_norm``, the smoothed loss) gets
|x_b|^2 = |y_b|^2 + (K_perp)_bb: then K_perp itself is drawn (Bartlett, n x n) and the same
draw gives C^T K_perp C, so the norm and the lr^2 noise term stay coupled as in the d-dim
process (independent draws would be wrong).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from .._wishart import psd_cholesky, wishart, wishart_quadratic
from ..model import Model
from ._driver import MAX_NORM2, StochasticEngine

__all__ = ["Chain", "initial_gram"]

PSD_TOL = 1e-9  # relative: a Gram matrix with a Cholesky pivot below -PSD_TOL * trace has diverged


def initial_gram(model: Model, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Exact law of (Q, M) at the start.

    ``random``: rows w_j = g_j / |g_j|, g_j ~ N(0, I_d): the teacher components of g are
    N(0, 1), the Gram of the rest is Wishart_p(d - r, I). ``random_positive``: the same with
    g_j replaced by -g_j where its first teacher component is negative. ``m0``: w_j = m0 sum_k w*_k +
    sqrt(1 - r m0^2) v_j with v_j uniform unit vectors orthogonal to the teacher span.
    """
    p, r, d = model.p, model.r, model.problem.d
    init = model.training.init
    kt, kw = jax.random.split(key)
    perp = wishart(kw, p, d - r)
    if isinstance(init, str):
        T = jax.random.normal(kt, (p, r))
        if init == "random_positive":  # w_j -> -w_j where M_j0 < 0: flips row j of T and of perp
            f = jnp.where(T[:, 0] < 0, -1.0, 1.0)
            T, perp = T * f[:, None], perp * f[:, None] * f[None, :]
        Qg = perp + T @ T.T
        s = 1.0 / jnp.sqrt(jnp.diag(Qg))
        return Qg * s[:, None] * s[None, :], T * s[:, None]
    s = 1.0 / jnp.sqrt(jnp.diag(perp))
    V = perp * s[:, None] * s[None, :]
    Q = r * init**2 + (1.0 - r * init**2) * V
    return Q, jnp.full((p, r), init)


@dataclass(frozen=True)
class Chain:
    """The exact low-dimensional chain (float64); cost per step independent of d."""

    name: str = "chain"

    def build(self, model: Model) -> StochasticEngine:
        stu, tr = model.student, model.training
        d, p, r = model.problem.d, model.p, model.r
        P = p + r
        # sequence models: the rows of a batch are the tokens of its samples, shifted by the
        # positional encodings p_l (fixed directions): in the coordinates y of Z = y L^T the
        # shift of token l is c_l^T L, c_l = p_l's coefficients on the rows of G
        tokens = getattr(model, "tokens", 1)
        n = tr.batch * tokens
        shift = None
        if tokens > 1 and getattr(model, "offsets", None) is not None and np.any(model.offsets):
            shift = jnp.concatenate([jnp.zeros((tokens, p)), jnp.asarray(model.offsets)], axis=1)
        a0 = jnp.asarray(stu.a0, jnp.float64)
        norm = model.needs_norm
        eye_r = jnp.eye(r)

        def assemble(Q, M):
            return jnp.block([[Q, M], [M.T, eye_r]])

        def init(key, hyper):
            ki, kn = jax.random.split(key)
            Q, M = initial_gram(model, ki)
            G = assemble(Q, M)
            L, worst = psd_cholesky(G)
            return {"G": G, "L": L, "worst": worst, "a": a0, "key": kn, "lr": hyper["lr"], "lr_a": hyper["lr_a"]}

        def step(s):
            G, L, a, lr, lr_a = s["G"], s["L"], s["a"], s["lr"], s["lr_a"]
            key, ky, kxi, kk = jax.random.split(s["key"], 4)
            Y = jax.random.normal(ky, (n, P))
            if shift is not None:
                Y = Y + jnp.tile(shift @ L, (tr.batch, 1))
            Z = Y @ L.T
            xi = jax.random.normal(kxi, (n,))
            if norm:
                # the smoothed loss needs |x_b|^2 = |y_b|^2 + (K_perp)_bb: draw K_perp itself
                # (n x n) and use the SAME draw in the lr^2 term below
                Kp = wishart(kk, n, d - P)
                C, ga = model.batch_grads(Z, a, xi, jnp.sum(Y * Y, axis=1) + jnp.diag(Kp))
            else:
                C, ga = model.batch_grads(Z, a, xi)
            Lam, N = Z[:, :p], Z[:, p:]
            Q, M = G[:p, :p], G[:p, p:]
            YC = Y.T @ C
            perp = C.T @ (Kp @ C) if norm else wishart_quadratic(kk, C, d - P)
            noise = YC.T @ YC + perp
            LC = Lam.T @ C
            if tr.spherical:
                A = 1.0 - lr * jnp.sum(C * Lam, axis=0) / jnp.diag(Q)
                Qn = A[:, None] * Q * A[None, :] + lr * (A[:, None] * LC + LC.T * A[None, :]) + lr**2 * noise
                Mn = A[:, None] * M + lr * (C.T @ N)
            else:
                Qn = Q + lr * (LC + LC.T) + lr**2 * noise
                Mn = M + lr * (C.T @ N)
            Qn = 0.5 * (Qn + Qn.T)
            if tr.renormalise:
                sc = 1.0 / jnp.sqrt(jnp.diag(Qn))
                Qn = Qn * sc[:, None] * sc[None, :]
                Mn = Mn * sc[:, None]
            if stu.trained:
                a = a - lr_a * ga
            G = assemble(Qn, Mn)
            L, worst = psd_cholesky(G)  # the factor of the new Gram matrix: used by the next step
            return {"G": G, "L": L, "worst": worst, "a": a, "key": key, "lr": lr, "lr_a": lr_a}

        def escape_stat(s):
            G = s["G"]
            return jnp.max(jnp.abs(G[:p, p]) / jnp.sqrt(jnp.diag(G)[:p]))

        def healthy(s):
            G = s["G"]
            qd = jnp.diag(G)[:p]
            return (
                jnp.all(jnp.isfinite(G))
                & (s["worst"] >= -PSD_TOL)
                & jnp.all((qd > 0) & (qd < MAX_NORM2))
                & jnp.all(jnp.abs(s["a"]) < MAX_NORM2**0.5)
            )

        def observe(s):
            G = s["G"]
            return G[:p, p:], G[:p, :p], s["a"]

        return StochasticEngine(init, step, escape_stat, healthy, observe, hyper=(tr.lr, tr.eta_a))
