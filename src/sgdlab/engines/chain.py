"""``Chain``: the exact Markov chain of the Gram matrix G = [W; U][W; U]^T.

U (a x d) is the data law's frame (teacher directions first; spikes, cluster means,
the encodings of sequence positions after them). Derivation in docs/chain.md. Inputs are
x = U^T s + sigma z_perp (``sgdlab.data``). Write them through a standard Gaussian g:
x = U^T (s - sigma U g) + sigma g. With G = L L^T (a Cholesky factor that tolerates rank
loss) the fields of the g's of a batch are Z0 = Y L^T, Y (n x P) standard Gaussian,
P = p + a, and their Gram matrix is Y Y^T + K_perp, K_perp ~ Wishart_n(d - P, I)
independent of Y. (Using all P columns of Y even when G is singular is exact: the surplus
columns add a Wishart_n(P - rank) that completes K_perp to Wishart_n(d - rank).) The data
law draws the latent from the frame fields N0 = Z0[:, p:] (s, the cluster c and sigma);
with Delta = S - sigma N0 the student fields are Lam = sigma Lam0 + Delta M^T and

    X X^T = Delta Delta^T + Delta N0^T D + D N0 Delta^T + D (Y Y^T + K_perp) D,  D = diag(sigma).

One SGD step is then

    Q' = A Q A + lr (A Lam^T C + C^T Lam A) + lr^2 C^T X X^T C
    M' = A M + lr C^T S,          A = I - lr D_sph (spherical) or I,

followed by the renormalisation of the rows (a function of Q'; with the covariance norm,
``Training(norm="covariance")``, of Q' and M': |w_j|_Sigma^2 = Q'_jj + M'_j B M'_j^T, and the
spherical D_j uses the Sigma-fields x^T Sigma w_j = Lam_j + S B M_j^T; docs/chain.md). Only
(DC)^T K_perp (DC) ~ Wishart_p(d - P, (DC)^T DC) carries d; it is drawn by Bartlett's
decomposition, so the cost per step does not depend on d. For isotropic data
(s = N0, sigma = 1) the extra terms vanish and this is the chain of docs/chain.md as
written. Samples of several rows (a sequence) are rows of the batch; a row-dependent latent
mean is part of Delta.

A loss that needs each sample's squared norm (``model.needs_norm``, the smoothed loss) gets
|x_b|^2 = sigma_b^2 (|y_b|^2 + (K_perp)_bb) + |s_b|^2 - sigma_b^2 |N0_b|^2: then K_perp
itself is drawn (Bartlett, n x n) and the same draw gives the lr^2 term, so the norm and
the noise term stay coupled as in the d-dimensional process.

The step count t is part of the state: the data law and the step-size schedule are
evaluated at t for the step from t to t + 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from .._wishart import Draws, psd_cholesky
from .._xla import compiler_options
from ..model import BaseModel
from ._driver import MAX_NORM2
from .base import Program, StochasticEngine, check_dtype

__all__ = ["Chain"]

PSD_TOL = 1e-9  # relative: a Gram matrix with a Cholesky pivot below -PSD_TOL * trace has diverged


@dataclass(frozen=True)
class Chain(StochasticEngine):
    """The exact low-dimensional chain; cost per step independent of d.

    ``dtype``: ``float64`` (default) or ``float32`` (the state and the step in single
    precision, about 1.3x the throughput on a CPU; d and the gamma variates of the Wishart
    term stay float64). Its accuracy against float64 is measured in
    ``benchmarks/engines.py`` (BENCHMARKS.md)."""

    dtype: str = "float64"
    name: str = "chain"
    traced_d = True

    def __post_init__(self) -> None:
        check_dtype(self.dtype)

    def build(self, model: BaseModel) -> Program:
        stu, tr = model.student, model.training
        p, na, R = model.p, model.a, model.rows
        P = p + na
        n = tr.batch * R  # rows of a batch: the R rows of each of its samples
        law, start_law, r = model.data, model.init, model.r
        dt = jnp.dtype(self.dtype)
        a0 = jnp.asarray(stu.a0, dt)
        norm = model.needs_norm
        schedule = tr.lr_schedule
        eye_a = jnp.eye(na, dtype=dt)
        metric = model.norm_metric()  # B: Sigma = I + U^T B U (covariance norm), or None
        B = None if metric is None else jnp.asarray(metric, dt)
        # every variate of a step comes from one hash call: Y, the label noise (none drawn for a
        # noiseless model: its structure keeps noise = 0), the Wishart term
        noisy = model.problem.noise > 0
        n_draws = (Draws.normal_size((n, P + int(noisy)), dt)
                   + (Draws.wishart_size(n, dt) if norm else Draws.wishart_quadratic_size(n, p, dt)))

        def assemble(Q, M):
            return jnp.block([[Q, M], [M.T, eye_a]])

        def init(key, hyper, start):
            ki, kn = jax.random.split(key)
            Q, M = start_law.gram(ki, model, start, d=hyper["d"])
            a_ = start_law.second_layer(model, start)
            G = assemble(Q.astype(dt), M.astype(dt))
            L, worst = psd_cholesky(G)
            return {"G": G, "L": L, "worst": worst, "a": (a0 if a_ is None else a_).astype(dt), "key": kn,
                    **{k: hyper[k].astype(dt) for k in ("lr", "lr_a", "noise")},
                    "d": hyper["d"],  # float64: only in the chi^2 degrees of freedom d - P
                    "t": jnp.zeros((), jnp.int64)}

        def step(s):
            G, L, a, lr, lr_a, t, d = s["G"], s["L"], s["a"], s["lr"], s["lr_a"], s["t"], s["d"]
            if schedule is not None:
                f = schedule(t)
                lr, lr_a = lr * f, lr_a * f
            key, dr = Draws.split(s["key"], n_draws, dt)
            Y = dr.normal((n, P))
            xi = s["noise"] * dr.normal((n,)) if noisy else jnp.zeros((n,), dt)
            Z0 = Y @ L.T
            Lam0, N0 = Z0[:, :p], Z0[:, p:]
            lat = law.draw(dr.subkey(), N0.reshape(tr.batch, R, na), r, t)
            Q, M = G[:p, :p], G[:p, p:]
            sig = None if lat.sigma is None else lat.sigma.reshape(n)
            S = N0 if lat.s is None else lat.s.reshape(n, na)
            Lam = Lam0 if sig is None else sig[:, None] * Lam0
            delta = None
            if lat.s is not None:  # latent shifted or reshaped off the standard one
                delta = S - (N0 if sig is None else sig[:, None] * N0)
                Lam = Lam + delta @ M.T
            Z = jnp.concatenate([Lam, S], axis=1)
            if norm:
                # the smoothed loss needs |x_b|^2: draw K_perp itself (n x n) and use the SAME
                # draw in the lr^2 term below
                Kp = dr.wishart(n, d - P)
                x2 = jnp.sum(Y * Y, axis=1) + jnp.diag(Kp)
                if sig is not None:
                    x2 = sig**2 * x2
                if delta is not None:
                    x2 = x2 + jnp.sum(S * S, axis=1) - (1.0 if sig is None else sig**2) * jnp.sum(N0 * N0, axis=1)
                C, ga = model.batch_grads(Z, a, xi, lat.c, x2)
            else:
                C, ga = model.batch_grads(Z, a, xi, lat.c)
            Cs = C if sig is None else sig[:, None] * C
            YC = Y.T @ Cs
            perp = Cs.T @ (Kp @ Cs) if norm else dr.wishart_quadratic(Cs, d - P)
            noise = YC.T @ YC + perp
            if delta is not None:
                DC = delta.T @ C
                cross = DC.T @ (N0.T @ Cs)
                noise = noise + DC.T @ DC + cross + cross.T
            LC = Lam.T @ C
            if tr.spherical:
                if B is None:
                    A = 1.0 - lr * jnp.sum(C * Lam, axis=0) / jnp.diag(Q)
                else:  # the Sigma-orthogonal tangent projection: x^T Sigma w_j and |w_j|_Sigma^2
                    MB = M @ B
                    A = 1.0 - lr * jnp.sum(C * (Lam + S @ MB.T), axis=0) / (jnp.diag(Q) + jnp.sum(MB * M, axis=1))
                Qn = A[:, None] * Q * A[None, :] + lr * (A[:, None] * LC + LC.T * A[None, :]) + lr**2 * noise
                Mn = A[:, None] * M + lr * (C.T @ S)
            else:
                Qn = Q + lr * (LC + LC.T) + lr**2 * noise
                Mn = M + lr * (C.T @ S)
            Qn = 0.5 * (Qn + Qn.T)
            if tr.renormalise:
                qn = jnp.diag(Qn) if B is None else jnp.diag(Qn) + jnp.sum((Mn @ B) * Mn, axis=1)
                sc = 1.0 / jnp.sqrt(qn)
                Qn = Qn * sc[:, None] * sc[None, :]
                Mn = Mn * sc[:, None]
            if stu.trained:
                a = a - lr_a * ga
            G = assemble(Qn.astype(dt), Mn.astype(dt))
            L, worst = psd_cholesky(G)  # the factor of the new Gram matrix: used by the next step
            return {**s, "G": G, "L": L, "worst": worst, "a": a.astype(dt), "key": key, "t": t + 1}

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

        return Program(init, step, escape_stat, healthy, observe, hyper=tuple(model.traced_numbers(1.0).items()),
                       compiler_options=compiler_options())
