"""Exact samplers for the Gram matrices of Gaussian vectors (Bartlett decomposition)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["bartlett", "wishart", "wishart_quadratic"]


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


def _psd_sqrt(b: jax.Array) -> jax.Array:
    lam, v = jnp.linalg.eigh(b)
    return v * jnp.sqrt(jnp.maximum(lam, 0.0))


def wishart_quadratic(key: jax.Array, C: jax.Array, df) -> jax.Array:
    """A sample of C^T K C with K ~ Wishart_n(df, I), for C of shape (n, p).

    C^T K C ~ Wishart_p(df, C^T C): sampled in whichever of p x p or n x n is smaller.
    For p = 1 this is (C^T C) * chi^2(df).
    """
    n, p = C.shape
    if p == 1:
        return jnp.sum(C * C) * chi2(key, df, (1, 1), C.dtype)
    if p <= n:
        r = _psd_sqrt(C.T @ C)
        ra = r @ bartlett(key, p, df, C.dtype)
        return ra @ ra.T
    ac = bartlett(key, n, df, C.dtype).T @ C
    return ac.T @ ac
