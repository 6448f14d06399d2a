r"""``sgdlab reproduce batch-size``: batch size against time complexity, and the correlation loss
(Arnaboldi, Dandi, Krzakala, Loureiro, Pesce, Stephan 2024).

One-pass minibatch SGD with batch :math:`n_b` and step :math:`\gamma` on the batch-mean loss,
projected geometry (step, then renormalise the row: ``Training(projected=True)``), target
:math:`y = h_l(w^*\cdot x)` learnt by the matched student :math:`h_l(w\cdot x)`, information exponent
:math:`l`. Four parts:

(a) **Iterations to weak recovery against the batch** at fixed :math:`d`. Step on the optimal
    line :math:`\gamma = \delta\, n_b\, d^{-e_l}` with :math:`e_l = 1` (:math:`l \le 2`) or
    :math:`l/2` (:math:`l \ge 3`): the per-sample step of BAGJ, so the samples to weak recovery
    stay :math:`N_l` (= :math:`d`, :math:`d \log d`, :math:`d^{l-1}`) and the iterations fall as
    :math:`T \approx N_l / n_b` (slope -1 in log-log). :math:`\delta` is half the critical
    :math:`\delta_c` of the *square* loss (:func:`sgdlab.theory.critical_delta`; 0.5 for
    :math:`l = 1`) and is used for both losses.

    *The square-loss cap.* At :math:`m \approx 0` the population gradient of the square loss has a
    radial part :math:`-a\,w` with :math:`a = E[z\,\sigma(z)\sigma'(z)]` (the auto-correlation term
    :math:`f^2`; :math:`a = l` for :math:`h_l`), so the projected step multiplies the row by
    :math:`1 - a\gamma` before renormalising: for :math:`\gamma > 1/a` the row flips at every step and,
    for :math:`l \ge 3` (drift :math:`O(m^{l-1})` against the radial term :math:`a m`), the overlap
    *shrinks* (no learning at all; for :math:`l = 1` the drift is :math:`O(1)` and a flipped step still
    learns, for :math:`l = 2` drift and radial term are of the same order). Plain SGD is therefore run at
    :math:`\gamma = \min(\gamma_\text{line}, \gamma_\text{max})`, :math:`\gamma_\text{max} = 1/(2a)`
    ("capped", the plateau beyond the knee :math:`n_b \sim (\gamma_\text{max}/\delta)\, d^{e_l}`), and
    where the line exceeds the cap also *on* the line ("line", expected to fail past
    :math:`\gamma = 1/a`). The correlation loss has no :math:`f^2` term: it stays on the line and
    keeps speeding up until :math:`T = O(1)` (:math:`n_b \sim d^{l-1}` for :math:`l \ge 3`). For
    :math:`l \le 2` the two knees coincide (:math:`d^{l/2} \le d \ge d^{l-1}`); the contrast is
    :math:`l = 3`. (The level of the square plateau depends on the constant of the cap: as
    :math:`\gamma \to 1/a` the projected step amplifies the drift by :math:`1/(1 - a\gamma)`.)

    Statistic: median iterations to :math:`m = 0.5` (Kaplan–Meier over seeds, bootstrap interval,
    :func:`sgdlab.analysis.escape_from_result`), odd :math:`l` from a positive random start
    (``random_positive``), even :math:`l` on :math:`|m|`. The slope of :math:`\log T` against
    :math:`\log n_b` is fitted (:func:`sgdlab.analysis.fit_scaling`, weighted, t-interval) over the
    batches "below the knee": :math:`\gamma_\text{line} \le \gamma_\text{max}/4` (drift amplification
    below 15%) for the square loss, and an effective-dynamics time of at least ``T_FIT_MIN``
    iterations for both losses (no :math:`T = O(1)` points). Horizon: ``HORIZON`` times the steps of
    the effective dynamics (:func:`sgdlab.theory.escape_steps_effective`) at the reference step of
    the batch (capped for the square loss), at least ``T_MIN``; runs end once 70% of the seeds
    escaped (``stop_fraction``).

(b) **Phase diagram** at one :math:`d`: :math:`\mu = \log_d n_b` against :math:`\delta_\gamma = -\log_d
    \gamma` (written ``delta_exp``; not the prefactor :math:`\delta` above), learned (at least half of
    the seeds reach :math:`m = 0.5` within the horizon of the batch's reference run) or not, per loss.
    Theory lines: the noise line :math:`\gamma = \delta_c n_b d^{-e_l}` (below it, i.e. larger steps,
    the renormalisation term beats the drift; :math:`\delta_c` of each loss), the cap
    :math:`\gamma = 1/a` (square loss only), the time-budget line :math:`\gamma = \gamma_\text{ref} /
    \text{HORIZON}`, and :math:`\mu = e_l`, :math:`\mu = l - 1`.

(c) **Large batch**, :math:`n_b \gg d^{3/2}`, :math:`h_3` target, widths :math:`p = 1` and :math:`p = 4`
    (:math:`f = \frac1p\sum_j h_3(w_j\cdot x)`, step ``lr`` :math:`= p\,\gamma` so that each neuron
    moves with :math:`\gamma`), optimal-line :math:`\gamma` (above the square cap :math:`p/a` of the
    width-:math:`p` network): the square loss does not learn, the correlation loss does.

(d) **ODE against the chain** for the Saad–Solla soft committee: :math:`y = \text{erf}(\nu_1/\sqrt2) +
    \text{erf}(\nu_2/\sqrt2)`, student :math:`f = \sum_{j=1}^2 \text{erf}(\lambda_j/\sqrt2)`
    (``output_scale = "sum"``: realisable), square loss, plain SGD, start :math:`M = 0`. Two regimes:
    Saad–Solla (:math:`n_b = 1`, :math:`\gamma = 1/d`: the noise term :math:`\gamma^2 (d/n_b) E[c c^T]`
    is as large as the drift :math:`\gamma E[\ldots]`, ratio :math:`\gamma d/n_b = 1`) and population
    flow (:math:`n_b = d/4` and :math:`\gamma = 0.005`: ratio :math:`\gamma d / n_b = 0.02`, gradient flow
    on the population risk). Time is :math:`\gamma \times` steps (= samples/d in the Saad–Solla
    regime), in which both regimes have the same first-order drift. Mean chain trajectories over
    seeds against the ODE (which carries the exact :math:`d/n_b` noise factor and the
    :math:`(1 - 1/n_b)` squared-mean term), up to the unspecialised plateau: from a symmetric start
    the ODE stays on the plateau for ever, while finite-:math:`d` seeds leave it at random times
    (:math:`t \sim \log d`), so the horizon stops before that. The ODE is continuous in the step
    count: against the discrete chain it has an :math:`O(\gamma)` discretisation error, which is
    why the population-flow step is small.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from .._functions import gauss_hermite, information_exponent, resolve_fn
from ..analysis import fit_scaling
from ..config import ConfigError
from ..theory import critical_delta, escape_integral, escape_steps_effective
from ._common import (
    STOP_FRACTION,
    Outputs,
    Point,
    cost,
    escape_row,
    fmt_g,
    markdown_table,
    matched_config,
    provenance,
    require_engine,
    run_points,
    write_outputs,
)

__all__ = [
    "FULL",
    "QUICK",
    "LargeBatch",
    "Phase",
    "Series",
    "Committee",
    "cost",
    "line_lr",
    "plan",
    "radial_coefficient",
    "reproduce",
    "square_cap",
]

THRESHOLD = 0.5
HORIZON = 6.0  # horizon = HORIZON x the effective-dynamics steps of the batch's reference step
T_MIN = 30  # ... but at least this many iterations
T_FIT_MIN = 8.0  # slope fits use batches whose effective-dynamics time is at least this
LOSSES = ("square", "correlation")


# --------------------------------------------------------------------------------------
# theory helpers
# --------------------------------------------------------------------------------------


def _k(link: str) -> int:
    g = resolve_fn(link, "target.link")
    k = information_exponent(g, g)
    if k is None:
        raise ConfigError(f"link: got {link!r}; allowed: a link with a non-zero Hermite coefficient of degree >= 1")
    return int(k)


def optimal_exponent(k: int) -> float:
    """e_l of the optimal line gamma = delta n_b d^{-e_l}: 1 for l <= 2, l/2 for l >= 3."""
    return 1.0 if k <= 2 else k / 2.0


def line_lr(k: int, d: int, delta: float, batch: int) -> float:
    r""":math:`\gamma = \delta\, n_b\, d^{-e_l}` (the per-sample BAGJ step times the batch)."""
    return delta * batch * d ** (-optimal_exponent(k))


def radial_coefficient(link) -> float:
    r""":math:`a = E[z\,\sigma(z)\,\sigma'(z)]`, :math:`z \sim N(0, 1)`: minus the radial component of the
    population square-loss gradient at :math:`m = 0` (the :math:`f^2` term). :math:`a = l` for
    :math:`h_l`."""
    f = resolve_fn(link, "student.activation")
    z, w = gauss_hermite(80)
    import jax.numpy as jnp

    zz = jnp.asarray(z)
    return float(np.dot(w, z * np.asarray(f(zz)) * np.asarray(f.deriv(zz))))


def square_cap(link) -> float:
    r""":math:`\gamma_\text{max} = 1/(2a)`: half the step at which the projected square-loss step flips
    the row (:func:`radial_coefficient`)."""
    return 1.0 / (2.0 * radial_coefficient(link))


def _delta(link: str, fraction: float) -> float:
    dc = critical_delta(link, loss="square")
    return 0.5 if math.isinf(dc) else fraction * dc


def _effective_steps(link: str, d: int, lr: float, batch: int, loss: str) -> float:
    """Iterations of the effective dynamics from m0 = d^{-1/2} to THRESHOLD at step ``lr`` and
    batch ``batch`` (per-sample step lr / batch), first-order integral if it does not escape."""
    eta = lr / batch
    m0 = 1.0 / math.sqrt(d)
    t = escape_steps_effective(link, m0, THRESHOLD, eta, d, loss=loss)
    if not math.isfinite(t):
        t = escape_integral(link, m0, THRESHOLD) / eta
    return t / batch


# --------------------------------------------------------------------------------------
# what is run
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    """Part (a): one link, a few dimensions, batches ``n_b = 2^round(mu log2 d)`` for ``mus``;
    correlation-loss runs for ``mu >= corr_from``."""

    link: str
    ds: tuple[int, ...]
    mus: tuple[float, ...]
    seeds: int
    delta_fraction: float = 0.5
    corr_from: float = 0.0

    def k(self) -> int:
        return _k(self.link)

    def delta(self) -> float:
        return _delta(self.link, self.delta_fraction)

    def batches(self, d: int, mus: Sequence[float] | None = None) -> list[int]:
        return sorted({max(2, 2 ** round(mu * math.log2(d))) for mu in (self.mus if mus is None else mus)})


@dataclass(frozen=True)
class Phase:
    """Part (b): at dimension ``d`` of ``link``'s series, batches of exponents ``mus`` and steps
    ``gamma_line * d^(-offset)`` for ``offsets`` (in log_d units), both losses."""

    link: str
    d: int
    mus: tuple[float, ...]
    offsets: tuple[float, ...]


@dataclass(frozen=True)
class LargeBatch:
    """Part (c): h3 at ``d`` with batch ``batch``, per-neuron step on the optimal line, ``widths``."""

    link: str
    d: int
    batch: int
    widths: tuple[int, ...]
    seeds: int
    delta_fraction: float = 0.5


@dataclass(frozen=True)
class Committee:
    """Part (d): erf soft committee, p = r = 2; ``regimes`` = ((name, batch, lr), ...);
    horizon ``t_end`` in units of the Saad–Solla time lr x steps (= samples / d at lr = batch / d)."""

    d: int
    regimes: tuple[tuple[str, int, float], ...]
    t_end: float
    seeds: int
    records: int = 24


@dataclass(frozen=True)
class Spec:
    series: tuple[Series, ...]
    phase: Phase | None
    large: LargeBatch | None
    committee: Committee | None


FULL = Spec(
    series=(
        Series("h1", (256, 1024), mus=(0.1, 0.25, 0.4, 0.55, 0.7, 0.85, 1.0, 1.2, 1.4, 1.6), seeds=128),
        Series("h2", (256, 1024), mus=(0.1, 0.25, 0.4, 0.55, 0.7, 0.85, 1.0, 1.2, 1.4, 1.6), seeds=128),
        Series("h3", (64, 128, 256), mus=(0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0), seeds=96, corr_from=1.0),
    ),
    phase=Phase("h3", 128, mus=(0.5, 1.0, 1.5, 1.75, 2.0), offsets=(-1.0, -0.75, -0.5, -0.25, 0.0, 0.25, 0.5)),
    large=LargeBatch("h3", 64, 65536, widths=(1, 4), seeds=64),
    committee=Committee(512, (("saad-solla", 1, 1.0 / 512), ("population-flow", 128, 0.005)), t_end=40.0, seeds=128),
)
QUICK = Spec(
    series=(
        Series("h3", (64,), mus=(0.34, 0.67, 1.0, 1.34, 1.84, 2.17), seeds=48, corr_from=1.3),
    ),
    phase=Phase("h3", 64, mus=(0.67, 1.34, 2.17), offsets=(-0.5, 0.0, 0.5)),
    large=LargeBatch("h3", 32, 16384, widths=(1, 4), seeds=32),
    committee=Committee(256, (("saad-solla", 1, 1.0 / 256), ("population-flow", 64, 0.005)), t_end=12.0, seeds=64,
                        records=12),
)


def _reference_lr(series: Series, d: int, batch: int, loss: str) -> float:
    g = line_lr(series.k(), d, series.delta(), batch)
    return min(g, square_cap(series.link)) if loss == "square" else g


def _horizon(link: str, d: int, lr: float, batch: int, loss: str) -> int:
    return max(T_MIN, int(math.ceil(HORIZON * _effective_steps(link, d, lr, batch, loss))))


def _config(link: str, d: int, width: int, loss: str, lr: float, batch: int, steps: int, seeds: int, init,
            engine: str, seed: int) -> dict:
    return matched_config(link, d, seeds=seeds, seed=seed, engine=engine, width=width, loss=loss, lr=float(lr),
                          batch=batch, steps=steps, projected=True, init=init, escape_threshold=THRESHOLD,
                          stop_fraction=STOP_FRACTION)


def _init(k: int) -> str:
    return "random_positive" if k % 2 else "random"


def _series_points(s: Series, engine: str, seed: int) -> list[Point]:
    k, delta, cap = s.k(), s.delta(), square_cap(s.link)
    pts = []
    for d in s.ds:
        for b in s.batches(d):
            line = line_lr(k, d, delta, b)
            mu = math.log(b) / math.log(d)
            for loss in LOSSES:
                if loss == "correlation" and mu < s.corr_from - 1e-9:
                    continue
                ref = _reference_lr(s, d, b, loss)
                steps = _horizon(s.link, d, ref, b, loss)
                runs = [("line" if ref == line else "capped", ref)]
                if loss == "square" and line > cap:
                    runs.append(("line", line))
                for schedule, lr in runs:
                    tags = {"part": "batch", "link": s.link, "k": k, "d": d, "batch": b, "loss": loss,
                            "schedule": schedule, "lr": lr, "lr_line": line, "lr_ref": ref, "delta": delta}
                    pts.append(Point(tags, _config(s.link, d, 1, loss, lr, b, steps, s.seeds, _init(k), engine, seed)))
    return pts


def _phase_points(ph: Phase, series: Sequence[Series], engine: str, seed: int) -> list[Point]:
    s = next((x for x in series if x.link == ph.link), None)
    if s is None:
        return []
    k, delta = s.k(), s.delta()
    pts = []
    for b in s.batches(ph.d, ph.mus):
        line = line_lr(k, ph.d, delta, b)
        for loss in LOSSES:
            ref = _reference_lr(s, ph.d, b, loss)
            steps = _horizon(s.link, ph.d, ref, b, loss)  # the batch's reference horizon (shared compilation)
            for off in ph.offsets:
                lr = line * ph.d ** (-off)
                tags = {"part": "phase", "link": s.link, "k": k, "d": ph.d, "batch": b, "loss": loss,
                        "lr": lr, "lr_ref": ref, "offset": off, "delta": delta,
                        "mu": math.log(b) / math.log(ph.d), "delta_exp": -math.log(lr) / math.log(ph.d)}
                pts.append(Point(tags, _config(s.link, ph.d, 1, loss, lr, b, steps, s.seeds, _init(k), engine, seed)))
    return pts


def _large_points(lb: LargeBatch, engine: str, seed: int) -> list[Point]:
    k = _k(lb.link)
    delta = _delta(lb.link, lb.delta_fraction)
    gamma = line_lr(k, lb.d, delta, lb.batch)
    steps = _horizon(lb.link, lb.d, gamma, lb.batch, "correlation")
    pts = []
    for p in lb.widths:
        for loss in LOSSES:
            tags = {"part": "large", "link": lb.link, "k": k, "d": lb.d, "batch": lb.batch, "loss": loss,
                    "width": p, "gamma": gamma, "lr": p * gamma, "square_flip": p / radial_coefficient(lb.link)}
            pts.append(Point(tags, _config(lb.link, lb.d, p, loss, p * gamma, lb.batch, steps, lb.seeds, _init(k),
                                           engine, seed)))
    return pts


def _committee_points(c: Committee, seed: int) -> list[Point]:
    pts = []
    for name, batch, lr in c.regimes:
        steps = max(1, int(round(c.t_end / lr)))
        every = max(1, steps // c.records)
        for engine, seeds in (("chain", c.seeds), ("ode", 1)):
            cfg = {
                "d": c.d, "seeds": seeds, "seed": seed, "engine": engine,
                "target": {"link": "erf", "directions": 2},
                "student": {"activation": "erf", "width": 2, "output_scale": "sum"},
                "train": {"loss": "square", "lr": float(lr), "batch": batch, "steps": steps, "init": 0.0,
                          "record_every": every},
            }
            pts.append(Point({"part": "committee", "regime": name, "engine": engine, "d": c.d, "batch": batch,
                              "lr": lr}, cfg))
    return pts


def plan(
    *, quick: bool = False, engine: str = "chain", seeds: int | None = None, seed: int = 0, **_: object
) -> tuple[Spec, list[Point]]:
    """The specification and every run of the reproduction (nothing is run). ``seeds``
    overrides the seeds of parts (a)-(c); part (d) always compares the chain with the ODE."""
    require_engine(engine, ("chain", "full"))
    spec = QUICK if quick else FULL
    if seeds is not None:
        spec = replace(spec, series=tuple(replace(s, seeds=seeds) for s in spec.series),
                       large=None if spec.large is None else replace(spec.large, seeds=seeds))
    pts = [p for s in spec.series for p in _series_points(s, engine, seed)]
    if spec.phase is not None:
        pts += _phase_points(spec.phase, spec.series, engine, seed)
    if spec.large is not None:
        pts += _large_points(spec.large, engine, seed)
    if spec.committee is not None:
        pts += _committee_points(spec.committee, seed)
    return spec, pts



# --------------------------------------------------------------------------------------
# analysis
# --------------------------------------------------------------------------------------


def _escape(result, k: int) -> tuple[object, dict]:
    """Escape statistics plus the median over seeds of the final overlap (the best row's
    signed m for odd k, |m| for even k) and ``learned``: at least half of the seeds reached
    m = 0.5 *and* at least half are above it at the end of the run. The second condition
    separates learning from noise-driven excursions of |m| to 0.5, which are frequent at
    small d when the step is above the noise line or the square-loss cap."""
    st, row = escape_row(result)
    row = dict(row)
    row["median_T"] = _fin(st.median_step)
    row["median_T_lo"] = _fin(st.median_step_ci[0])
    row["median_T_hi"] = _fin(st.median_step_ci[1])
    m = result.overlap()[:, -1, :, 0]
    m = m if k % 2 else np.abs(m)
    final = float(np.nanmedian(np.nanmax(m, axis=1)))
    row["final_overlap_median"] = _fin(final)
    row["learned"] = bool(st.fraction_escaped >= 0.5 and final >= THRESHOLD)
    return st, row


def _fin(x) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def _fit(batches, stats) -> dict:
    med = [s.median_step for s in stats]
    lo = [s.median_step_ci[0] for s in stats]
    hi = [s.median_step_ci[1] for s in stats]
    try:
        fit = fit_scaling(batches, med, lo, hi)
    except ValueError as e:
        return {"theory": -1.0, "slope": None, "error": str(e), "batches": list(batches)}
    return {
        "theory": -1.0, "slope": fit.slope, "stderr": fit.stderr, "ci": list(fit.ci),
        "ci_boot": None if fit.ci_boot is None else list(fit.ci_boot), "chi2_red": fit.chi2_red,
        "intercept": fit.intercept, "n_points": fit.n, "batches": list(batches),
        "theory_in_ci": bool(fit.ci[0] <= -1.0 <= fit.ci[1]),
    }


def _committee_summary(pts, results, c: Committee) -> dict:
    out = {}
    for name, batch, lr in c.regimes:
        ch = next(r for p, r in zip(pts, results, strict=True) if p.tags["part"] == "committee"
                  and p.tags["regime"] == name and p.tags["engine"] == "chain")
        od = next(r for p, r in zip(pts, results, strict=True) if p.tags["part"] == "committee"
                  and p.tags["regime"] == name and p.tags["engine"] == "ode")
        S = ch.n_seeds
        row = {"batch": batch, "lr": lr, "seeds": S, "d": c.d, "t_end": c.t_end,
               "noise_factor_d_over_nb": c.d / batch}
        for name_, x, y in (("risk", ch.risk, od.risk), ("M", ch.M, od.M), ("Q", ch.Q, od.Q)):
            mean = np.nanmean(x, axis=0)
            se = np.nanstd(x, axis=0) / math.sqrt(S)
            gap = np.abs(y[0] - mean)
            z = gap / np.maximum(se, 1e-12)
            row[f"max_gap_{name_}"] = float(np.nanmax(gap))
            row[f"max_z_{name_}"] = float(np.nanmax(z))
        row["final_risk_ode"] = float(od.risk[0, -1])
        row["final_risk_chain"] = float(np.nanmean(ch.risk[:, -1]))
        row["quadrature_error"] = od.info.get("quadrature_error") if isinstance(od.info, dict) else None
        out[name] = row
    return out


def reproduce(
    *,
    quick: bool = False,
    engine: str = "chain",
    store: str | Path = "results/store",
    out: str | Path | None = None,
    seeds: int | None = None,
    workers: int | None = None,
    progress: bool = False,
    seed: int = 0,
) -> Outputs:
    """Run (or read back from ``store``) every run and write ``batch.png``, ``phase.png``,
    ``committee.png``, ``table.md`` and ``results.json`` into ``out`` (default
    ``results/reproduce/batch-size[-quick]``)."""
    started = time.perf_counter()
    mode = "quick" if quick else "full"
    spec, pts = plan(quick=quick, engine=engine, seeds=seeds, seed=seed)
    out = Path(out) if out is not None else Path("results/reproduce") / ("batch-size" + ("-quick" if quick else ""))
    results, rows = run_points(pts, store=store, workers=workers, progress=progress, order=cost)

    # ---- (a) T vs n_b
    batch_rows, fits, curves = [], {}, []
    for s in spec.series:
        cap = square_cap(s.link)
        for d in s.ds:
            for loss in LOSSES:
                for schedule in ("line", "capped"):
                    idx = [i for i, p in enumerate(pts) if p.tags["part"] == "batch" and p.tags["link"] == s.link
                           and p.tags["d"] == d and p.tags["loss"] == loss and p.tags["schedule"] == schedule]
                    if not idx:
                        continue
                    stats, bs = [], []
                    for i in idx:
                        tg = pts[i].tags
                        st, row = _escape(results[i], tg["k"])
                        t_eff = _effective_steps(s.link, d, tg["lr"], tg["batch"], loss)
                        row = {"link": s.link, "k": tg["k"], "d": d, "loss": loss, "schedule": schedule,
                               "batch": tg["batch"], "mu": math.log(tg["batch"]) / math.log(d), "lr": tg["lr"],
                               "lr_line": tg["lr_line"], "effective_T": t_eff, **row,
                               "wall_time_s": rows[i].get("wall_time")}
                        batch_rows.append(row)
                        stats.append(st)
                        bs.append(tg["batch"])
                    curves.append((s, d, loss, schedule, bs, stats))
                    if schedule != "line":
                        continue
                    sel = [j for j, i in enumerate(idx)
                           if _effective_steps(s.link, d, pts[i].tags["lr"], pts[i].tags["batch"], loss) >= T_FIT_MIN
                           and (loss == "correlation" or pts[i].tags["lr"] <= cap / 4)]
                    fit = _fit([bs[j] for j in sel], [stats[j] for j in sel])
                    fit.update({"link": s.link, "k": s.k(), "d": d, "loss": loss, "delta": s.delta(),
                                "gamma_max": cap, "knee_batch": cap / s.delta() * d ** optimal_exponent(s.k())})
                    fits[f"{s.link}/d={d}/{loss}"] = fit

    # ---- (b) phase diagram (rows first: the best step at the largest batch uses them too)
    phase_rows = []
    for i, p in enumerate(pts):
        if p.tags["part"] != "phase":
            continue
        tg = p.tags
        st, row = _escape(results[i], tg["k"])
        phase_rows.append({"loss": tg["loss"], "d": tg["d"], "batch": tg["batch"], "mu": tg["mu"],
                           "delta_exp": tg["delta_exp"], "offset": tg["offset"], "lr": tg["lr"], **row})

    # plateau / speed-up beyond the knee: the largest batch of each (link, d); "best" is the
    # fastest learned run at that batch over every step tried (series and phase diagram)
    beyond = []
    for s in spec.series:
        for d in s.ds:
            rr = [r for r in batch_rows if r["link"] == s.link and r["d"] == d]
            bmax = max(r["batch"] for r in rr)
            get = {(r["loss"], r["schedule"]): r for r in rr if r["batch"] == bmax}
            sq_c = get.get(("square", "capped")) or get.get(("square", "line"))
            sq_l = get.get(("square", "line"))
            co = get.get(("correlation", "line"))
            row = {
                "link": s.link, "d": d, "batch": bmax,
                "T_square_capped": sq_c and sq_c["median_T"], "T_square_line": sq_l and sq_l["median_T"],
                "square_line_lr": sq_l and sq_l["lr"], "square_line_learned": sq_l and sq_l["learned"],
                "square_line_escaped": sq_l and sq_l["fraction_escaped"],
                "T_correlation": co and co["median_T"],
            }
            same = [r for r in rr if r["batch"] == bmax] + [
                r for r in phase_rows if r["batch"] == bmax and r["d"] == d and spec.phase is not None
                and s.link == spec.phase.link]
            for loss in LOSSES:
                ok = [r for r in same if r["loss"] == loss and r["learned"] and r["median_T"]]
                best = min(ok, key=lambda r: r["median_T"]) if ok else None
                row[f"best_T_{loss}"] = best and best["median_T"]
                row[f"best_T_{loss}_ci"] = best and [best["median_T_lo"], best["median_T_hi"]]
                row[f"best_lr_{loss}"] = best and best["lr"]
            bs, bc = row["best_T_square"], row["best_T_correlation"]
            row["best_speedup_correlation_over_square"] = bs / bc if bs and bc else None
            beyond.append(row)

    # ---- (c) large batch
    large_rows = []
    for i, p in enumerate(pts):
        if p.tags["part"] != "large":
            continue
        tg = p.tags
        st, row = _escape(results[i], tg["k"])
        large_rows.append({"loss": tg["loss"], "width": tg["width"], "d": tg["d"], "batch": tg["batch"],
                           "gamma": tg["gamma"], "lr": tg["lr"], "square_flip_gamma": tg["square_flip"], **row})
    large_pass = None
    if large_rows:
        checks = []
        for r in large_rows:
            ok = r["learned"] == (r["loss"] == "correlation")
            r["as_expected"] = bool(ok)
            checks.append(ok)
        large_pass = bool(all(checks))

    # ---- (d) committee
    committee = {}
    if spec.committee is not None:
        committee = _committee_summary(pts, results, spec.committee)

    summary = {
        "mode": mode,
        "engine": engine,
        "protocol": {
            "geometry": "projected (step, then renormalise each row by sqrt(Q_jj + dQ_jj))",
            "step": "gamma_line = delta * n_b * d^{-e_l}, e_l = 1 (l <= 2), l/2 (l >= 3); delta = half the square-loss "
                    "critical delta (0.5 for l = 1), same for both losses",
            "square_cap": "gamma_max = 1 / (2 a), a = E[z sigma sigma'] (= l for h_l); the projected square-loss step "
                          "flips the row for gamma > 1/a",
            "escape_threshold": THRESHOLD, "stop_fraction": STOP_FRACTION, "horizon_multiple": HORIZON,
            "min_horizon_steps": T_MIN,
            "fit_range": f"square: gamma <= gamma_max / 4; both: effective T >= {T_FIT_MIN}",
            "learned": "at least half of the seeds reached m = 0.5 and the median final overlap (signed for odd l) "
                       "is >= 0.5",
            "init": "random_positive (odd l), random (even l)",
        },
        "series": [asdict(s) | {"k": s.k(), "delta": s.delta(), "gamma_max": square_cap(s.link)} for s in spec.series],
        "fits": fits,
        "beyond_knee": beyond,
        "points": batch_rows,
        "phase": {"spec": None if spec.phase is None else asdict(spec.phase), "points": phase_rows},
        "large_batch": {"spec": None if spec.large is None else asdict(spec.large), "points": large_rows,
                        "pass": large_pass},
        "committee": {"spec": None if spec.committee is None else asdict(spec.committee), "regimes": committee,
                      "max_gap": max((max(v["max_gap_M"], v["max_gap_Q"], v["max_gap_risk"])
                                      for v in committee.values()), default=None)},
        "compute_s": float(sum((r.get("wall_time") or 0.0) for r in rows)),
    }

    fmt, f3 = fmt_g(), fmt_g(".3f")
    table = "## (a) Iterations T to m = 0.5 against the batch\n\n" + markdown_table(batch_rows, [
        ("link", "link", str), ("d", "d", str), ("loss", "loss", str), ("schedule", "step", str),
        ("batch", "n_b", str), ("mu", "log_d n_b", f3), ("lr", "gamma", fmt), ("n_seeds", "seeds", str),
        ("fraction_escaped", "escaped", f3), ("median_T", "median T", fmt), ("median_T_lo", "CI low", fmt),
        ("median_T_hi", "CI high", fmt), ("effective_T", "effective dynamics", fmt),
    ])
    fit_rows = []
    for key, f in fits.items():
        fit_rows.append({**f, "series": key,
                         "ci_text": "-" if f.get("ci") is None else f"[{f['ci'][0]:.3f}, {f['ci'][1]:.3f}]"})
    table += "\n## Slope of log T against log n_b below the knee (theory -1)\n\n" + markdown_table(fit_rows, [
        ("series", "series", str), ("n_points", "points", str), ("slope", "fitted", f3), ("ci_text", "95% CI", str),
        ("chi2_red", "chi2/dof", fmt), ("theory_in_ci", "-1 in CI", str), ("knee_batch", "knee n_b", fmt),
    ])
    table += "\n## Beyond the knee (largest batch)\n\n" + markdown_table(beyond, [
        ("link", "link", str), ("d", "d", str), ("batch", "n_b", str), ("T_square_capped", "T square (capped)", fmt),
        ("T_square_line", "T square (line)", fmt), ("square_line_learned", "square line learned", str),
        ("T_correlation", "T correlation", fmt), ("best_T_square", "best T square", fmt),
        ("best_lr_square", "at gamma", fmt), ("best_T_correlation", "best T correlation", fmt),
        ("best_lr_correlation", "at gamma", fmt), ("best_speedup_correlation_over_square", "speed-up", fmt),
    ])
    if phase_rows:
        table += "\n## (b) Phase diagram points\n\n" + markdown_table(phase_rows, [
            ("loss", "loss", str), ("batch", "n_b", str), ("mu", "mu", f3), ("delta_exp", "-log_d gamma", f3),
            ("lr", "gamma", fmt), ("fraction_escaped", "escaped", f3), ("median_T", "median T", fmt),
            ("learned", "learned", str),
        ])
    if large_rows:
        table += f"\n## (c) Large batch (pass: {large_pass})\n\n" + markdown_table(large_rows, [
            ("width", "p", str), ("loss", "loss", str), ("d", "d", str), ("batch", "n_b", str),
            ("gamma", "gamma per neuron", fmt), ("square_flip_gamma", "square flip at", fmt),
            ("fraction_escaped", "escaped", f3), ("median_T", "median T", fmt),
            ("final_overlap_median", "final |m| (median)", f3), ("as_expected", "as expected", str),
        ])
    if committee:
        crow = [{"regime": k, **v} for k, v in committee.items()]
        table += "\n## (d) ODE against the chain, erf committee (mean over seeds)\n\n" + markdown_table(crow, [
            ("regime", "regime", str), ("d", "d", str), ("batch", "n_b", str), ("lr", "gamma", fmt),
            ("seeds", "seeds", str), ("max_gap_risk", "max gap risk", fmt), ("max_z_risk", "max z risk", f3),
            ("max_gap_M", "max gap M", fmt), ("max_z_M", "max z M", f3), ("max_gap_Q", "max gap Q", fmt),
            ("max_z_Q", "max z Q", f3),
        ])
    figures = {"batch.png": _batch_figure(spec, curves)}
    if phase_rows:
        figures["phase.png"] = _phase_figure(spec, phase_rows)
    if committee:
        figures["committee.png"] = _committee_figure(spec.committee, pts, results)
    return write_outputs(out, name="batch-size", summary=summary, table=table, figures=figures, started=started,
                         points=provenance(pts, rows))


# --------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _batch_figure(spec: Spec, curves):
    plt = _plt()
    n = len(spec.series)
    fig, axes = plt.subplots(1, n, figsize=(5.6 * n, 4.6), squeeze=False)
    styles = {("square", "line"): ("o", "-"), ("square", "capped"): ("s", "--"), ("correlation", "line"): ("^", ":")}
    for ax, s in zip(axes[0], spec.series, strict=True):
        k, delta, cap = s.k(), s.delta(), square_cap(s.link)
        e = optimal_exponent(k)
        for j, d in enumerate(s.ds):
            c = f"C{j}"
            for (sd, dd, loss, sched, bs, stats) in curves:
                if sd is not s or dd != d:
                    continue
                mk, ls = styles[(loss, sched)]
                b = np.asarray(bs, float)
                med = np.array([st.median_step for st in stats])
                lo = np.array([st.median_step_ci[0] for st in stats])
                hi = np.array([st.median_step_ci[1] for st in stats])
                ok = np.isfinite(med)
                hi_c = np.where(np.isfinite(hi), hi, med * 3)
                lab = f"d={d} {loss}" + (" (capped gamma)" if sched == "capped" else "")
                ax.errorbar(b[ok], med[ok], yerr=[med[ok] - lo[ok], hi_c[ok] - med[ok]], fmt=mk, ls=ls, color=c,
                            ms=4, capsize=2, label=lab, mfc="none" if loss == "correlation" else c)
                if (~ok).any():  # T > its run's horizon: a lower limit, drawn at the horizon
                    horizon = np.array([st.horizon for st in stats], float)
                    ax.scatter(b[~ok], horizon[~ok], marker="^", color=c, s=30,
                               label=f"d={d} {loss} on the line: not learned (T > horizon, at the horizon)")
            ax.axvline(cap / delta * d**e, color=c, lw=0.8, ls="-.", alpha=0.6)
            if k >= 3:
                ax.axvline(d ** (k - 1), color=c, lw=0.8, ls=":", alpha=0.6)
            bb = np.geomspace(2, max(2 ** round(max(s.mus) * math.log2(d)), 4), 40)
            eff = [_effective_steps(s.link, d, line_lr(k, d, delta, int(x)), int(x), "square") for x in bb]
            ax.plot(bb, eff, color=c, lw=0.6, alpha=0.5)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch n_b")
        ax.set_ylabel("median iterations T to m = 0.5")
        ax.set_title(f"{s.link} (l={k}), gamma = {delta:.3g} n_b d^-{e:g}\n"
                     f"dash-dot: square knee (gamma_max = {cap:.3g}); dotted: n_b = d^(l-1); thin: effective dynamics",
                     fontsize=8)
        ax.legend(fontsize=6)
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return fig


def _phase_figure(spec: Spec, rows):
    plt = _plt()
    ph = spec.phase
    s = next(x for x in spec.series if x.link == ph.link)
    k, delta, d = s.k(), s.delta(), ph.d
    e = optimal_exponent(k)
    a = radial_coefficient(s.link)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), sharey=True)
    mu = np.linspace(0, max(r["mu"] for r in rows) + 0.3, 50)
    L = math.log(d)
    for ax, loss in zip(axes, LOSSES, strict=True):
        rr = [r for r in rows if r["loss"] == loss]
        x = np.array([r["mu"] for r in rr])
        y = np.array([r["delta_exp"] for r in rr])
        T = np.array([r["median_T"] if r["learned"] and r["median_T"] else np.nan for r in rr], float)
        learned = np.array([r["learned"] for r in rr])
        sc = ax.scatter(x[learned], y[learned], c=np.log(T[learned]) / L, cmap="viridis", s=70, marker="o",
                        edgecolors="k", vmin=0, vmax=max(2.5, float(np.nanmax(np.log(T) / L)) if learned.any() else 1))
        ax.scatter(x[~learned], y[~learned], marker="x", color="r", s=50, label="not learned")
        dc = critical_delta(s.link, loss=loss)
        ax.plot(mu, e - mu - math.log(dc) / L, "k-", lw=1, label=f"noise line gamma = delta_c n_b d^-{e:g}")
        ref = e - mu - math.log(delta) / L  # -log_d of the reference step (capped for the square loss)
        if loss == "square":
            ref = np.maximum(ref, -math.log(square_cap(s.link)) / L)
        ax.plot(mu, ref + math.log(HORIZON) / L, "k:", lw=1, label=f"time budget: gamma = reference / {HORIZON:g}")
        if loss == "square":
            ax.axhline(math.log(a) / L, color="r", lw=1, ls="--", label="gamma = 1/a (row flips)")
        ax.axvline(e, color="grey", lw=0.8, ls="-.", label="mu = e_l")
        if k >= 3:
            ax.axvline(k - 1, color="grey", lw=0.8, ls=":", label="mu = l - 1")
        ax.set_xlabel("mu = log_d n_b")
        ax.set_title(f"{s.link}, d = {d}, {loss} loss", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6)
        fig.colorbar(sc, ax=ax, label="log_d T (learned)")
    axes[0].set_ylabel("-log_d gamma")
    axes[0].invert_yaxis()
    fig.tight_layout()
    return fig


def _committee_figure(c: Committee, pts, results):
    plt = _plt()
    fig, axes = plt.subplots(len(c.regimes), 3, figsize=(13, 3.6 * len(c.regimes)), squeeze=False)
    for row, (name, batch, lr) in enumerate(c.regimes):
        got = {p.tags["engine"]: r for p, r in zip(pts, results, strict=True)
               if p.tags["part"] == "committee" and p.tags["regime"] == name}
        ch, od = got["chain"], got["ode"]
        tt = np.asarray(ch.steps, float) * lr
        to = np.asarray(od.steps, float) * lr
        S = ch.n_seeds
        panels = ((("risk",), ch.risk, od.risk[0]),
                  (("M_00", "M_01"), ch.M.reshape(S, len(tt), -1)[:, :, :2], od.M.reshape(1, len(to), -1)[0, :, :2]),
                  (("Q_00", "Q_01"), np.stack([ch.Q[:, :, 0, 0], ch.Q[:, :, 0, 1]], -1),
                   np.stack([od.Q[0, :, 0, 0], od.Q[0, :, 0, 1]], -1)))
        for ax, (names, x, y) in zip(axes[row], panels, strict=True):
            x = x if x.ndim == 3 else x[..., None]
            y = y if y.ndim == 2 else y[:, None]
            for j, comp in enumerate(names):
                mean = np.nanmean(x[..., j], axis=0)
                se = np.nanstd(x[..., j], axis=0) / math.sqrt(S)
                ax.fill_between(tt, mean - 3 * se, mean + 3 * se, color=f"C{j}", alpha=0.3)
                ax.plot(tt, mean, color=f"C{j}", lw=1.2, label=f"{comp}: chain mean +- 3 SE ({S} seeds)")
                ax.plot(to, y[:, j], "--", color="k" if j == 0 else "0.45", lw=1, label=f"{comp}: ODE")
            ax.set_title(f"{name}: n_b = {batch}, gamma = {lr:.3g}, d = {c.d}", fontsize=8)
            ax.set_ylabel("population risk" if names == ("risk",) else ", ".join(names))
            ax.set_xlabel("gamma x steps")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=6)
        axes[row][0].set_yscale("log")
    fig.tight_layout()
    return fig


def describe() -> dict:
    """The default specifications (for documentation and tests)."""
    return {"full": asdict(FULL), "quick": asdict(QUICK)}
