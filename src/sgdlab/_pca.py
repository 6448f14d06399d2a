"""The top eigenvector of a sample covariance, restricted to the frame, without a d x d matrix.

n inputs x_i = U^T s_i + z_i (frame coordinates s_i, the part z_i orthogonal to the frame
standard Gaussian in d - a dimensions) form X = [S | Z] (n x d, frame first). The top
eigenvector w of X^T X is X^T u / |X^T u| with u the top eigenvector of the n x n matrix
X X^T = S S^T + Z Z^T; its frame coordinates are S^T u / |X^T u| and |X^T u|^2 = u^T X X^T u.

Z Z^T is Wishart_n(d - a, I). Golub–Kahan bidiagonalisation of the (d - a) x n Gaussian
matrix Z^T by Householder reflections gives Z^T = H B V^T with B upper bidiagonal (n x n),
its entries independent (Dumitriu and Edelman 2002, the beta = 1 Laguerre ensemble):

    B_ii ~ chi(max(k - i + 1, 0)),   B_i,i+1 ~ chi(n - i) for i <= k (0 after),   k = d - a,

(i = 1..n; each reflection acts on a block of fresh, still i.i.d. Gaussian entries). So
Z Z^T = V T V^T with T = B^T B tridiagonal, and V depends on Z only: S' = V^T S has the law
of S and is independent of T. The top eigenpair (mu, u) of T + S' S'^T then gives the frame
coordinates S'^T u / sqrt(u^T (T + S' S'^T) u) with the law of those of w.

mu is found by bisection on the exact predicate "mu I - T - S S^T is positive definite",
which is "every pivot of the LDL^T factorisation of the tridiagonal mu I - T is positive and
I_a - S^T (mu I - T)^{-1} S is positive definite" (a Schur complement); each test is one
O(n a^2) recursion. At the converged mu, u = (mu I - T)^{-1} S c with c the top eigenvector
of the a x a matrix S^T (mu I - T)^{-1} S. Cost O(n a^2) per bisection step: no n x n or
d x d matrix is formed, and d enters only through the chi degrees of freedom (traceable).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._wishart import Draws

__all__ = ["laguerre_tridiagonal", "pca_frame", "top_eigen_frame"]

BISECTION_STEPS = 80  # halvings of [lower, upper]: far below float64 resolution of mu


def laguerre_tridiagonal(draws: Draws, size: int, k, n=None) -> tuple[jax.Array, jax.Array]:
    """(diagonal (size,), off-diagonal (size - 1,)) of T = B^T B, whose eigenvalues have the
    law of those of Wishart_n(k, I) (the Gram matrix of n Gaussian vectors in dimension k),
    padded with zeros to ``size`` >= n (n, k traceable; n defaults to ``size``)."""
    i = jnp.arange(1, size + 1, dtype=jnp.float64)
    k = jnp.asarray(k, jnp.float64)
    n = jnp.asarray(size if n is None else n, jnp.float64)
    dfb = jnp.where(i <= n, jnp.maximum(k - i + 1.0, 0.0), 0.0)
    j = i[:-1]
    dfc = jnp.where((j <= k) & (j < n), n - j, 0.0)
    df = jnp.concatenate([dfb, dfc])
    x = draws.chi2(jnp.maximum(df, 1e-3), (2 * size - 1,))
    x = jnp.where(df > 0, x, 0.0)
    b, c = jnp.sqrt(x[:size]), jnp.sqrt(x[size:])
    diag = b**2 + jnp.concatenate([jnp.zeros(1), c**2])
    return diag, b[:-1] * c


def pca_frame(key: jax.Array, S: jax.Array, k, n=None) -> tuple[jax.Array, jax.Array]:
    """(frame coordinates (a,) of the top eigenvector of X^T X, its eigenvalue) for n inputs
    whose frame coordinates are the first n rows of S (size, a; the rest is ignored) and
    whose part off the frame is standard Gaussian in k dimensions (n, k traceable)."""
    size = S.shape[0]
    n = size if n is None else n
    S = jnp.where((jnp.arange(size) < n)[:, None], S, 0.0)
    T = laguerre_tridiagonal(Draws(key, Draws.gamma_size((2 * size - 1,))), size, k, n)
    return top_eigen_frame(*T, S)


def _factor(mu, diag, off, S):
    """Pivots p (n,) of LDL^T = mu I - T, Y = L^{-1} S (n, a) and K = S^T (mu I - T)^{-1} S."""
    off2 = jnp.concatenate([jnp.zeros(1), off])

    def body(carry, inp):
        p_prev, y_prev = carry
        t, e, s = inp
        safe = jnp.where(p_prev > 0, p_prev, 1.0)
        p = mu - t - jnp.where(p_prev > 0, e * e / safe, jnp.inf)
        y = s + jnp.where(p_prev > 0, e / safe, 0.0) * y_prev
        return (p, y), (p, y)

    a = S.shape[1]
    _, (p, Y) = jax.lax.scan(body, (jnp.ones(()), jnp.zeros(a)), (diag, off2, S))
    w = jnp.where(p > 0, 1.0 / jnp.where(p > 0, p, 1.0), 0.0)
    K = (Y * w[:, None]).T @ Y
    return p, Y, K


def _above(mu, diag, off, S):
    """True when mu exceeds the top eigenvalue of T + S S^T."""
    p, _, K = _factor(mu, diag, off, S)
    return jnp.all(p > 0) & _positive_definite(jnp.eye(S.shape[1]) - K)


def _positive_definite(A: jax.Array) -> jax.Array:
    """Whether the small symmetric A (a x a) is positive definite: its LDL^T pivots (unrolled)."""
    a = A.shape[0]
    ok = jnp.asarray(True)
    for j in range(a):
        piv = A[j, j]
        ok = ok & (piv > 0)
        if j + 1 < a:
            col = A[j + 1 :, j] / jnp.where(piv > 0, piv, 1.0)
            A = A.at[j + 1 :, j + 1 :].add(-jnp.outer(col, A[j, j + 1 :]))
    return ok


def top_eigen_frame(diag: jax.Array, off: jax.Array, S: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(frame coordinates (a,), top eigenvalue) of T + S S^T, T tridiagonal (``diag``, ``off``),
    S (n, a): S^T u / sqrt(u^T (T + S S^T) u) for the top eigenvector u (sign arbitrary)."""
    absoff = jnp.abs(off)
    gersh = diag + jnp.concatenate([absoff, jnp.zeros(1)]) + jnp.concatenate([jnp.zeros(1), absoff])
    upper = jnp.max(gersh) + jnp.sum(S * S) + 1.0
    lower = jnp.max(diag + jnp.sum(S * S, axis=1))  # a Rayleigh quotient: mu >= it

    def bisect(_, lohi):
        lo, hi = lohi
        mid = 0.5 * (lo + hi)
        up = _above(mid, diag, off, S)
        return jnp.where(up, lo, mid), jnp.where(up, mid, hi)

    lo, hi = jax.lax.fori_loop(0, BISECTION_STEPS, bisect, (lower, upper))
    mu = hi  # the positive-definite side
    p, Y, K = _factor(mu, diag, off, S)
    _, vec = jnp.linalg.eigh(0.5 * (K + K.T))
    c = vec[:, -1]
    z = (Y @ c) / p

    def back(u_next, inp):
        zi, e, pi = inp
        u = zi + (e / pi) * u_next
        return u, u

    off_next = jnp.concatenate([off, jnp.zeros(1)])
    _, u = jax.lax.scan(back, jnp.zeros(()), (z, off_next, p), reverse=True)
    u = u / jnp.max(jnp.abs(u))
    su = S.T @ u
    quad = jnp.sum(diag * u * u) + 2.0 * jnp.sum(off * u[:-1] * u[1:]) + jnp.sum(su * su)
    return su / jnp.sqrt(quad), mu
