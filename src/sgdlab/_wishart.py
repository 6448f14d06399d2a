"""Exact samplers for the Gram matrices of Gaussian vectors (Bartlett decomposition).

Every sampler here takes its randomness from a :class:`Draws`: the words of one Threefry
hash call, handed out in order at trace time, so that a chain step draws its next key and all
its Gaussian, chi-square and uniform variates with one call. The key-based functions
(``gamma(key, ...)``, ``wishart(key, ...)``, ...) make a ``Draws`` of exactly the size they
need.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.random import threefry_2x32

__all__ = ["Draws", "bartlett", "chi2", "gamma", "psd_cholesky", "wishart", "wishart_quadratic"]

SUBKEY_BASE = 1 << 31
GAMMA_DRAWS = 3  # variates per Gamma variate: the first proposal (a normal and a uniform) and the boost
RETRY_BASE = 1 << 31  # first counter word of the gamma sampler's extra tries (try i: RETRY_BASE + i)
RETRY_STRIDE = 1 << 24  # second counter words per gamma call of one key (bounds the variates of a call)


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
    worst = jnp.asarray(jnp.inf, G.dtype)
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


def _size(shape) -> int:
    return math.prod(shape)


def threefry_bits(key_data: jax.Array, words: int) -> jax.Array:
    """``words`` uint32 words: jax's Threefry-2x32 hash of the counters 0..words - 1 under the
    key (``jax.extend.random.threefry_2x32``, which pairs counter i with i + words / 2)."""
    return threefry_2x32(key_data, jnp.arange(words, dtype=jnp.uint32))


def _words(size: int, dtype) -> int:
    return size * (2 if jnp.dtype(dtype).itemsize == 8 else 1)


def _unit_interval(bits: jax.Array, dtype) -> jax.Array:
    """U[0, 1) from random words: the top mantissa bits of a float in [1, 2), minus 1."""
    if jnp.dtype(dtype).itemsize == 8:
        w = bits.reshape(2, -1).astype(jnp.uint64)
        b = (w[0] << jnp.uint64(32)) | w[1]
        f = jax.lax.bitcast_convert_type((b >> jnp.uint64(12)) | jnp.uint64(0x3FF0000000000000), jnp.float64)
    else:
        f = jax.lax.bitcast_convert_type((bits >> jnp.uint32(9)) | jnp.uint32(0x3F800000), jnp.float32)
    return f - jnp.asarray(1.0, dtype)


class Draws:
    """Random words of one hash call, handed out in order as U[0, 1) variates by
    ``uniform``, ``normal``, ``gamma``, ``chi2``, ``bartlett``, ``wishart`` and
    ``wishart_quadratic`` (offsets fixed at trace time: the same call order takes the same
    variates). A float64 variate takes two Threefry-2x32 words of ``key``
    (:func:`threefry_bits`), a float32 one; the class functions ``*_size`` give how many
    words each consumes.

    Normals are sqrt(2) erfinv(2u - 1), the transform of ``jax.random.normal``. The gamma
    sampler works in float64 whatever ``dtype`` (its acceptance test cancels terms of size
    alpha) and returns ``dtype``. Its rare extra tries draw from fresh counters of ``key``;
    ``subkey`` hands out further independent keys (e.g. for a data law's cluster draw)."""

    def __init__(self, key: jax.Array, words: int, dtype=jnp.float64, *, _bits=None):
        self.key, self.size, self.dtype = key, words, jnp.dtype(dtype)
        self.bits = threefry_bits(jax.random.key_data(key), words) if _bits is None else _bits
        self.used = 0
        self._keys = 0
        self._sites = 0

    @classmethod
    def split(cls, key: jax.Array, words: int, dtype=jnp.float64) -> tuple[jax.Array, Draws]:
        """(next key, draws of ``words`` words) from one hash call: the next key is the first
        two words of threefry(key, 0..), the draws the words after them (the way
        ``jax.random.split`` derives keys)."""
        bits = threefry_bits(jax.random.key_data(key), 2 + words)
        nxt = jax.random.wrap_key_data(bits[:2], impl=jax.random.key_impl(key))
        return nxt, cls(key, words, dtype, _bits=bits[2:])

    def _next_retry_site(self) -> int:
        self._sites += 1
        if self._sites * RETRY_STRIDE >= 1 << 32:
            raise ValueError("Draws: too many gamma calls on one key")
        return self._sites - 1

    def _next_key_index(self) -> int:
        # fold_in(key, j) hashes the counter pair (0, j); the draws use the pairs (i, i + h),
        # i < h = half their word count, so j >= 2^31 never meets them
        self._keys += 1
        return SUBKEY_BASE + self._keys

    def subkey(self) -> jax.Array:
        """A key independent of the draws (fold_in(key, j), a new j per call)."""
        return jax.random.fold_in(self.key, self._next_key_index())

    def uniform(self, shape, dtype=None) -> jax.Array:
        dt = self.dtype if dtype is None else jnp.dtype(dtype)
        k = _words(_size(shape), dt)
        if self.used + k > self.size:
            raise ValueError(f"Draws: {self.used + k} words requested of {self.size} drawn")
        out = _unit_interval(self.bits[self.used:self.used + k], dt).reshape(shape)
        self.used += k
        return out

    def normal(self, shape, dtype=None) -> jax.Array:
        dt = self.dtype if dtype is None else jnp.dtype(dtype)
        lo = np.nextafter(np.asarray(-1.0, dt), np.asarray(0.0, dt))
        return np.sqrt(2.0).astype(dt) * jax.scipy.special.erfinv(jnp.maximum(2 * self.uniform(shape, dt) - 1, lo))

    @staticmethod
    def normal_size(shape, dtype=jnp.float64) -> int:
        return _words(_size(shape), dtype)

    @staticmethod
    def gamma_size(shape) -> int:
        return 2 * GAMMA_DRAWS * _size(shape)

    def gamma(self, alpha, shape=()) -> jax.Array:
        """An exact Gamma(alpha) sample (alpha > 0, traceable) by Marsaglia–Tsang rejection.

        With dd = a - 1/3, c = 1 / sqrt(9 dd): propose g = dd (1 + c x)^3, x ~ N(0, 1), and
        accept when (1 + c x) > 0 and log u < x^2 / 2 + dd - dd v + dd log v (u uniform,
        v = (1 + c x)^3). The first proposal comes from the draws; each entry keeps its first accepted
        one, and a ``while_loop`` redraws only while some entry has none, so the result is
        exact. Each extra try takes its normal and uniform from one hash of fresh counters of
        ``key`` (first counter word RETRY_BASE + try; the draws, splits and fold-ins of a key
        use first words below 2^31): one hash call per try instead of the five of fold_in /
        split / normal / uniform (the loop body is compiled into every chain step although it
        rarely runs; measured over four structures: the step's compilation -17% at XLA level 0,
        unchanged at the default level; BENCHMARKS.md). Acceptance is >= 0.95 per try for every
        alpha and > 0.999 for the large alpha of the chain's chi^2(d - P). (A second proposal
        drawn up front for every entry was measured slower: vectorised, every entry pays for it,
        while the loop's extra try costs little.) For alpha < 1, a = alpha + 1 and the sample is
        multiplied by U^(1/alpha) (Gamma(alpha + 1) U^(1/alpha) ~ Gamma(alpha)).
        """
        dtype = jnp.float64
        alpha = jnp.broadcast_to(jnp.asarray(alpha, dtype), shape)
        boost = alpha < 1.0
        a = jnp.where(boost, alpha + 1.0, alpha)
        dd = a - 1.0 / 3.0
        c = 1.0 / jnp.sqrt(9.0 * dd)

        def accept(x, u):
            w = 1.0 + c * x
            v = w * w * w
            ok = (w > 0) & (jnp.log(u) < 0.5 * x * x + dd - dd * v + dd * jnp.log(jnp.where(w > 0, v, 1.0)))
            return dd * v, ok

        x = self.normal(shape, dtype)
        u = self.uniform((2, *shape), dtype)
        g, ok = accept(x, u[0])
        key_data, site = jax.random.key_data(self.key), self._next_retry_site()
        size = _size(shape)
        if 2 * size > RETRY_STRIDE:
            raise ValueError(f"Draws.gamma: {size} variates in one call; at most {RETRY_STRIDE // 2}")
        lo_words = jnp.uint32(site * RETRY_STRIDE) + jnp.arange(2 * size, dtype=jnp.uint32)

        def body(st):
            # try i draws its normal and uniform from one hash of the counter pairs
            # (RETRY_BASE + i, site * RETRY_STRIDE + k): pairs that no draw, split or fold_in of
            # this key uses (their first word is below 2^31), so every try is independent
            g, ok, i = st
            hi = jnp.full((2 * size,), RETRY_BASE, jnp.uint32) + i
            bits = threefry_2x32(key_data, jnp.concatenate([hi, lo_words]))
            dr = Draws(self.key, 4 * size, dtype, _bits=bits)
            g2, ok2 = accept(dr.normal(shape, dtype), dr.uniform(shape, dtype))
            return jnp.where(ok, g, g2), ok | ok2, i + 1

        g, _, _ = jax.lax.while_loop(lambda st: ~jnp.all(st[1]), body, (g, ok, jnp.zeros((), jnp.uint32)))
        return jnp.where(boost, g * u[1] ** (1.0 / alpha), g).astype(self.dtype)

    def chi2(self, df, shape=()) -> jax.Array:
        """chi^2 with ``df`` degrees of freedom: 2 * Gamma(df / 2) (exact, :meth:`gamma`)."""
        return 2.0 * self.gamma(jnp.asarray(df, jnp.float64) / 2.0, shape)

    @staticmethod
    def bartlett_size(k: int, dtype=jnp.float64) -> int:
        return Draws.gamma_size((k,)) + Draws.normal_size((k * (k - 1) // 2,), dtype)

    def bartlett(self, k: int, df) -> jax.Array:
        """Lower-triangular A (k x k) with A A^T ~ Wishart_k(df, I).

        Bartlett: A_ii = sqrt(chi^2(df - i)), i = 0..k-1, entries below the diagonal N(0, 1).
        """
        diag = jnp.sqrt(self.chi2(jnp.asarray(df, jnp.float64) - jnp.arange(k, dtype=jnp.float64), (k,)))
        rows, cols = np.tril_indices(k, -1)
        low = jnp.zeros((k, k), self.dtype).at[rows, cols].set(self.normal((len(rows),)))
        return low + jnp.diag(diag)

    wishart_size = bartlett_size

    def wishart(self, k: int, df) -> jax.Array:
        """A sample of Wishart_k(df, I): the Gram matrix of k Gaussian vectors in dimension df."""
        a = self.bartlett(k, df)
        return a @ a.T

    @staticmethod
    def wishart_quadratic_size(n: int, p: int, dtype=jnp.float64) -> int:
        return Draws.gamma_size((1,)) if p == 1 else Draws.bartlett_size(min(n, p), dtype)

    def wishart_quadratic(self, C: jax.Array, df) -> jax.Array:
        """A sample of C^T K C with K ~ Wishart_n(df, I), for C of shape (n, p).

        C^T K C ~ Wishart_p(df, C^T C): sampled in whichever of p x p or n x n is smaller.
        For p = 1 this is (C^T C) * chi^2(df).
        """
        n, p = C.shape
        if p == 1:
            return jnp.sum(C * C) * self.chi2(df, (1, 1))
        if p <= n:
            r, _ = psd_cholesky(C.T @ C)
            ra = r @ self.bartlett(p, df)
            return ra @ ra.T
        ac = self.bartlett(n, df).T @ C
        return ac.T @ ac


def gamma(key: jax.Array, alpha, shape=(), dtype=jnp.float64) -> jax.Array:
    """An exact Gamma(alpha) sample of ``shape`` (:meth:`Draws.gamma`)."""
    return Draws(key, Draws.gamma_size(shape), dtype).gamma(alpha, shape)


def chi2(key: jax.Array, df, shape=(), dtype=jnp.float64) -> jax.Array:
    """chi^2 with ``df`` degrees of freedom: 2 * Gamma(df / 2) (exact, :meth:`Draws.gamma`)."""
    return Draws(key, Draws.gamma_size(shape), dtype).chi2(df, shape)


def bartlett(key: jax.Array, k: int, df, dtype=jnp.float64) -> jax.Array:
    """Lower-triangular A (k x k) with A A^T ~ Wishart_k(df, I) (:meth:`Draws.bartlett`)."""
    return Draws(key, Draws.bartlett_size(k, dtype), dtype).bartlett(k, df)


def wishart(key: jax.Array, k: int, df, dtype=jnp.float64) -> jax.Array:
    """A sample of Wishart_k(df, I) (:meth:`Draws.wishart`)."""
    return Draws(key, Draws.wishart_size(k, dtype), dtype).wishart(k, df)


def wishart_quadratic(key: jax.Array, C: jax.Array, df) -> jax.Array:
    """A sample of C^T K C with K ~ Wishart_n(df, I), C (n, p) (:meth:`Draws.wishart_quadratic`)."""
    n, p = C.shape
    return Draws(key, Draws.wishart_quadratic_size(n, p, C.dtype), C.dtype).wishart_quadratic(C, df)
