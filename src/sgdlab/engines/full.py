"""``Full``: online SGD in dimension d, exactly as written.

Per step and seed: draw a batch X (n x d) from the data law (``sgdlab.data``; n = batch
times the rows of a sample), compute the student fields lambda = X W^T and the frame
coordinates S = X U^T, get C = -d(batch-mean loss)/d(lambda) from the model, and update

    W <- (I - lr D) W + lr C^T X,     D = diag_j(sum_i C_ij lambda_ij / Q_jj) (spherical only),

then renormalise the rows (spherical or projected): by |w_j|, or with the covariance norm
(``Training(norm="covariance")``, Sigma = I + U^T B U) by |w_j|_Sigma = sqrt(|w_j|^2 +
w_j[:a] B w_j[:a]^T), D_j then using the Sigma-fields x^T Sigma w_j = lambda_j + x[:a] B w_j[:a]^T
and |w_j|_Sigma^2 in place of Q_jj (the Sigma-orthogonal tangent projection). The frame U is the first a canonical
basis vectors: Gaussian data laws and the initial states are invariant under rotations that
fix the frame, so this is exact in law and makes S = X[:, :a] free. Memory is
O(seeds * (p + n) * d); no d-vector is stored over time. A loss that needs the sample's
squared norm (``model.needs_norm``, the smoothed loss) gets x2 = sum_i X_bi^2. The step
count t is part of the state (data-law and step-size schedules). Non-Gaussian data laws
(a ``Sampler``) run here only.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from ..model import BaseModel
from ._driver import MAX_NORM2
from .base import Program, StochasticEngine, check_dtype

__all__ = ["Full"]


@dataclass(frozen=True)
class Full(StochasticEngine):
    """The d-dimensional simulation. ``dtype``: ``float32`` (fast, default) or ``float64``."""

    dtype: str = "float32"
    name: str = "full"
    gaussian_only = False

    def __post_init__(self) -> None:
        check_dtype(self.dtype)

    def build(self, model: BaseModel) -> Program:
        prob, stu, tr = model.problem, model.student, model.training
        d, na, r = prob.d, model.a, model.r
        dt = jnp.dtype(self.dtype)
        law, start_law = model.data, model.init
        a0 = jnp.asarray(stu.a0, dt)
        norm = model.needs_norm
        schedule = tr.lr_schedule
        metric = model.norm_metric()  # B: Sigma = I + U^T B U (covariance norm), or None
        B = None if metric is None else jnp.asarray(metric, dt)

        def sigma_norm2(W):
            Wf = W[:, :na]
            return jnp.sum(W * W, axis=1) + jnp.sum((Wf @ B) * Wf, axis=1)

        def init(key, hyper, start):
            kw, kn = jax.random.split(key)
            W = start_law.weights(kw, model, start, dt)
            a_ = start_law.second_layer(model, start)
            return {"W": W, "a": a0 if a_ is None else a_.astype(dt), "key": kn, "lr": hyper["lr"].astype(dt),
                    "lr_a": hyper["lr_a"].astype(dt), "noise": hyper["noise"].astype(dt),
                    "t": jnp.zeros((), jnp.int64)}

        def step(s):
            W, a, lr, lr_a, t = s["W"], s["a"], s["lr"], s["lr_a"], s["t"]
            if schedule is not None:
                f = jnp.asarray(schedule(t), dt)
                lr, lr_a = lr * f, lr_a * f
            key, kx, kxi = jax.random.split(s["key"], 3)
            X, c = law.sample(kx, tr.batch, d, r, t, dt)
            xi = s["noise"] * jax.random.normal(kxi, (X.shape[0],), dt)
            lam = X @ W.T
            Z = jnp.concatenate([lam, X[:, :na]], axis=1)
            if norm:  # a loss that needs each sample's |x|^2 (smoothed): the exact one
                C, ga = model.batch_grads(Z, a, xi, c, jnp.sum(X * X, axis=1))
            else:
                C, ga = model.batch_grads(Z, a, xi, c)
            step_ = lr * (C.T @ X)
            if tr.spherical and B is not None:  # Sigma-orthogonal tangent projection
                lamS = lam + X[:, :na] @ (W[:, :na] @ B).T  # x^T Sigma w_j
                D = jnp.sum(C * lamS, axis=0) / sigma_norm2(W)
                W = W - lr * D[:, None] * W + step_
            elif tr.spherical:
                D = jnp.sum(C * lam, axis=0) / jnp.sum(W * W, axis=1)
                W = W - lr * D[:, None] * W + step_
            else:
                W = W + step_
            if tr.renormalise and B is not None:
                W = W / jnp.sqrt(sigma_norm2(W))[:, None]
            elif tr.renormalise:
                W = W / jnp.linalg.norm(W, axis=1, keepdims=True)
            if stu.trained:
                a = a - lr_a * ga
            return {**s, "W": W, "a": a, "key": key, "t": t + 1}

        def escape_stat(s):
            W = s["W"]
            return jnp.max(jnp.abs(W[:, 0]) / jnp.linalg.norm(W, axis=1))

        def healthy(s):
            # finite, and far from overflow: W W^T and the risk must stay representable
            norm2 = jnp.sum(s["W"].astype(jnp.float64) ** 2, axis=1)
            return jnp.all(norm2 < MAX_NORM2) & jnp.all(jnp.abs(s["a"]) < MAX_NORM2**0.5)

        def observe(s):
            W = s["W"]
            return W[:, :na], W @ W.T, s["a"]

        return Program(init, step, escape_stat, healthy, observe, hyper=tuple(model.traced_numbers(1.0).items()))
