r"""Spiked single-index problems: order parameters, BBP, and the (m, r) population flow.

Inputs x ~ N(0, I_d + lambda v v^T) with v = eta1 w* + sqrt(1 - eta1^2) v_perp
(:class:`sgdlab.data.Spiked` with ``strength`` = lambda, ``overlap`` = eta1; frame
[w*, v_perp]), target y = g(w*.x) + noise on the raw field, one student row w on the unit
sphere. A unit w is described by

    m = w.w*,   r = w.v,    and its frame row  M = [m, (r - eta1 m) / sqrt(1 - eta1^2)];

the fields u = w.x, z = w*.x are jointly Gaussian with Var u = 1 + lambda r^2,
Var z = 1 + lambda eta1^2 and Cov(u, z) = m + lambda eta1 r (:func:`field_law`): a warm start
provides a large field correlation, not only a large m.

BBP (Baik, Ben Arous, Peche 2005; Paul 2007): the sample covariance of n' inputs with
gamma = d / n' has, as d, n' -> infinity, a top eigenvalue (1 + lambda)(1 + gamma / lambda)
separated from the bulk edge (1 + sqrt gamma)^2 and a top eigenvector with squared overlap
(1 - gamma / lambda^2) / (1 + gamma / lambda) with v when lambda > sqrt(gamma); below the
threshold the eigenvalue sticks to the edge and the overlap tends to 0.

The population flow: :class:`Flow` evaluates the model's expected increment per SGD step
(the ODE's vector field, with the spherical corrector and the lr^2 d term) on the sphere,
in (m, r). :meth:`Flow.fixed_points` finds its zeros with their stability,
:meth:`Flow.outcome` integrates it from a start until escape (m >= threshold), a stable
fixed point or the step budget, and :func:`scan` classifies a grid of settings by the
outcome of a random start (:func:`random_point`) and of a PCA start (the BBP point
r = sqrt(overlap), m = eta1 r). The flow is a deterministic statement: near m ~ d^{-1/2} the
noise matters, so a random start that "escapes" in the flow is a random variable in the
chain; a random start inside the basin of a stable fixed point below the threshold is
trapped for a time exponential in d (it needs a large deviation).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy import integrate, optimize

from ._errors import _bad
from .data import Spiked
from .init import Gram

__all__ = [
    "Flow",
    "bbp_overlap",
    "bbp_threshold",
    "bbp_top_eigenvalue",
    "field_law",
    "frame_row",
    "mr",
    "pca_draws",
    "pca_point",
    "random_point",
    "scan",
    "warm",
]


def bbp_threshold(gamma) -> np.ndarray:
    """The spike strength lambda = sqrt(gamma) above which PCA on n' = d / gamma samples
    correlates with the spike (as d, n' -> infinity)."""
    return np.sqrt(np.asarray(gamma, np.float64))


def bbp_overlap(lam, gamma) -> np.ndarray:
    """Limit of <v_hat, v>^2: (1 - gamma / lambda^2) / (1 + gamma / lambda) for
    lambda > sqrt(gamma), else 0 (gamma = d / n')."""
    lam, gamma = np.broadcast_arrays(np.asarray(lam, np.float64), np.asarray(gamma, np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        val = (1.0 - gamma / lam**2) / (1.0 + gamma / lam)
    return np.where(lam > np.sqrt(gamma), val, 0.0)


def bbp_top_eigenvalue(lam, gamma) -> np.ndarray:
    """Limit of the top eigenvalue of the sample covariance (1/n') X^T X:
    (1 + lambda)(1 + gamma / lambda) above the threshold, the bulk edge (1 + sqrt gamma)^2 below."""
    lam, gamma = np.broadcast_arrays(np.asarray(lam, np.float64), np.asarray(gamma, np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        val = (1.0 + lam) * (1.0 + gamma / lam)
    return np.where(lam > np.sqrt(gamma), val, (1.0 + np.sqrt(gamma)) ** 2)


def _one_spike(data: Any) -> Spiked:
    if not isinstance(data, Spiked) or data.spikes != 1 or callable(data.strength[0]):
        raise _bad("data", getattr(data, "name", data), "a Spiked law with one spike of constant strength")
    return data


def _eta1(data: Spiked) -> float:
    return float(data.overlap[0][0])


def mr(M, data: Spiked, r: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(m, r) from frame rows M (..., a): m = M[..., 0] (overlap with w*), r = M . v."""
    data = _one_spike(data)
    v = data.spike_vectors(r)[0]
    M = np.asarray(M, np.float64)
    return M[..., 0], M @ v


def frame_row(m, r, data: Spiked, teachers: int = 1) -> np.ndarray:
    """The frame row of a unit student with overlaps m (with w*) and r (with v): zero on
    the other teacher directions, (r - eta1 m) / sqrt(1 - eta1^2) along v_perp."""
    data = _one_spike(data)
    e1 = _eta1(data)
    M = np.zeros(teachers + 1)
    M[0] = m
    M[teachers] = (r - e1 * m) / math.sqrt(max(1.0 - e1**2, 1e-300))
    if np.sum(M**2) > 1 + 1e-12:
        raise _bad("train.init", f"(m, r) = ({m:.3g}, {r:.3g})", "overlaps of a unit vector (|M| <= 1)")
    return M


def warm(m, r, data: Spiked, teachers: int = 1) -> Gram:
    """A :class:`~sgdlab.init.Gram` start with overlaps (m, r), uniform off the frame."""
    return Gram([[1.0]], [frame_row(m, r, data, teachers)])


def field_law(m, r, data: Spiked) -> dict[str, np.ndarray]:
    """Var u, Var z, Cov(u, z) and the correlation of u = w.x and z = w*.x for a unit w."""
    data = _one_spike(data)
    lam, e1 = float(data.strength[0]), _eta1(data)
    m, r = np.asarray(m, np.float64), np.asarray(r, np.float64)
    vu, vz, cov = 1.0 + lam * r**2, 1.0 + lam * e1**2, m + lam * e1 * r
    return {"var_u": vu, "var_z": vz, "cov": cov, "corr": cov / np.sqrt(vu * vz)}


def random_point(d: int, eta1: float) -> tuple[float, float]:
    """(m, r) standing for a random start in the flow: m = d^{-1/2} (the typical overlap,
    positive) and r = eta1 m (no part along v_perp, its mean given m)."""
    return d**-0.5, eta1 * d**-0.5


def pca_point(data: Spiked, gamma: float) -> tuple[float, float]:
    """(m, r) of the BBP limit of a positive-sign PCA start: r = sqrt(overlap^2), m = eta1 r."""
    data = _one_spike(data)
    rr = math.sqrt(float(bbp_overlap(float(data.strength[0]), gamma)))
    return _eta1(data) * rr, rr


@functools.partial(jax.jit, static_argnames=("size", "seeds"))
def _pca_draws(key, lam, eta1, d, n, *, size: int, seeds: int):
    from ._pca import pca_frame

    v = jnp.stack([eta1, jnp.sqrt(1.0 - eta1**2)])
    chol = jnp.linalg.cholesky(jnp.eye(2) + lam * jnp.outer(v, v))

    def one(k):
        k1, k2 = jax.random.split(k)
        S = jax.random.normal(k1, (size, 2), jnp.float64) @ chol.T
        wf, mu = pca_frame(k2, S, d - 2.0, n)
        return wf, mu

    wf, mu = jax.vmap(one)(jax.random.split(key, seeds))
    return wf[:, 0], wf @ v, mu / n


def pca_draws(strength: float, overlap: float, d: int, samples: int, seeds: int, seed: int = 0) -> dict:
    """Exact finite-d draws of the top eigenvector of the sample covariance of ``samples``
    inputs of the one-teacher spiked law (lambda = ``strength``, eta1 = ``overlap``), one per
    seed, by the frame reduction of :class:`~sgdlab.init.PCA` (no d x d matrix): ``m``
    (overlap with w*), ``r`` (with v; sign arbitrary) and ``top`` (the top eigenvalue of
    (1/n') X^T X). Numbers are traced: one compilation per power-of-two bucket of ``samples``."""
    size = 1 << max(int(samples) - 1, 0).bit_length()
    m, r, top = _pca_draws(jax.random.PRNGKey(seed), float(strength), float(overlap), float(d), float(samples),
                           size=size, seeds=int(seeds))
    return {"m": np.asarray(m), "r": np.asarray(r), "top": np.asarray(top)}


class Flow:
    """The population flow of a one-row spiked model in (m, r), per SGD step.

    ``problem``, ``student``, ``training`` as for :func:`sgdlab.run` (one teacher direction,
    a one-spike :class:`~sgdlab.data.Spiked` law, a renormalised geometry); ``second_order``
    keeps the lr^2 terms (the finite-d corrector that traps the equator). The velocity is the
    ODE's (``model.ode_field``), so the ODE engine integrates the same flow."""

    def __init__(self, problem, student, training, *, second_order: bool = True):
        from .api import _model

        self.data = _one_spike(problem.data)
        if problem.r != 1 or student.width != 1:
            raise _bad("target.directions", problem.r, "one teacher direction and a one-row student")
        if not training.renormalise:
            raise _bad("train.spherical", training.spherical, "true (or projected): the flow lives on the sphere")
        if training.norm != "euclidean":
            raise _bad("train.norm", training.norm, "'euclidean' for the (m, r) flow (it takes Q = 1)")
        self.problem, self.student, self.training = problem, student, training
        self.model = _model(problem, student, training)
        out = self.model.ode_field(second_order)
        field = out[0]
        self.eta1 = _eta1(self.data)
        self.threshold = training.escape_threshold
        a0 = jnp.asarray(student.a0)
        s = math.sqrt(1.0 - self.eta1**2)
        e1 = self.eta1

        def vel(x, lr):  # x = (m, r) -> (dm, dr) per step, at the traced step size lr
            m, r = x[0], x[1]
            M = jnp.stack([m, (r - e1 * m) / s])[None, :]
            out = field(0.0, {"Q": jnp.ones((1, 1)), "M": M, "a": a0}, {"lr": lr, "lr_a": lr})
            dm = out["M"][0]
            return jnp.stack([dm[0], e1 * dm[0] + s * dm[1]])

        self.lr = float(training.lr)
        self._vel = jax.jit(vel)
        self._fixed: list[dict] | None = None

    def at_lr(self, lr: float) -> Flow:
        """The same flow at another step size (no recompilation: the step size is traced)."""
        other = copy.copy(self)
        other.lr, other._fixed = float(lr), None
        return other

    def velocity(self, m: float, r: float) -> np.ndarray:
        """(dm, dr) per SGD step at (m, r)."""
        return np.asarray(self._vel(jnp.asarray([m, r], jnp.float64), self.lr))

    def jacobian(self, m: float, r: float, h: float = 1e-6) -> np.ndarray:
        """d(dm, dr)/d(m, r) by central differences (the field's eigendecomposition has no
        derivative where eigenvalues are degenerate, e.g. at the origin), one-sided into the
        disk on its boundary (w = +-w*)."""
        x = np.asarray([m, r], np.float64)
        if not self.inside(*(x + h)) or not self.inside(*(x - h)):
            x = x * (1.0 - 4 * h)
        J = np.empty((2, 2))
        for k in range(2):
            e = np.zeros(2)
            e[k] = h
            J[:, k] = (self.velocity(*(x + e)) - self.velocity(*(x - e))) / (2 * h)
        return J

    def inside(self, m: float, r: float) -> bool:
        """Whether (m, r) are the overlaps of a unit vector."""
        s2 = 1.0 - self.eta1**2
        return m * m + (r - self.eta1 * m) ** 2 / s2 <= 1.0 + 1e-12

    def fixed_points(self, grid: int = 9) -> list[dict]:
        """Zeros of the flow inside the disk of unit students: the origin, w = +-w* (when
        they are zeros) and the roots found from a grid of starts; each with (m, r), the
        eigenvalues of the Jacobian (per step) and ``stable`` (every real part < 0)."""
        if self._fixed is not None:
            return self._fixed
        found: list[dict] = []
        scale = max(float(np.max(np.abs(self.velocity(0.5, 0.5)))), 1e-300)

        def add(x):
            if not self.inside(*x) or any(np.hypot(*(x - f["x"])) < 1e-6 for f in found):
                return
            ev = np.linalg.eigvals(self.jacobian(*x))
            tol = 1e-6 * scale  # a zero eigenvalue (degenerate, e.g. without the corrector) is not stable
            found.append({"x": x, "m": float(x[0]), "r": float(x[1]),
                          "eigenvalues": [complex(e) for e in ev], "stable": bool(np.all(ev.real < -tol))})

        for x in ([0.0, 0.0], [1.0, self.eta1], [-1.0, -self.eta1]):
            x = np.asarray(x)
            if np.max(np.abs(self.velocity(*x))) < 1e-10 * scale:
                add(x)
        for m0 in np.linspace(-0.9, 0.9, grid):
            for r0 in np.linspace(-0.9, 0.9, grid):
                if not self.inside(m0, r0):
                    continue
                sol = optimize.root(lambda x: self.velocity(*x) / scale, [m0, r0], method="hybr")
                if sol.success and np.max(np.abs(self.velocity(*sol.x))) < 1e-9 * scale:
                    add(np.asarray(sol.x))
        self._fixed = sorted(found, key=lambda f: (f["m"], f["r"]))
        return self._fixed

    def outcome(self, m0: float, r0: float, budget: float) -> dict:
        """Integrate the flow from (m0, r0) for at most ``budget`` steps: ``"escapes"`` (m
        reaches the escape threshold; ``steps`` when), ``"trapped"`` (it ends within 1e-3 of a
        stable fixed point below the threshold, ``at``) or ``"budget"`` (neither)."""
        thr = self.threshold
        if m0 >= thr:
            return {"outcome": "escapes", "steps": 0.0, "end": [m0, r0]}

        def hit(t, x):
            return x[0] - thr

        hit.terminal, hit.direction = True, 1
        sinks = [f for f in self.fixed_points() if f["stable"] and f["m"] < thr]

        def sink(t, x):  # within 1e-4 of a stable fixed point below the threshold
            return min((np.hypot(*(x - f["x"])) for f in sinks), default=1.0) - 1e-4

        sink.terminal = True
        sol = integrate.solve_ivp(lambda t, x: self.velocity(*x), (0.0, float(budget)), [m0, r0], method="LSODA",
                                  events=[hit, sink], rtol=1e-8, atol=1e-12)
        x_end = sol.y[:, -1]
        if sol.t_events[0].size:
            return {"outcome": "escapes", "steps": float(sol.t_events[0][0]), "end": x_end.tolist()}
        for f in sinks:
            if np.hypot(*(x_end - f["x"])) < 1e-3:
                return {"outcome": "trapped", "steps": None, "end": x_end.tolist(), "at": [f["m"], f["r"]]}
        return {"outcome": "budget", "steps": None, "end": x_end.tolist()}


def scan(
    problem,
    student,
    training,
    *,
    strengths: Sequence[float],
    overlaps: Sequence[float],
    gamma: float,
    budget: float,
    second_order: bool = True,
    fixed_points: bool = False,
    fixed_grid: int = 7,
) -> list[dict]:
    """Classify settings (lambda, eta1) of ``problem``'s spiked law: for each, the outcome
    of the flow (:meth:`Flow.outcome`) from the random start (:func:`random_point`) and from the
    PCA start (:func:`pca_point` with n' = d / gamma), within ``budget`` steps; the fixed
    points with ``fixed_points`` (root finding from a ``fixed_grid`` x ``fixed_grid`` grid of starts).
    ``training`` fixes the step size (and the corrector's d)."""
    rows = []
    d = problem.d
    for lam in strengths:
        for e1 in overlaps:
            prob = dataclasses.replace(problem, data=Spiked(strength=float(lam), overlap=float(e1)))
            fl = Flow(prob, student, training, second_order=second_order)
            fl.fixed_points(grid=fixed_grid)
            rnd = fl.outcome(*random_point(d, float(e1)), budget)
            pm, pr = pca_point(prob.data, gamma)
            pca = fl.outcome(pm, pr, budget) if pr > 0 else {"outcome": "no warm start", "steps": None}
            row = {"strength": float(lam), "overlap": float(e1), "random": rnd["outcome"],
                   "random_steps": rnd["steps"], "pca": pca["outcome"], "pca_steps": pca["steps"],
                   "pca_m": pm, "pca_r": pr,
                   "trap": rnd["outcome"] != "escapes" and pca["outcome"] == "escapes"}
            if fixed_points:
                row["fixed_points"] = [{k: f[k] for k in ("m", "r", "stable")} for f in fl.fixed_points()]
            rows.append(row)
    return rows
