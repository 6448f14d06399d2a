r"""The smoothed loss of Damian, Nichani, Ge, Lee (2023), per sample, as a function of the fields.

For a unit row w the smoothed loss is L_lam(w) = E_z L((w + lam z) / |w + lam z|), z uniform on
the unit sphere orthogonal to w, so |w + lam z| = sqrt(1 + lam^2). For one sample x,

    (w + lam z).x / sqrt(1 + lam^2) = (lambda + lam |x_perp| s) / sqrt(1 + lam^2),
    |x_perp|^2 = |x|^2 - lambda^2,   lambda = w.x,

with s the first coordinate of a uniform point on S^{d-2} (the unit sphere of R^{d-1}), density
proportional to (1 - s^2)^{(d-4)/2}, E[s^{2j}] = (2j-1)!! / (m (m+2) ... (m+2j-2)), m = d - 1,
odd moments 0 (:func:`sphere_moment`). So the smoothed per-sample loss is a function of the
student fields, the teacher fields and the squared norm |x|^2 **of the sample** only:

    ell_lam(lambda, nu, |x|^2) = E_s[ ell((lambda + lam sqrt(|x|^2 - lambda^2) s) / sqrt(1 + lam^2), nu) ].

The s-expectation uses the Gauss–Jacobi rule of the density (alpha = beta = (d-4)/2,
weights normalised, :func:`sphere_rule`). With n nodes it is exact for polynomials in s of
degree <= 2n - 1: for a polynomial activation with the correlation loss (degree k in s) or
the square loss (degree 2k) the node count n = floor(degree / 2) + 1 makes it the finite
sum over the moments E[s^{2j}] above, i.e. the closed form. Other activations use
``Training.smoothing_nodes`` nodes (default :data:`DEFAULT_NODES`).

With width p > 1 every row is smoothed by its own independent z_j (the s_j are then
independent given x): a tensor product of the rule over the p rows.

Replacing |x|^2 by its mean d removes the whole gain of smoothing (the x-fluctuation of
|x|^2 correlated with the label is what carries the amplified signal): every engine passes
the sample's own |x|^2 (full: the sum of squares; chain: |y|^2 + (K_perp)_bb with the same
K_perp as in the lr^2 term; ODE: a generalised Gauss–Laguerre axis for chi^2(d - P)).
"""

from __future__ import annotations

import functools
import itertools
import math

import jax.numpy as jnp
import numpy as np

__all__ = ["DEFAULT_NODES", "chi2_rule", "smoothing_lam", "sphere_moment", "sphere_rule"]

DEFAULT_NODES = 40  # Gauss–Jacobi nodes in s for a non-polynomial loss
DEFAULT_CHI2_NODES = 24  # generalised Gauss–Laguerre nodes (ODE) for a non-polynomial loss


def smoothing_lam(d: int, c: float = 1.0) -> float:
    """The paper's smoothing radius lambda = c * d^{1/4}."""
    return float(c) * float(d) ** 0.25


def sphere_moment(j: int, d: int) -> float:
    """E[s^j] for s the first coordinate of a uniform point on S^{d-2} (unit sphere of R^{d-1})."""
    if j % 2:
        return 0.0
    m = d - 1
    out = 1.0
    for i in range(j // 2):
        out *= (2 * i + 1) / (m + 2 * i)
    return out


def _golub_welsch(diag: np.ndarray, off: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and normalised weights from the Jacobi matrix of a three-term recurrence."""
    J = np.diag(diag) + np.diag(off, 1) + np.diag(off, -1)
    x, V = np.linalg.eigh(J)
    w = V[0] ** 2
    return x, w / w.sum()


@functools.lru_cache(maxsize=64)
def sphere_rule(d: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss–Jacobi nodes and weights (summing to 1) for s, density ∝ (1 - s^2)^{(d-4)/2}.

    Exact for E[poly(s)] of degree <= 2n - 1. Computed by Golub–Welsch from the recurrence
    of the Gegenbauer weight (1 - s^2)^a, a = (d - 4) / 2, b_k^2 = k (k + 2a) / ((2k + 2a)^2 - 1)
    (stable for any d, unlike the closed-form weights), then symmetrised (s -> -s).
    """
    if d < 3:
        raise ValueError(f"smoothing needs d >= 3; got d = {d}")
    a = (d - 4) / 2
    k = np.arange(1, int(n), dtype=np.float64)
    b2 = k * (k + 2 * a) / np.maximum((2 * k + 2 * a) ** 2 - 1, 1e-300)
    if len(k):
        b2[0] = 1.0 / (3 + 2 * a)  # k = 1, simplified (also right for d = 3, a = -1/2)
    x, w = _golub_welsch(np.zeros(int(n)), np.sqrt(b2))
    x = 0.5 * (x - x[::-1])
    w = 0.5 * (w + w[::-1])
    return x, w / w.sum()


@functools.lru_cache(maxsize=64)
def chi2_rule(df: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights (summing to 1) with E[poly(X)], X ~ chi^2(df), exact to degree 2n - 1.

    Generalised Gauss–Laguerre in X / 2 ~ Gamma(df / 2), alpha = df / 2 - 1, nodes * 2
    (Golub–Welsch: diagonal 2k + alpha + 1, off-diagonal sqrt(k (k + alpha)); stable for
    large df, where scipy's roots_genlaguerre weights overflow).
    """
    alpha = df / 2 - 1
    k = np.arange(int(n), dtype=np.float64)
    x, w = _golub_welsch(2 * k + alpha + 1, np.sqrt(k[1:] * (k[1:] + alpha)))
    return 2.0 * x, w


def loss_degree_in_s(activation_degree: int | None, loss) -> int | None:
    """Degree of the per-sample loss in the smoothed student field (None if not polynomial)."""
    if activation_degree is None or loss not in ("square", "correlation"):
        return None
    return activation_degree * (2 if loss == "square" else 1)


def node_count(degree: int | None, nodes: int | None) -> int:
    """Gauss–Jacobi nodes: exact count for a polynomial of ``degree``, else ``nodes`` or the default."""
    if nodes is not None:
        return int(nodes)
    if degree is not None:
        return degree // 2 + 1
    return DEFAULT_NODES


@functools.lru_cache(maxsize=64)
def tensor_sphere_rule(d: int, n: int, p: int) -> tuple[np.ndarray, np.ndarray]:
    """The rule of :func:`sphere_rule` on each of p independent axes: points (n^p, p), weights (n^p,)."""
    x, w = sphere_rule(d, n)
    if p == 1:
        return x[:, None], w
    if n**p > 200_000:
        raise ValueError(f"smoothing: {n}^{p} Gauss–Jacobi points is too many; lower train.smoothing_nodes")
    pts = np.array(list(itertools.product(x, repeat=p))).reshape(-1, p)
    wts = np.prod(np.array(list(itertools.product(w, repeat=p))).reshape(-1, p), axis=1)
    return pts, wts


def smoothed_fields(lam_fields, x2, lam: float, s):
    """u = (lambda + lam sqrt(|x|^2 - lambda^2) s) / sqrt(1 + lam^2) for nodes ``s`` (N, p) -> (N, p)."""
    v = x2 - lam_fields**2
    pos = v > 0
    r = jnp.where(pos, jnp.sqrt(jnp.where(pos, v, 1.0)), 0.0)  # safe sqrt: finite gradient at v = 0
    return (lam_fields + lam * r * s) / math.sqrt(1.0 + lam**2)
