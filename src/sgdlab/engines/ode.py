"""``ODE``: the deterministic evolution of the order parameters, in continuous step time.

The state is (Q, M, a). Its velocity per SGD step is the *expected increment* of the exact
chain (EXACT_CHAIN.md) at the current Gram matrix G. With c(z) = -d loss/d lambda of one
sample, fields z = L y (G = L L^T, y ~ N(0, I_P), P = p + r), batch size n and D the
spherical correction (D_j = sum_b c_bj lambda_bj / (n Q_jj)):

    E[dM] = lr E[c nu^T] - lr E[D] M
    E[dQ] = lr (E[lambda c^T] + E[c lambda^T]) - lr (E[D] Q + Q E[D]) + lr^2 E[D Q D]
            - lr^2 (E[D Lam^T C] + transpose) + lr^2 E[C^T X X^T C]
    E[C^T X X^T C] = (1/n) E[c c^T (|y|^2 + d - P)] + (1 - 1/n) E[c y^T] E[y c^T]
    E[da] = -lr_a E[d loss / d a]

(the D terms only for spherical SGD; the batch products are expanded exactly, which gives
the d/n_b noise factor and the (1 - 1/n_b) weight of the squared mean gradient).
Renormalised geometries (spherical, projected) keep Q_jj = 1 by the first-order
normalisation M_ij -> M_ij - dQ_ii M_ij / 2, Q_ij -> Q_ij - (dQ_ii + dQ_jj) Q_ij / 2.
``second_order=False`` drops every lr^2 term: the d -> infinity limit at fixed lr d.

Expectations use one tensor-product Gauss–Hermite rule over y (and the label noise):
exact when activation, target and loss are polynomials (the node count is chosen from
the degrees), otherwise up to 40 nodes per axis within ODE_POINTS = 20,000 points (27
per axis in three dimensions, 11 in four, 7 in five; ``ODE(nodes=...)`` overrides); the
accuracy is stated in ``info["quadrature_error"]`` (the largest change of the initial
velocity against a rule with fewer nodes). Integration is adaptive (diffrax, Tsit5,
PID control) in the step count k, so 10^12-step horizons cost what 10^3 do. Escape is a
diffrax event on max_j |M_j0| / sqrt(Q_jj) - threshold, located by root finding;
the reported escape step is the first integer step after the crossing.

Smoothed loss (``model.needs_norm``): c also depends on the sample's |x|^2 = |y|^2 + chi,
chi ~ chi^2(d - P) independent of y; every expectation gets one more axis, a generalised
Gauss–Laguerre rule for chi (exact for polynomials in |x|^2, see ``_chi2_nodes``), and the
noise term is E[c c^T |x|^2] with that same |x|^2 instead of E[c c^T (|y|^2 + d - P)].

Sequence models (``model.tokens``) with one student row (tied network, attention layer)
take their field from ``ode_sequence.py`` (same state, the tokens' sums and positional
shifts); the position-specific network is refused (chain or full engine).

Start: ``init = m0`` gives Q = r m0^2 + (1 - r m0^2) I, M = m0; ``init = "random"`` the
typical start of a uniformly random unit row, Q = I and M = d^{-1/2} (positive).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx

from .._kernels import _tensor_rule
from ..model import Model
from ..risk import quadrature_nodes
from ..smoothing import DEFAULT_CHI2_NODES, chi2_rule, loss_degree_in_s
from ._driver import MAX_NORM2

__all__ = ["ODE", "initial_order_parameters"]


def _poly_degree(model: Model) -> int | None:
    """Degree of c(z) in the fields, when everything is polynomial (else None)."""
    if hasattr(model, "tokens"):  # sequence models: no degree bookkeeping (softmax, shifts)
        return None
    stu, prob, tr = model.student, model.problem, model.training
    ds = stu.activation.degree
    dg = prob.link.degree if prob.is_committee else None
    if ds is None or dg is None or tr.loss not in ("square", "correlation"):
        return None
    dy = max(dg, 1 if prob.noise > 0 else 0)
    return (max(ds, dy) if tr.loss == "square" else dy) + max(ds - 1, 0)


def _chi2_nodes(model: Model) -> int:
    """Gauss–Laguerre nodes for |x|^2 - |y|^2 ~ chi^2(d - P) (smoothed loss).

    For a polynomial loss of degree D in the smoothed field, c is a polynomial of degree
    floor(D / 2) in |x|^2, so E[c c^T |x|^2] has degree 2 floor(D / 2) + 1: floor(D / 2) + 1
    nodes are exact. Otherwise DEFAULT_CHI2_NODES.
    """
    deg = loss_degree_in_s(model.student.activation.degree, model.training.loss)
    if deg is None or not (model.problem.is_committee and model.problem.link.degree is not None):
        return DEFAULT_CHI2_NODES
    return deg // 2 + 1


def initial_order_parameters(model: Model) -> tuple[np.ndarray, np.ndarray]:
    p, r, d = model.p, model.r, model.problem.d
    init = model.training.init
    m0 = 1.0 / math.sqrt(d) if isinstance(init, str) else float(init)
    Q = np.full((p, p), r * m0**2) + (1.0 - r * m0**2) * np.eye(p) if not isinstance(init, str) else np.eye(p)
    return Q, np.full((p, r), m0)


def _geometry(tr, Q, M, dQ, dM, A1, moments, n, lr, lr2):
    """Add the spherical (tangent projection) and renormalisation terms to (dQ, dM).

    ``A1`` = E[lambda c^T] (p, p) per sample; ``moments()`` returns (E[cl cl^T],
    E[cl_i lambda_i c_j]) with cl_j = c_j lambda_j (p-vectors per sample; for a sequence
    sample both are E[cl^2] with cl = sum_l c_l lambda_l); they are only evaluated for
    spherical SGD. D_j = sum_b cl_bj / (n Q_jj) over a batch of n samples.
    """
    if tr.spherical:
        Ecl2, Eclc = moments()
        qd = jnp.diag(Q)
        ED = jnp.diag(A1) / qd
        EDD = (Ecl2 / n) / (qd[:, None] * qd[None, :])
        EDD = EDD + (1.0 - 1.0 / n) * ED[:, None] * ED[None, :]
        EDLC = Eclc / (n * qd[:, None])
        EDLC = EDLC + (1.0 - 1.0 / n) * ED[:, None] * A1
        dQ = dQ - lr * (ED[:, None] + ED[None, :]) * Q + lr2 * (Q * EDD - EDLC - EDLC.T)
        dM = dM - lr * ED[:, None] * M
    if tr.renormalise:
        dd = jnp.diag(dQ)
        dM = dM - 0.5 * dd[:, None] * M
        dQ = dQ - 0.5 * (dd[:, None] + dd[None, :]) * Q
    return dQ, dM


ODE_POINTS = 20_000  # default tensor-rule budget of the velocity (evaluated at every solver stage)


def _runaway(y):
    """Divergence: a squared row norm beyond MAX_NORM2, or a state that is not finite."""
    qd = jnp.diag(y["Q"])
    finite = jnp.all(jnp.isfinite(y["Q"])) & jnp.all(jnp.isfinite(y["M"])) & jnp.all(jnp.isfinite(y["a"]))
    return ~finite | jnp.any(qd > MAX_NORM2)


def _outcome(sol) -> tuple[str, float]:
    """How a solve ended: ("done" | "escape" | "diverged" | "failed", time reached)."""
    finite_ts = np.asarray(sol.ts)[np.isfinite(np.asarray(sol.ts))]
    t_stop = float(finite_ts.max()) if finite_ts.size else 0.0
    if sol.event_mask is not None:
        esc, run = (bool(m) for m in sol.event_mask)
        if run:
            return "diverged", t_stop
        if esc:
            return "escape", t_stop
    if not diffrax.is_successful(sol.result):
        return "failed", t_stop
    return "done", t_stop


def _escape_stat(y):
    """max_j |M_j0| / sqrt(Q_jj)."""
    return jnp.max(jnp.abs(y["M"][:, 0]) / jnp.sqrt(jnp.diag(y["Q"])))


@dataclass(frozen=True)
class ODE:
    """Deterministic limit of the order parameters, with the finite-d lr^2 term by default."""

    second_order: bool = True
    rtol: float = 1e-8
    atol: float = 1e-10
    nodes: int | None = None
    max_steps: int = 50_000
    name: str = "ode"

    def __post_init__(self) -> None:
        if not isinstance(self.second_order, bool):
            raise ValueError(f"ode.second_order: got {self.second_order!r}; allowed: true or false")
        for f in ("rtol", "atol"):
            v = getattr(self, f)
            if not (isinstance(v, int | float) and v > 0):
                raise ValueError(f"ode.{f}: got {v!r}; allowed: a positive number")

    # ---------------------------------------------------------------- velocity
    @functools.lru_cache(maxsize=64)  # noqa: B019 (frozen, hashable engine; one field per model)
    def velocity(self, model: Model, nodes: int | None = None):
        """The vector field (k, state) -> d state / d k, with state = {Q, M, a}."""
        if hasattr(model, "tokens"):  # sequence models (one student row): ode_sequence.py
            from .ode_sequence import sequence_velocity

            return sequence_velocity(model, second_order=self.second_order, nodes=nodes or self.nodes)
        p, r, d = model.p, model.r, model.problem.d
        tr, stu = model.training, model.student
        n, lr, lr_a = tr.batch, tr.lr, tr.eta_a
        P = p + r
        noisy = model.problem.noise > 0
        k = P + (1 if noisy else 0)
        if nodes is None:
            deg = _poly_degree(model)
            nodes = self.nodes or (deg + 2 if deg is not None else quadrature_nodes(k, budget=ODE_POINTS))
        pts, wts = _tensor_rule(int(nodes), k)
        norm = model.needs_norm
        if norm:
            # |x|^2 = |y|^2 + chi^2(d - P), chi^2 independent of y: one more quadrature axis
            cx, cw = chi2_rule(float(d - P), _chi2_nodes(model))
            pts = np.concatenate([np.repeat(pts, len(cx), axis=0), np.tile(cx, len(wts))[:, None]], axis=1)
            wts = np.outer(wts, cw).reshape(-1)
        Y = jnp.asarray(pts[:, :P])
        XI = jnp.asarray(pts[:, P]) if noisy else jnp.zeros(len(pts))
        w = jnp.asarray(wts)
        y2 = jnp.sum(Y * Y, axis=1)
        X2 = y2 + jnp.asarray(pts[:, -1]) if norm else None
        lr2 = lr**2 if self.second_order else 0.0
        eye_r = jnp.eye(r)

        def field(t, s, args):
            Q, M, a = s["Q"], s["M"], s["a"]
            G = jnp.block([[Q, M], [M.T, eye_r]])
            ev, V = jnp.linalg.eigh(G)
            L = V * jnp.sqrt(jnp.maximum(ev, 0.0))
            Z = Y @ L.T
            if norm:
                c, ga = jax.vmap(model.sample_grads, in_axes=(0, None, 0, 0))(Z, a, XI, X2)
            else:
                c, ga = jax.vmap(model.sample_grads, in_axes=(0, None, 0))(Z, a, XI)
            lam, nu = Z[:, :p], Z[:, p:]
            E = lambda x: jnp.tensordot(w, x, axes=(0, 0))  # noqa: E731
            A1 = E(lam[:, :, None] * c[:, None, :])  # E[lambda c^T]
            B1 = E(c[:, :, None] * nu[:, None, :])  # E[c nu^T]
            if norm:  # E[c c^T |x|^2] with the very |x|^2 that c depends on
                Ecc = E(c[:, :, None] * c[:, None, :] * X2[:, None, None])
            else:
                Ecc = E(c[:, :, None] * c[:, None, :] * (y2 + d - P)[:, None, None])
            g = E(c[:, :, None] * Y[:, None, :])  # E[c y^T]
            XX = Ecc / n + (1.0 - 1.0 / n) * g @ g.T
            dQ = lr * (A1 + A1.T) + lr2 * XX
            dM = lr * B1

            def moments():
                cl = c * lam  # (N, p)
                return E(cl[:, :, None] * cl[:, None, :]), E((cl * lam)[:, :, None] * c[:, None, :])

            dQ, dM = _geometry(tr, Q, M, dQ, dM, A1, moments, n, lr, lr2)
            da = -lr_a * E(ga) if stu.trained else jnp.zeros_like(a)
            return {"Q": 0.5 * (dQ + dQ.T), "M": dM, "a": da}

        return field, nodes

    # ---------------------------------------------------------------- solve
    def solve(self, model: Model, progress=None) -> dict[str, Any]:
        tr = model.training
        p, r = model.p, model.r
        if hasattr(model, "tokens"):
            from .ode_sequence import check_sequence_model

            check_sequence_model(model)
        Q0, M0 = initial_order_parameters(model)
        y0 = {"Q": jnp.asarray(Q0), "M": jnp.asarray(M0), "a": jnp.asarray(model.student.a0, jnp.float64)}
        field, nodes = self.velocity(model)
        err = self._quadrature_error(model, field, nodes, y0)
        T = float(tr.steps)
        n_full, rem = divmod(tr.steps, tr.record_every)
        ts = np.arange(n_full + 1, dtype=np.float64) * tr.record_every
        if rem:
            ts = np.append(ts, T)
        thr = tr.escape_threshold
        term, event = self._terms(model)
        solver = diffrax.Tsit5()
        ctrl = diffrax.PIDController(rtol=self.rtol, atol=self.atol)

        def integrate(t0, y_start, save_ts, with_event):
            # one compiled solve: without an event the threshold is +inf and never crossed;
            # the save grid is padded to a fixed length with T
            pad = np.full(len(ts), T)
            pad[: len(save_ts)] = save_ts
            return diffrax.diffeqsolve(
                term, solver, jnp.asarray(t0, jnp.float64), T, None, y_start,
                args=jnp.asarray(thr if with_event else jnp.inf, jnp.float64),
                saveat=diffrax.SaveAt(ts=jnp.asarray(pad), t1=True),
                stepsize_controller=ctrl, event=event,
                max_steps=self.max_steps, throw=False,
            )

        escape, diverged = -1, -1
        with_event = float(_escape_stat(y0)) < thr
        if not with_event:
            escape = 0
        sol = integrate(0.0, y0, ts, with_event)
        ys = {k_: np.array(v[: len(ts)]) for k_, v in sol.ys.items()}
        kind, t_stop = _outcome(sol)
        if kind == "escape":
            escape = int(math.ceil(t_stop - 1e-9))
            later = ts >= t_stop
            if later.any():
                # saved: the ts before the event, then the state at the event, then inf
                y_at = {k_: v[int(np.sum(~later))] for k_, v in sol.ys.items()}
                sol2 = integrate(t_stop, y_at, ts[later], False)
                for k_ in ys:
                    ys[k_][later] = np.asarray(sol2.ys[k_][: int(later.sum())])
                kind, t_stop = _outcome(sol2)
        if kind in ("diverged", "failed"):
            # diverged: some Q_jj passed MAX_NORM2 (or stopped being finite) at t_stop;
            # failed: the solver gave up there (step-size collapse or max_steps)
            diverged = int(math.ceil(t_stop - 1e-9))
            for k_ in ys:
                ys[k_][ts >= t_stop] = np.nan
        if progress is not None:
            progress(tr.steps)
        return {
            "steps": ts.astype(np.int64),
            "M": ys["M"][None].reshape(1, len(ts), p, r),
            "Q": ys["Q"][None].reshape(1, len(ts), p, p),
            "a": ys["a"][None].reshape(1, len(ts), p),
            "escape_step": np.array([escape], dtype=np.int64),
            "diverged_step": np.array([diverged], dtype=np.int64),
            "info": {"quadrature_nodes": int(nodes), "quadrature_error": err, "second_order": self.second_order},
        }

    @functools.lru_cache(maxsize=64)  # noqa: B019
    def _terms(self, model: Model):
        """The ODE term and the escape event, built once per model (so solves reuse compilations)."""
        field, _ = self.velocity(model)
        event = diffrax.Event(
            [lambda t, y, args, **kw: _escape_stat(y) - args, lambda t, y, args, **kw: _runaway(y)],
            root_finder=optx.Newton(rtol=1e-10, atol=1e-10),
        )
        return diffrax.ODETerm(field), event

    def _quadrature_error(self, model, field, nodes, y0) -> float:
        """Largest change of the initial velocity against a rule with fewer nodes (relative)."""
        if _poly_degree(model) is not None and self.nodes is None:
            return 0.0  # exact for polynomial integrands
        coarse, _ = self.velocity(model, nodes=max(2, int(nodes * 0.75)))
        v1 = field(0.0, y0, None)
        v2 = coarse(0.0, y0, None)
        scale = max(float(jnp.max(jnp.abs(v1["M"]))), float(jnp.max(jnp.abs(v1["Q"]))), 1e-300)
        diff = max(float(jnp.max(jnp.abs(v1[k] - v2[k]))) for k in v1)
        return diff / scale
