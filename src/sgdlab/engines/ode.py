"""``ODE``: the deterministic evolution of the order parameters, in continuous step time.

The state is (Q, M, a); its vector field is the model's expected increment of the exact
chain per SGD step (``model.ode_field``: ``sgdlab._drift`` for Gaussian data laws, one
row per sample; sequence models with one student row supply their own). This engine only
integrates it: adaptive (diffrax, Tsit5, PID control) in the step count k, so 10^12-step
horizons cost what 10^3 do. How the expectations are taken is ``info["expectations"]``
(``ODE(expectations=...)``: ``"auto"``, ``"decomposed"`` integrals over at most four fields,
``"tensor"``, ``"monte_carlo"``; ``sgdlab._drift.drift``), and the accuracy of the rule is
stated in ``info["quadrature_error"]`` (the largest change of the initial velocity against a
rule with 3/4 of the nodes, or another Monte Carlo seed; 0 when the rule is exact for a
polynomial integrand); ``info["solver"]`` counts the solver's accepted and rejected steps.
Schedules that declare where they jump (``sgdlab.data.schedule_jumps``: a curriculum's
switch) make the solver step to those times exactly. Escape is a
diffrax event on max_j |M_j0| / sqrt(Q_jj) - threshold, located by root finding; the
reported escape step is the first integer step after the crossing. A state that stops
being finite or whose squared row norm passes MAX_NORM2 is a divergence event.

Start: ``model.init.order_parameters`` (``sgdlab.init``): ``m0`` gives
Q = k m0^2 + (1 - k m0^2) I, M = m0 on the k teacher directions; ``"random"`` the typical
start of a uniformly random unit row, Q = I and M = d^{-1/2} (positive); a Gram state or an
earlier result its (mean) state.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx

from ..data import schedule_jumps
from ._driver import MAX_NORM2, bucket
from .base import DeterministicEngine, Trajectory

__all__ = ["ODE", "initial_order_parameters"]


def initial_order_parameters(model) -> tuple[np.ndarray, np.ndarray]:
    """The ODE's start (Q, M): ``model.init.order_parameters(model)``."""
    Q, M = model.init.order_parameters(model)
    return np.asarray(Q, np.float64), np.asarray(M, np.float64)


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


def _stats(sol) -> dict:
    """The solver's accepted and rejected steps."""
    st = sol.stats
    return {"accepted_steps": int(st["num_accepted_steps"]), "rejected_steps": int(st["num_rejected_steps"])}


def _escape_stat(y):
    """max_j |M_j0| / sqrt(Q_jj)."""
    return jnp.max(jnp.abs(y["M"][:, 0]) / jnp.sqrt(jnp.diag(y["Q"])))


@dataclass(frozen=True)
class ODE(DeterministicEngine):
    """Deterministic limit of the order parameters, with the finite-d lr^2 term by default."""

    second_order: bool = True
    rtol: float = 1e-8
    atol: float = 1e-10
    nodes: int | None = None
    max_steps: int = 50_000
    expectations: str = "auto"
    name: str = "ode"

    def __post_init__(self) -> None:
        if not isinstance(self.second_order, bool):
            raise ValueError(f"ode.second_order: got {self.second_order!r}; allowed: true or false")
        for f in ("rtol", "atol"):
            v = getattr(self, f)
            if not (isinstance(v, int | float) and v > 0):
                raise ValueError(f"ode.{f}: got {v!r}; allowed: a positive number")
        from .._drift import EXPECTATIONS

        if self.expectations not in EXPECTATIONS:
            raise ValueError(f"ode.expectations: got {self.expectations!r}; allowed: {', '.join(EXPECTATIONS)}")

    # ---------------------------------------------------------------- velocity
    @functools.lru_cache(maxsize=64)  # noqa: B019 (frozen, hashable engine; one field per model)
    def _field(self, model, nodes: int | None = None):
        # "auto" is every model's default; only models with a choice take the keyword
        extra = {} if self.expectations == "auto" else {"expectations": self.expectations}
        return model.ode_field(self.second_order, nodes or self.nodes, **extra)

    def velocity(self, model, nodes: int | None = None):
        """The vector field (k, state) -> d state / d k, with state = {Q, M, a}, and its nodes."""
        field, n, _ = self._field(model, nodes)
        return field, n

    # ---------------------------------------------------------------- solve
    def solve(self, model, record=None, progress=None) -> Trajectory:
        from ..model import Record

        tr = model.training
        record = Record.of(tr) if record is None else record
        p, r = model.p, model.a
        Q0, M0 = initial_order_parameters(model)
        a_start = model.init.second_layer(model, model.init.per_seed(model, 1))
        a_start = model.student.a0 if a_start is None else np.asarray(a_start).reshape(-1, p).mean(axis=0)
        y0 = {"Q": jnp.asarray(Q0), "M": jnp.asarray(M0), "a": jnp.asarray(a_start, jnp.float64)}
        # the field and the solver are built for the model's structure: the step sizes, d and
        # the label noise are traced arguments, so runs differing only in them (or in the
        # horizon, recording, threshold or start) share one compilation
        structure = model.structure(d=True)
        hyper = {k_: jnp.asarray(v, jnp.float64) for k_, v in model.traced_numbers().items()}
        field, nodes, exact = self._field(structure)
        err = 0.0 if exact else self._quadrature_error(structure, field, nodes, y0, hyper)
        T = float(tr.steps)
        n_full, rem = divmod(tr.steps, record.every)
        ts = np.arange(n_full + 1, dtype=np.float64) * record.every
        if rem:
            ts = np.append(ts, T)
        thr = record.escape_threshold
        term, event = self._terms(structure)
        solver = diffrax.Tsit5()
        ctrl = diffrax.PIDController(rtol=self.rtol, atol=self.atol)
        # declared discontinuities of the data law's and the step size's schedules: the solver
        # steps to them exactly (a jump found by rejected steps costs dozens of tiny ones)
        jumps = [j for j in schedule_jumps(model.data, tr) if 0.0 < j < T]
        if jumps:
            ctrl = diffrax.ClipStepSizeController(ctrl, jump_ts=jnp.asarray(jumps, jnp.float64))

        def integrate(t0, y_start, save_ts, with_event):
            # one compiled solve: without an event the threshold is +inf and never crossed;
            # the save grid is padded to a fixed length with T
            pad = np.full(bucket(len(ts)), T)  # bucketed: nearby record counts share a compilation
            pad[: len(save_ts)] = save_ts
            return diffrax.diffeqsolve(
                term, solver, jnp.asarray(t0, jnp.float64), jnp.asarray(T, jnp.float64), None, y_start,
                args={"thr": jnp.asarray(thr if with_event else jnp.inf, jnp.float64), **hyper},
                saveat=diffrax.SaveAt(ts=jnp.asarray(pad), t1=True),
                stepsize_controller=ctrl, event=event,
                max_steps=self.max_steps, throw=False,
            )

        escape, diverged = -1, -1
        with_event = float(_escape_stat(y0)) < thr
        if not with_event:
            escape = 0
        sol = integrate(0.0, y0, ts, with_event)
        solver_stats = _stats(sol)
        ys = {k_: np.array(v)[: len(ts)] for k_, v in sol.ys.items()}  # numpy: no op compiled per length
        kind, t_stop = _outcome(sol)
        if kind == "escape":
            escape = int(math.ceil(t_stop - 1e-9))
            later = ts >= t_stop
            if later.any():
                # saved: the ts before the event, then the state at the event, then inf
                y_at = {k_: jnp.asarray(np.asarray(v)[int(np.sum(~later))]) for k_, v in sol.ys.items()}
                sol2 = integrate(t_stop, y_at, ts[later], False)
                more = _stats(sol2)
                solver_stats = {k_: v + more[k_] for k_, v in solver_stats.items()}
                for k_ in ys:
                    ys[k_][later] = np.asarray(sol2.ys[k_])[: int(later.sum())]
                kind, t_stop = _outcome(sol2)
        if kind in ("diverged", "failed"):
            # diverged: some Q_jj passed MAX_NORM2 (or stopped being finite) at t_stop;
            # failed: the solver gave up there (step-size collapse or max_steps)
            diverged = int(math.ceil(t_stop - 1e-9))
            for k_ in ys:
                ys[k_][ts >= t_stop] = np.nan
        if progress is not None:
            progress(tr.steps)
        return Trajectory(
            steps=ts.astype(np.int64),
            M=ys["M"][None].reshape(1, len(ts), p, r),
            Q=ys["Q"][None].reshape(1, len(ts), p, p),
            a=ys["a"][None].reshape(1, len(ts), p),
            escape_step=np.array([escape], dtype=np.int64),
            diverged_step=np.array([diverged], dtype=np.int64),
            info={"quadrature_nodes": int(nodes), "quadrature_error": err, "second_order": self.second_order,
                  "expectations": getattr(field, "expectations", None),
                  "solver": {**solver_stats, "jumps": len(jumps)}},
        )

    @functools.lru_cache(maxsize=64)  # noqa: B019
    def _terms(self, model):
        """The ODE term and the escape event, built once per model (so solves reuse compilations)."""
        field, _ = self.velocity(model)
        event = diffrax.Event(
            [lambda t, y, args, **kw: _escape_stat(y) - args["thr"], lambda t, y, args, **kw: _runaway(y)],
            root_finder=optx.Newton(rtol=1e-10, atol=1e-10),
        )
        return diffrax.ODETerm(field), event

    @functools.lru_cache(maxsize=64)  # noqa: B019
    def _both_velocities(self, model, field, nodes):
        """The initial velocity with the run's rule and with 3/4 of its nodes, as ONE compiled
        program (evaluated op by op, the two fields compiled some 300 small programs: over
        a minute on 2 cores, more than the solve)."""
        coarse, _ = self.velocity(model, nodes=max(2, int(nodes * 0.75)))
        return jax.jit(lambda y, h: (field(0.0, y, h), coarse(0.0, y, h)))

    def _quadrature_error(self, model, field, nodes, y0, hyper=None) -> float:
        """Largest change of the initial velocity against a rule with fewer nodes (relative)."""
        v1, v2 = self._both_velocities(model, field, nodes)(y0, hyper)
        scale = max(float(jnp.max(jnp.abs(v1["M"]))), float(jnp.max(jnp.abs(v1["Q"]))), 1e-300)
        diff = max(float(jnp.max(jnp.abs(v1[k] - v2[k]))) for k in v1)
        return diff / scale
