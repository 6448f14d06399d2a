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


def gamma(key: jax.Array, alpha, shape=(), dtype=jnp.float64) -> jax.Array:
    """An exact Gamma(alpha) sample (alpha > 0, traceable) by Marsaglia–Tsang rejection.

    With dd = a - 1/3, c = 1 / sqrt(9 dd): propose g = dd (1 + c x)^3, x ~ N(0, 1), and
    accept when (1 + c x) > 0 and log u < x^2 / 2 + dd - dd v + dd log v (u uniform,
    v = (1 + c x)^3). Every entry keeps its first accepted proposal, so the result is exact;
    a ``while_loop`` redraws only while some entry has none (acceptance >= 0.95 for every
    alpha, > 0.999 for the large alpha of the chain's chi^2(d - P)). For alpha < 1, a =
    alpha + 1 and the sample is multiplied by U^(1/alpha) (Gamma(alpha + 1) U^(1/alpha) ~
    Gamma(alpha)). One normal and one uniform draw per try, against jax.random.gamma's nested
    loops with several key splits per try.
    """
    alpha = jnp.broadcast_to(jnp.asarray(alpha, dtype), shape)
    boost = alpha < 1.0
    a = jnp.where(boost, alpha + 1.0, alpha)
    dd = a - 1.0 / 3.0
    c = 1.0 / jnp.sqrt(9.0 * dd)
    kx, ku = jax.random.split(key)

    def accept(x, u):
        w = 1.0 + c * x
        v = w * w * w
        ok = (w > 0) & (jnp.log(u) < 0.5 * x * x + dd - dd * v + dd * jnp.log(jnp.where(w > 0, v, 1.0)))
        return dd * v, ok

    # first try: one normal and one uniform call (the second uniform is the boost factor)
    x = jax.random.normal(kx, shape, dtype)
    u2 = jax.random.uniform(ku, (2, *shape), dtype)
    g, ok = accept(x, u2[0])

    def body(st):
        g, ok, i = st
        k1, k2 = jax.random.split(jax.random.fold_in(key, i))
        g2, ok2 = accept(jax.random.normal(k1, shape, dtype), jax.random.uniform(k2, shape, dtype))
        return jnp.where(ok, g, g2), ok | ok2, i + 1

    g, _, _ = jax.lax.while_loop(lambda st: ~jnp.all(st[1]), body, (g, ok, jnp.ones((), jnp.uint32)))
    return jnp.where(boost, g * u2[1] ** (1.0 / alpha), g)


def chi2(key: jax.Array, df, shape=(), dtype=jnp.float64) -> jax.Array:
    """chi^2 with ``df`` degrees of freedom: 2 * Gamma(df / 2) (exact, :func:`gamma`)."""
    return 2.0 * gamma(key, jnp.asarray(df, dtype) / 2.0, shape, dtype=dtype)


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
