"""``SDE``: the diffusion limit of the search phase, the law of the escape time at any d.

For a single-index problem (one teacher direction, isotropic Gaussian inputs, label noise
allowed) and one student neuron trained by spherical online SGD, with the per-sample step
eta = delta d^{-k/2}, the rescaled overlap mu = m sqrt(d) and the time s = samples / d^{k-1}
(k: the information exponent of the pair target/student), the chain of m converges as
d -> infinity to the one-dimensional diffusion (derivation: docs/sde.md)

    d mu = [ delta' k A_k mu^{k-1} - (delta'^2 / 2) V0 mu ] ds + delta' sqrt(W0) dB,

with delta' = eta d^{k/2} / batch, A_k = s a0 c_k(sigma) c_k(g) (orthonormal Hermite
coefficients of the student's activation and the target's link, s a0 the output weight),
V0 = E[C^2] and W0 = E[C^2 nu^2] at m = 0 (C = d loss / d lambda per sample, lambda = w.x and
nu = w*.x independent there). The first drift term is the population gradient, the second
the renormalisation onto the sphere (the Ito correction of the spherical constraint), the
noise the fluctuation of the gradient's component along w*. None depends on d: the law of
the escape time s from mu0 to mu1 does, only through mu0 = sqrt(d) m0 and mu1 = sqrt(d) m1
(and for k >= 3 the dependence on mu1 vanishes as mu1 -> infinity: the drift blows up in
finite time). The same formula holds for k = 1, 2 with their step sizes eta = delta d^{-k/2};
for k = 2 the escape time grows like log mu1.

The paths are integrated with diffrax (``ShARK``, a strong order-1.5 solver for additive
noise, on a ``VirtualBrownianTree`` with space-time Levy area, adaptive steps with a PID
controller, vmapped over paths); escape is a diffrax event at |mu| >= mu1, censoring at the
horizon s_T = steps * batch / d^{k-1}. Step-size convergence is checked by solving the same
Brownian paths again with half the tolerances and half the largest step: the change of the
quartiles of the escape time, in units of their standard error, is ``info["sde"]
["dt_check"]``. Records hold M = mu / sqrt(d) (Q = 1) up to the escape and NaN after it: the
diffusion describes the search phase only.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from .._functions import gauss_hermite, hermite_coefficients
from ._driver import bucket
from .base import DeterministicEngine, Trajectory

__all__ = ["SDE", "sde_coefficients"]

_K_MAX = 8  # information exponents searched
_NODES = 120  # Gauss-Hermite nodes per axis for V0, W0 and the target's coefficients


def _check(model) -> None:
    """One-line errors for the models the diffusion limit does not cover."""
    from ..data import Isotropic

    pb, st, tr = model.problem, model.student, model.training
    if not isinstance(pb.data, Isotropic):
        raise ValueError(f"data: got {pb.data.name!r}; allowed on engine 'sde': isotropic Gaussian inputs")
    if pb.r != 1 or pb.function is not None:
        raise ValueError("target: got a multi-index or custom-function target; allowed on engine 'sde': "
                         "a single-index link (target.directions = 1)")
    if st.width != 1 or st.trained:
        raise ValueError(f"student.width: got {st.width} (second layer {st.second_layer}); allowed on engine "
                         "'sde': one neuron with a fixed second layer")
    if not tr.spherical:
        raise ValueError("train.spherical: got false; allowed on engine 'sde': true (the diffusion is the "
                         "limit of spherical SGD)")
    if not isinstance(tr.loss, str):
        raise ValueError("train.loss: got a custom function; allowed on engine 'sde': 'square' or 'correlation'")
    if tr.smoothing is not None or tr.lr_schedule is not None or tr.frozen:
        raise ValueError("train: smoothing, lr_schedule and frozen rows are not supported on engine 'sde'")
    if tr.init not in ("random", "random_positive") and not isinstance(tr.init, float):
        raise ValueError(f"train.init: got {tr.init!r}; allowed on engine 'sde': "
                         "'random', 'random_positive' or a number m0")


def _coefficients(model) -> dict:
    pb, st, tr = model.problem, model.student, model.training
    scale = st.scale * st.a0[0]
    cs = hermite_coefficients(st.activation, _K_MAX)
    z, w = gauss_hermite(_NODES)
    g = np.asarray(pb.label(jnp.asarray(z)[:, None]), np.float64)
    he_prev, he = np.zeros_like(z), np.ones_like(z)
    cg = np.zeros(_K_MAX + 1)
    for j in range(_K_MAX + 1):  # orthonormal Hermite h_j by their recurrence
        cg[j] = float(np.dot(w, g * he))
        he_prev, he = he, (z * he - math.sqrt(j) * he_prev) / math.sqrt(j + 1)
    k = next((j for j in range(1, _K_MAX + 1) if abs(cs[j] * cg[j]) > 1e-12), None)
    if k is None:
        raise ValueError(f"target.link: got a target and student with no common Hermite order 1..{_K_MAX}; "
                         "allowed on engine 'sde': a pair with a finite information exponent")
    lam = jnp.asarray(z)
    f = np.asarray(scale * st.activation(lam), np.float64)
    df = np.asarray(scale * st.activation.deriv(lam), np.float64)
    noise2 = pb.noise**2
    if tr.loss == "square":  # C = (f - y) f', y = g(nu) + noise xi
        c2 = (df**2)[:, None] * ((f[:, None] - g[None, :]) ** 2 + noise2)
    else:  # correlation: C = -y f'
        c2 = (df**2)[:, None] * (g[None, :] ** 2 + noise2)
    V0 = float(np.einsum("i,j,ij->", w, w, c2))
    W0 = float(np.einsum("i,j,ij->", w, w, c2 * (z**2)[None, :]))
    return {"k": k, "A_k": float(scale * cs[k] * cg[k]), "V0": V0, "W0": W0}


def sde_coefficients(model) -> dict:
    """The diffusion's coefficients for ``model``: the information exponent ``k``, ``A_k``
    (drift ``delta' k A_k mu^{k-1}``), ``V0`` (the sphere's correction ``-(delta'^2/2) V0 mu``)
    and ``W0`` (noise ``delta' sqrt(W0)``), with delta' = lr d^{k/2} / batch (see the module)."""
    _check(model)
    return _coefficients(model)


# time runs in units of the horizon, u = s / s_T in [0, 1]: the compiled solve does not depend
# on d, lr or the horizon (all traced), and the Brownian tree has a fixed depth
_TREE_TOL = 2.0**-12  # Brownian resolution: 2^-12 of the horizon (finer steps only occur near blow-up)


def _drift(u, mu, args):
    k, dl, A, V0 = args["k"], args["delta"], args["A"], args["V0"]
    return args["T"] * (dl * k * A * mu ** (k - 1.0) - 0.5 * dl * dl * V0 * mu)


def _diffusion(u, mu, args):
    return (jnp.sqrt(args["T"]) * args["delta"] * jnp.sqrt(args["W0"]) * jnp.ones_like(mu))[..., None]


@dataclass(frozen=True)
class SDE(DeterministicEngine):
    """The diffusion limit of the search phase (see the module docstring); one path per seed.

    ``rtol``/``atol``: the PID controller's tolerances; ``dtmax``: the largest step in units of
    the noise time 1 / (delta'^2 W0); ``check_dt``: solve again with both halved and report the
    change of the escape-time quartiles (``info["sde"]["dt_check"]``); ``max_steps``: per path."""

    rtol: float = 1e-2
    atol: float = 1e-2
    dtmax: float = 0.1
    check_dt: bool = True
    max_steps: int = 200_000
    name: str = "sde"
    paths = True  # runs one path per seed (api.run passes seeds and seed)

    def __post_init__(self) -> None:
        for f in ("rtol", "atol", "dtmax"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int | float) or not v > 0:
                raise ValueError(f"sde.{f}: got {v!r}; allowed: a positive number")
        if not isinstance(self.check_dt, bool):
            raise ValueError(f"sde.check_dt: got {self.check_dt!r}; allowed: true or false")

    def check(self, model) -> None:
        super().check(model)
        _check(model)

    def _mu0(self, model, key, n: int) -> np.ndarray:
        """Starting mu = sqrt(d) m0 per path: the law of a uniformly random unit vector's first
        coordinate (m0 = z1 / |z|, z ~ N(0, I_d); exact at every d) or the warm m0."""
        from .._wishart import chi2

        tr, d = model.training, model.problem.d
        if not isinstance(tr.init, str):
            return np.full(n, math.sqrt(d) * float(tr.init))
        k1, k2 = jax.random.split(key)
        z1 = np.asarray(jax.random.normal(k1, (n,), jnp.float64))
        rest = np.asarray(chi2(k2, float(d - 1), (n,))) if d > 1 else np.zeros(n)
        mu = math.sqrt(d) * z1 / np.sqrt(z1 * z1 + rest)
        return np.abs(mu) if tr.init == "random_positive" else mu

    def solve(self, model, record=None, progress=None, *, seeds: int = 1, seed: int = 0) -> Trajectory:
        from ..model import Record

        tr, pb = model.training, model.problem
        record = Record.of(tr) if record is None else record
        c = sde_coefficients(model)
        d, k = float(pb.d), c["k"]
        delta = tr.lr * d ** (k / 2.0) / tr.batch
        per_s = d ** (k - 1) / tr.batch  # steps per unit of s
        s_T = tr.steps / per_s
        mu1 = math.sqrt(d) * record.escape_threshold
        n_full, rem = divmod(tr.steps, record.every)
        steps = np.arange(n_full + 1, dtype=np.float64) * record.every
        if rem:
            steps = np.append(steps, float(tr.steps))
        key = jax.random.key(seed)
        k_start, k_paths = jax.random.split(key)
        mu0 = self._mu0(model, k_start, seeds)
        # path i's Brownian motion is fold_in(key, i): independent of the number of paths, which
        # is padded to a bucket so that nearby counts share one compilation
        n_pad = bucket(seeds)
        keys = jax.vmap(lambda i: jax.random.fold_in(k_paths, i))(jnp.arange(n_pad))
        mu0_pad = np.concatenate([mu0, np.zeros(n_pad - seeds)])
        tau = 1.0 / (delta * delta * c["W0"]) if c["W0"] > 0 else s_T  # the noise's time scale
        args = {"k": float(k), "delta": delta, "A": c["A_k"], "V0": c["V0"], "W0": c["W0"], "mu1": mu1,
                "T": s_T, "dtmax": min(1.0, self.dtmax * tau / s_T)}
        us = np.ones(bucket(len(steps)))  # the record grid, padded with the horizon (bucketed)
        us[: len(steps)] = steps / steps[-1]
        us = jnp.asarray(us)

        def paths(scale):
            a = {k_: jnp.asarray(v, jnp.float64) for k_, v in args.items()} | {
                "dtmax": jnp.asarray(args["dtmax"] * scale, jnp.float64)}
            e, rec, n = _solve_paths(keys, jnp.asarray(mu0_pad), a, us, jnp.asarray(self.rtol * scale),
                                     jnp.asarray(self.atol * scale), self.max_steps)
            return np.asarray(e)[:seeds] * s_T, np.asarray(rec)[:seeds, : len(steps)], np.asarray(n)[:seeds]

        esc_s, mu_rec, n_steps = paths(1.0)
        info = {"k": k, "delta": delta, "A_k": c["A_k"], "V0": c["V0"], "W0": c["W0"], "mu1": mu1,
                "s_horizon": s_T, "steps_per_s": per_s, "solver_steps_max": int(np.max(n_steps))}
        if self.check_dt:
            info["dt_check"] = _quartile_change(esc_s, paths(0.5)[0])
        escaped = np.isfinite(esc_s)
        escape_step = np.where(escaped, np.ceil(np.maximum(esc_s * per_s - 1e-9, 0.0)), -1.0)
        M = mu_rec / math.sqrt(d)
        M = np.where(steps[None, :] > np.where(escape_step >= 0, escape_step, np.inf)[:, None], np.nan, M)
        M[:, 0] = mu0 / math.sqrt(d)
        S, R = seeds, len(steps)
        if progress is not None:
            progress(tr.steps)
        return Trajectory(
            steps=steps.astype(np.int64) if steps[-1] < 2**62 else steps,
            M=M.reshape(S, R, 1, 1),
            Q=np.ones((S, R, 1, 1)),
            a=np.broadcast_to(np.asarray(model.student.a0, np.float64), (S, R, 1)).copy(),
            escape_step=escape_step,
            diverged_step=np.full(S, -1, dtype=np.int64),
            info={"sde": info, "escape_s": np.where(escaped, esc_s, np.nan).tolist()},
        )


def _quartile_change(a: np.ndarray, b: np.ndarray) -> dict:
    """Largest change of the quartiles of the escape time between two solves of the same
    paths, in units of the quartile's standard error (from the order statistics)."""
    n = len(a)
    out = {}
    for q in (0.25, 0.5, 0.75):
        qa = np.quantile(np.where(np.isfinite(a), a, np.inf), q, method="inverted_cdf")
        qb = np.quantile(np.where(np.isfinite(b), b, np.inf), q, method="inverted_cdf")
        # standard error of a sample quantile: the spread of the order statistics n q +- sqrt(n q (1-q))
        h = math.sqrt(n * q * (1 - q))
        fa = np.sort(np.where(np.isfinite(a), a, np.inf))
        lo, hi = fa[max(0, int(n * q - h))], fa[min(n - 1, int(n * q + h))]
        se = 0.5 * (hi - lo)
        out[f"q{int(q * 100)}"] = {"value": float(qa), "halved": float(qb),
                                   "change_in_se": float(abs(qa - qb) / se) if np.isfinite(se) and se > 0 else None}
    changes = [v["change_in_se"] for v in out.values() if v["change_in_se"] is not None]
    out["max_change_in_se"] = max(changes) if changes else None
    out["converged"] = bool(changes) and max(changes) < 1.0
    return out


@functools.partial(jax.jit, static_argnames=("max_steps",))
def _solve_paths(keys, mu0, args, us, rtol, atol, max_steps: int):
    """Escape time in units of the horizon (inf: none by u = 1), mu at the record times ``us``
    and the solver's step count, per path. ``args["dtmax"]``: the largest step (units of u)."""

    def one(key, m0):
        bm = diffrax.VirtualBrownianTree(0.0, 1.0, tol=_TREE_TOL, shape=(1,), key=key,
                                         levy_area=diffrax.SpaceTimeLevyArea)
        terms = diffrax.MultiTerm(diffrax.ODETerm(_drift), diffrax.ControlTerm(_diffusion, bm))
        event = diffrax.Event(lambda t, y, args, **kw: jnp.abs(y[0]) >= args["mu1"])
        sol = diffrax.diffeqsolve(
            terms, diffrax.ShARK(), 0.0, 1.0, args["dtmax"] / 10, jnp.reshape(m0, (1,)), args=args,
            saveat=diffrax.SaveAt(ts=us, t1=True),
            stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol, dtmax=args["dtmax"]),
            event=event, max_steps=max_steps, throw=False,
        )
        # saved: the record times before the event, then the event time (the t1 entry), then inf
        hit = sol.event_mask if sol.event_mask is not None else jnp.asarray(False)
        t_end = jnp.max(jnp.where(jnp.isfinite(sol.ts), sol.ts, -jnp.inf))
        esc = jnp.where(jnp.abs(m0) >= args["mu1"], 0.0, jnp.where(hit, t_end, jnp.inf))
        rec = jnp.where(sol.ts[:-1] == us, sol.ys[:-1, 0], jnp.nan)
        return esc, rec, sol.stats["num_steps"]

    return jax.vmap(one)(keys, mu0)
