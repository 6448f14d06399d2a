"""``Full``: online SGD in dimension d, exactly as written.

Per step and seed: draw a batch X (n x d) of N(0, I_d) inputs, compute the fields
Z = X [W; W*]^T, get C = -d(batch-mean loss)/d(lambda) from the model, and update

    W <- (I - lr D) W + lr C^T X,     D = diag_j(sum_i C_ij lambda_ij / Q_jj) (spherical only),

then renormalise the rows (spherical or projected). The teacher rows W* are the first r
canonical basis vectors: inputs and a uniformly random (or m0) start are rotation
invariant, so this is exact in law and makes nu = X[:, :r] free. Memory is
O(seeds * (p + n) * d); no d-vector is stored over time. A loss that needs the sample's
squared norm (``model.needs_norm``, the smoothed loss) gets x2 = sum_i X_bi^2.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from ..model import Model
from ._driver import MAX_NORM2, StochasticEngine

__all__ = ["Full"]


@dataclass(frozen=True)
class Full:
    """The d-dimensional simulation. ``dtype``: ``float32`` (fast, default) or ``float64``."""

    dtype: str = "float32"
    name: str = "full"

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"engine.dtype: got {self.dtype!r}; allowed: 'float32' or 'float64'")

    def build(self, model: Model) -> StochasticEngine:
        prob, stu, tr = model.problem, model.student, model.training
        d, p, r = prob.d, model.p, model.r
        dt = jnp.dtype(self.dtype)
        # sequence models: a batch is batch * L token rows (sample-major), each shifted by its
        # positional encoding p_l = sum_k offsets[l, k] e_k (the fixed directions are e_0..e_{r-1})
        tokens = getattr(model, "tokens", 1)
        n = tr.batch * tokens
        shift = None
        if tokens > 1 and getattr(model, "offsets", None) is not None and np.any(model.offsets):
            shift = jnp.zeros((tokens, d), dt).at[:, :r].set(jnp.asarray(model.offsets, dt))
        a0 = jnp.asarray(stu.a0, dt)
        norm = model.needs_norm

        def init(key, hyper):
            kw, kn = jax.random.split(key)
            g = jax.random.normal(kw, (p, d), dt)
            if isinstance(tr.init, str):
                if tr.init == "random_positive":  # the teacher is e_0: flip rows with g_j0 < 0
                    g = g * jnp.where(g[:, :1] < 0, -1.0, 1.0).astype(dt)
                W = g / jnp.linalg.norm(g, axis=1, keepdims=True)
            else:
                m0 = tr.init
                v = g.at[:, :r].set(0.0)
                v = v / jnp.linalg.norm(v, axis=1, keepdims=True)
                W = (jnp.sqrt(1.0 - r * m0**2) * v).at[:, :r].set(m0)
            return {"W": W, "a": a0, "key": kn, "lr": hyper["lr"].astype(dt), "lr_a": hyper["lr_a"].astype(dt)}

        def step(s):
            W, a, lr, lr_a = s["W"], s["a"], s["lr"], s["lr_a"]
            key, kx, kxi = jax.random.split(s["key"], 3)
            X = jax.random.normal(kx, (n, d), dt)
            if shift is not None:
                X = X + jnp.tile(shift, (tr.batch, 1))
            xi = jax.random.normal(kxi, (n,), dt)
            lam = X @ W.T
            if norm:  # a loss that needs each sample's |x|^2 (smoothed): the exact one
                x2 = jnp.sum(X * X, axis=1)
                C, ga = model.batch_grads(jnp.concatenate([lam, X[:, :r]], axis=1), a, xi, x2)
            else:
                C, ga = model.batch_grads(jnp.concatenate([lam, X[:, :r]], axis=1), a, xi)
            step_ = lr * (C.T @ X)
            if tr.spherical:
                D = jnp.sum(C * lam, axis=0) / jnp.sum(W * W, axis=1)
                W = W - lr * D[:, None] * W + step_
            else:
                W = W + step_
            if tr.renormalise:
                W = W / jnp.linalg.norm(W, axis=1, keepdims=True)
            if stu.trained:
                a = a - lr_a * ga
            return {"W": W, "a": a, "key": key, "lr": lr, "lr_a": lr_a}

        def escape_stat(s):
            W = s["W"]
            return jnp.max(jnp.abs(W[:, 0]) / jnp.linalg.norm(W, axis=1))

        def healthy(s):
            # finite, and far from overflow: W W^T and the risk must stay representable
            norm2 = jnp.sum(s["W"].astype(jnp.float64) ** 2, axis=1)
            return jnp.all(norm2 < MAX_NORM2) & jnp.all(jnp.abs(s["a"]) < MAX_NORM2**0.5)

        def observe(s):
            W = s["W"]
            return W[:, :r], W @ W.T, s["a"]

        return StochasticEngine(init, step, escape_stat, healthy, observe, hyper=(tr.lr, tr.eta_a))
