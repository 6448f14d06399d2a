"""Exact samplers for the Gram matrices of Gaussian vectors (Bartlett decomposition)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["bartlett", "psd_cholesky", "wishart", "wishart_quadratic"]


def psd_cholesky(G: jax.Array, tol: float = 1e-13) -> tuple[jax.Array, jax.Array]:
    """Lower-triangular L with L L^T = G for a positive *semi*-definite G (k x k, k small).

    The loop is unrolled (k is static), so under vmap it is a handful of fused elementwise
    operations. A zero pivot (rank loss, e.g. a student row aligned with a teacher
    direction) gives a zero column, which is exact for PSD G. Also returns the smallest
    pivot relative to the trace: markedly negative means G is not PSD.
    """
    k = G.shape[-1]
    scale = jnp.trace(G)
    cols: list[jax.Array] = []
    worst = jnp.inf
    for j in range(k):
        prev = jnp.stack(cols, axis=1) if cols else jnp.zeros((k, 0), G.dtype)
        v = G[:, j] - prev @ prev[j]
        piv = v[j]
        worst = jnp.minimum(worst, piv / scale)
        ok = piv > tol * scale
        root = jnp.sqrt(jnp.where(ok, piv, 1.0))
        col = jnp.where(ok, v / root, 0.0)
        col = col * (jnp.arange(k) >= j)
        cols.append(col)
    return jnp.stack(cols, axis=1), worst


def chi2(key: jax.Array, df, shape=(), dtype=jnp.float64) -> jax.Array:
    """chi^2 with ``df`` degrees of freedom: 2 * Gamma(df / 2)."""
    return 2.0 * jax.random.gamma(key, jnp.asarray(df, dtype) / 2.0, shape, dtype=dtype)


def bartlett(key: jax.Array, k: int, df, dtype=jnp.float64) -> jax.Array:
    """Lower-triangular A (k x k) with A A^T ~ Wishart_k(df, I).

    Bartlett: A_ii = sqrt(chi^2(df - i)), i = 0..k-1, entries below the diagonal N(0, 1).
    """
    kc, kn = jax.random.split(key)
    diag = jnp.sqrt(chi2(kc, jnp.asarray(df, dtype) - jnp.arange(k, dtype=dtype), (k,), dtype))
    low = jnp.tril(jax.random.normal(kn, (k, k), dtype), -1)
    return low + jnp.diag(diag)


def wishart(key: jax.Array, k: int, df, dtype=jnp.float64) -> jax.Array:
    """A sample of Wishart_k(df, I): the Gram matrix of k Gaussian vectors in dimension df."""
    a = bartlett(key, k, df, dtype)
    return a @ a.T


def wishart_quadratic(key: jax.Array, C: jax.Array, df) -> jax.Array:
    """A sample of C^T K C with K ~ Wishart_n(df, I), for C of shape (n, p).

    C^T K C ~ Wishart_p(df, C^T C): sampled in whichever of p x p or n x n is smaller.
    For p = 1 this is (C^T C) * chi^2(df).
    """
    n, p = C.shape
    if p == 1:
        return jnp.sum(C * C) * chi2(key, df, (1, 1), C.dtype)
    if p <= n:
        r, _ = psd_cholesky(C.T @ C)
        ra = r @ bartlett(key, p, df, C.dtype)
        return ra @ ra.T
    ac = bartlett(key, n, df, C.dtype).T @ C
    return ac.T @ ac
