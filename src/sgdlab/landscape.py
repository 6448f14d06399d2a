"""Loss landscapes of one-row sequence models on the disk of unit-norm students.

For a sequence model with one student row (tied network or attention layer, Arnaboldi et
al. 2025) and at most one positional direction u, a unit-norm student is

    w = m w* + e u + sqrt(1 - m^2 - e^2) v,       m^2 + e^2 <= 1,

and the population loss is a function F(m, e) of the semantic alignment m and the
positional alignment e (``SequenceModel.population_risk`` at M = [[m, e]], Q = [[1]]; with
no positional direction F does not depend on e). The tools here describe that landscape:

- :func:`loss_grid`: F on a grid (NaN outside the disk);
- :func:`hessian_at_origin` and :func:`first_escape_direction`: the uninformative start
  (m, e) = (0, 0) is a critical point when F is even in m and in e (the positional/semantic
  model: softmax(nu nu^T) is even in nu, the opposite encodings change sign with u); the
  most negative curvature direction of F there is the one spherical SGD leaves it along;
- :func:`global_minimum`: the minimiser on the disk, "semantic" when |m| > |e|;
- :func:`omega_transitions`: in a family of models indexed by omega (the weight of the
  positional part of the attention target), where the first escape direction and where the
  global minimum turn from semantic to positional. The two need not coincide.

``points`` is the quadrature budget of the population risk (``SequenceModel.expectation``:
a tensor Gauss–Hermite rule on the 2L token fields); the default is the model's own, so
``loss_grid`` agrees with ``population_risk`` (for the L = 2 attention model: 11 nodes per
axis, F within ~1e-3 of its limit; 16^4 points: ~1e-4). Curvatures are not computed by
differentiating that rule (the softmax's sharp transitions make its second derivatives
converge slowly: H_ee off by 75% at 11 nodes, 4% at 25) but from the likelihood-ratio form
:func:`ratio_loss_function` on 40^4 fixed nodes (~1e-5).

>>> from sgdlab.landscape import first_escape_direction, positional_semantic_model
>>> first_escape_direction(positional_semantic_model(omega=0.0))["label"]
'semantic'
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy import optimize

from .model import Training
from .sequence import RISK_POINTS, SequenceModel, SequenceProblem, SequenceStudent

__all__ = [
    "first_escape_direction",
    "global_minimum",
    "hessian_at_origin",
    "loss_function",
    "ratio_loss_function",
    "loss_grid",
    "omega_transitions",
    "positional_semantic_model",
]

HESSIAN_POINTS = 40**4  # quadrature budget of the Hessian at the origin (fixed nodes, loss evaluated once)
GRID_CHUNK = 256  # grid points per compiled call (memory: chunk x quadrature points)
GRID = 41  # default grid per axis of global_minimum on [-1, 1]^2
ZOOMS = 4  # local refinements of the grid minimum, each 5x finer


def positional_semantic_model(
    omega: float, *, a: float = 1.0, scale: float = 1.0, d: int = 1000, lr: float | None = None
) -> SequenceModel:
    """The positional/semantic attention model of Arnaboldi et al. 2025: L = 2 tokens with the
    opposite encodings p_1 = scale u, p_2 = -scale u, target (1 - omega) softmax(nu nu^T) +
    omega A with A = softmax(a^2 s s^T), s = (1, -1), attention student read out as the matrix, square loss,
    spherical SGD."""
    prob = SequenceProblem(
        d=d, length=2, combine="attention", omega=omega, attention_a=a, positional="opposite", positional_scale=scale
    )
    tr = Training(loss="square", spherical=True, lr=1.0 / d if lr is None else lr)
    return SequenceModel(prob, SequenceStudent(kind="attention", readout="matrix"), tr)


def _check(model: Any) -> None:
    if not isinstance(model, SequenceModel) or model.p != 1:
        raise ValueError(
            "landscape: got a model with several student rows; allowed: a one-row sequence model (tied or attention)"
        )
    if model.r > 2:
        raise ValueError(f"landscape: got {model.r - 1} positional directions; allowed: 0 or 1")


@functools.lru_cache(maxsize=32)
def loss_function(model: SequenceModel, points: int = RISK_POINTS) -> Callable:
    """F(m, e): the population loss of the unit-norm student with semantic alignment m and
    positional alignment e (a JAX function of two scalars; differentiable)."""
    _check(model)
    loss = jax.vmap(model.token_loss)
    Q = jnp.ones((1, 1))

    def F(m, e):
        M = jnp.stack([m, e])[None, :] if model.r == 2 else jnp.reshape(m, (1, 1))
        return model.expectation(loss, M, Q, points)

    return F


@functools.lru_cache(maxsize=32)
def _grid_fn(model: SequenceModel, points: int) -> Callable:
    return jax.jit(jax.vmap(loss_function(model, points)))


def _values(model: SequenceModel, m: np.ndarray, e: np.ndarray, points: int) -> np.ndarray:
    """F at the points (m_i, e_i) (1-D arrays, inside the disk), in chunks of fixed size."""
    fn = _grid_fn(model, points)
    out = np.empty(len(m))
    chunk = min(GRID_CHUNK, 1 << max(len(m) - 1, 0).bit_length())  # few compiled shapes, little padding
    for i in range(0, len(m), chunk):
        mm, ee = m[i : i + chunk], e[i : i + chunk]
        k = len(mm)
        pad = chunk - k
        mm, ee = np.pad(mm, (0, pad)), np.pad(ee, (0, pad))
        out[i : i + k] = np.asarray(fn(jnp.asarray(mm), jnp.asarray(ee)))[:k]
    return out


def loss_grid(model: SequenceModel, m, e, *, points: int = RISK_POINTS) -> np.ndarray:
    """F on a grid: 1-D ``m`` (K,) and ``e`` (J,) give F[i, j] = F(m[i], e[j]) (K, J);
    arrays of one shape give F elementwise. NaN outside the disk m^2 + e^2 <= 1."""
    m, e = np.asarray(m, np.float64), np.asarray(e, np.float64)
    if m.ndim == 1 and e.ndim == 1:
        m, e = np.meshgrid(m, e, indexing="ij")
    m, e = np.broadcast_arrays(m, e)
    inside = m**2 + e**2 <= 1.0 + 1e-12
    F = np.full(m.shape, np.nan)
    F[inside] = _values(model, m[inside], e[inside], points)
    return F


@functools.lru_cache(maxsize=32)
def _lr_parts(model: SequenceModel, points: int):
    """Fixed quadrature nodes of the uninformative law (lam, nu independent N(0, 1) per token)
    and the loss values there: (x (N, L), y (N, L), w * loss (N,))."""
    pts, w = model._rule(points)
    L = model.tokens
    x, y = pts[:, :L], pts[:, L : 2 * L]
    xi = pts[:, 2 * L] if model.problem.noise > 0 else np.zeros(len(w))
    vals = jax.jit(jax.vmap(model.token_loss))(jnp.asarray(x), jnp.asarray(y), jnp.asarray(xi))
    return jnp.asarray(x), jnp.asarray(y), jnp.asarray(w) * vals


def _ratio(m, e, x, y, wl, c):
    q = 1.0 - m * m
    xs = x - e * c
    logr = -(xs * xs - 2.0 * m * xs * y + y * y) / (2.0 * q) + 0.5 * (x * x + y * y) - 0.5 * jnp.log(q)
    return jnp.sum(wl * jnp.exp(jnp.sum(logr, axis=1)))


def _ratio_args(model: SequenceModel, points: int):
    _check(model)
    x, y, wl = _lr_parts(model, points)
    c = jnp.asarray(model.offsets[:, 1]) if model.r == 2 else jnp.zeros(model.tokens)
    return x, y, wl, c


def ratio_loss_function(model: SequenceModel, points: int = HESSIAN_POINTS) -> Callable:
    """F(m, e) written on fixed nodes with the likelihood ratio of the token law at (m, e)
    against the law at the origin (per token: (lam, nu) with mean (e c_l, 0), unit variances
    and correlation m, against N(0, I_2)). Equal to :func:`loss_function` up to quadrature
    error near the origin, and its derivatives there are the Stein forms
    H_ee = E[loss ((c.u)^2 - |c|^2)], H_mm = sum_ll' E[loss (u_l u_l' - d_ll')(v_l v_l' - d_ll')],
    which the Gauss–Hermite rule integrates much better than derivatives of the loss
    (the attention softmax has sharp transitions). Not for |m| near 1 (the ratio blows up)."""
    args = _ratio_args(model, points)
    return lambda m, e: _ratio(m, e, *args)


@jax.jit
def _ratio_hessian(x, y, wl, c):
    return jax.hessian(lambda z: _ratio(z[0], z[1], x, y, wl, c))(jnp.zeros(2, x.dtype))


def hessian_at_origin(model: SequenceModel, *, points: int = HESSIAN_POINTS) -> np.ndarray:
    """The 2 x 2 Hessian of F(m, e) at (0, 0), order (m, e): jax.hessian of
    :func:`ratio_loss_function` (quadrature error ~1e-5 with the default 40^4 nodes for the
    L = 2 attention model; differentiating :func:`loss_function` itself needs far more)."""
    return np.asarray(_ratio_hessian(*_ratio_args(model, points)))


def _label(vm: float, ve: float) -> str:
    return "semantic" if abs(vm) > abs(ve) else "positional"


def first_escape_direction(model: SequenceModel, *, points: int = HESSIAN_POINTS) -> dict:
    """The direction of most negative curvature of F at the origin.

    Returns ``direction`` (unit (m, e) eigenvector of the smallest Hessian eigenvalue),
    ``label`` ("semantic" when |m-component| > |e-component|, else "positional"),
    ``eigenvalues`` (ascending) and ``hessian``.
    """
    H = hessian_at_origin(model, points=points)
    ev, V = np.linalg.eigh(0.5 * (H + H.T))
    v = V[:, 0] * (1.0 if V[np.argmax(np.abs(V[:, 0])), 0] > 0 else -1.0)
    return {
        "direction": (float(v[0]), float(v[1])),
        "label": _label(v[0], v[1]),
        "eigenvalues": (float(ev[0]), float(ev[1])),
        "hessian": H,
    }


def _candidates(n: int) -> tuple[np.ndarray, np.ndarray]:
    """An n x n grid on [-1, 1]^2 restricted to the disk, plus 4 n points on the circle."""
    x = np.linspace(-1.0, 1.0, n)
    m, e = np.meshgrid(x, x, indexing="ij")
    keep = m**2 + e**2 <= 1.0 + 1e-12
    t = np.linspace(0.0, 2.0 * np.pi, 4 * n, endpoint=False)
    return np.concatenate([m[keep], np.cos(t)]), np.concatenate([e[keep], np.sin(t)])


def _refine(model, points, best, h, region) -> tuple[float, float, float]:
    """ZOOMS local 11 x 11 grids around ``best`` = (m, e, F), of half-width h, h / 5, ...
    (points outside the disk are moved onto the circle; only points in ``region``)."""
    bm, be, bf = best
    for _ in range(ZOOMS):
        off = np.linspace(-h, h, 11)
        mm, ee = (a.ravel() for a in np.meshgrid(bm + off, be + off, indexing="ij"))
        r2 = mm**2 + ee**2
        out = r2 > 1.0
        mm[out], ee[out] = mm[out] / np.sqrt(r2[out]), ee[out] / np.sqrt(r2[out])
        ok = region(mm, ee)
        if ok.any():
            v = _values(model, mm[ok], ee[ok], points)
            j = int(np.argmin(v))
            if v[j] < bf:
                bm, be, bf = float(mm[ok][j]), float(ee[ok][j]), float(v[j])
        h /= 5.0
    return bm, be, bf


def _semantic(m, e):
    return np.abs(m) >= np.abs(e)


def _positional(m, e):
    return np.abs(e) > np.abs(m)


def global_minimum(model: SequenceModel, *, grid: int = GRID, points: int = RISK_POINTS) -> dict:
    """The minimiser of F on the disk: F on a ``grid`` x ``grid`` grid of [-1, 1]^2 inside the
    disk and on 4 ``grid`` points of the circle, then ZOOMS local refinements of the best
    point of each region. Returns ``m``, ``e``, ``F``, ``label`` ("semantic" when |m| > |e|),
    and the minima over the semantic region |m| >= |e| (``F_semantic``, at ``semantic``)
    and over the positional region |e| > |m| (``F_positional``, at ``positional``; +inf
    without a positional direction)."""
    _check(model)
    m, e = _candidates(grid)
    vals = _values(model, m, e, points)
    h = 2.0 / (grid - 1)
    found = {}
    for name, region in (("semantic", _semantic), ("positional", _positional)):
        mask = region(m, e)
        if model.r == 1 and name == "positional":
            found[name] = (np.nan, np.nan, np.inf)
            continue
        i = int(np.argmin(np.where(mask, vals, np.inf)))
        found[name] = _refine(model, points, (float(m[i]), float(e[i]), float(vals[i])), h, region)
    sem, pos = found["semantic"], found["positional"]
    best = sem if sem[2] <= pos[2] else pos
    return {
        "m": best[0],
        "e": best[1],
        "F": best[2],
        "label": _label(best[0], best[1]),
        "F_semantic": sem[2],
        "semantic": sem[:2],
        "F_positional": pos[2],
        "positional": pos[:2],
    }


def _root(fun: Callable[[float], float], omegas: np.ndarray, values: np.ndarray, xtol: float) -> float | None:
    """First sign change of ``values`` along ``omegas`` (from <= 0 to > 0 or back), located by
    brentq on ``fun``; None when there is none."""
    s = np.sign(values)
    for i in range(len(omegas) - 1):
        if s[i] == 0:
            return float(omegas[i])
        if s[i] * s[i + 1] < 0:
            return float(optimize.brentq(fun, omegas[i], omegas[i + 1], xtol=xtol))
    return float(omegas[-1]) if s[-1] == 0 and len(s) > 1 else None


def omega_transitions(
    make_model: Callable[[float], SequenceModel],
    omegas: Sequence[float],
    *,
    minimum: bool = True,
    grid: int = GRID,
    points: int = RISK_POINTS,
    hessian_points: int = HESSIAN_POINTS,
    minimum_points: int | None = None,
    xtol: float = 1e-4,
) -> dict:
    """Where, along omega, the first escape direction and the global minimum turn positional.

    ``make_model(omega)`` builds the model. ``escape``: the root of H_mm - H_ee (Hessian at
    the origin; F is even in m and e for the positional/semantic model, so H is diagonal and
    the escape direction is the axis of the smaller curvature); ``minimum``: the root of
    F_semantic - F_positional (minima of F over |m| >= |e| and over |e| > |m|, see
    :func:`global_minimum`). Both by brentq between the grid points of ``omegas`` where the
    sign changes; None when it does not change in the range. Also returns the values on the
    grid (``omegas``, ``gap_escape`` = H_mm - H_ee, ``gap_minimum`` = F_sem - F_pos);
    ``minimum=False`` skips the (slower) minimum search.

    ``minimum_points``: the minimisers of each region are searched with the budget ``points``
    and F is then evaluated at them with this larger budget, for the gap whose root is the
    minimum transition. The positional/semantic model's root moves in the third decimal
    between 11^4 nodes (the default budget: 0.7393) and 32^4 (0.7376, unchanged at 40^4 and
    48^4), because its minimisers sit on the circle where the softmax is sharpest.
    """
    om = np.asarray(sorted(float(o) for o in omegas))

    def gap_escape(o: float) -> float:
        H = hessian_at_origin(make_model(o), points=hessian_points)
        return float(H[0, 0] - H[1, 1])

    def gap_minimum(o: float) -> float:
        model = make_model(o)
        g = global_minimum(model, grid=grid, points=points)
        if minimum_points is None or minimum_points == points:
            return float(g["F_semantic"] - g["F_positional"])
        F = loss_function(model, minimum_points)
        return float(F(*g["semantic"]) - F(*g["positional"]))

    ge = np.array([gap_escape(o) for o in om])
    out: dict[str, Any] = {"omegas": om, "gap_escape": ge, "escape": _root(gap_escape, om, ge, xtol)}
    if minimum:
        gm = np.array([gap_minimum(o) for o in om])
        out.update(gap_minimum=gm, minimum=_root(gap_minimum, om, gm, xtol))
    return out
