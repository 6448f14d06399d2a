r"""``sgdlab reproduce info-exponent``: the information-exponent law of Ben Arous, Gheissari and
Jagannath (2021).

A single-index target :math:`y = g(w^*\cdot x)` is learnt by the matched student
:math:`g(w\cdot x)` with spherical online SGD on the square loss from a random start. The
samples needed to reach the overlap :math:`m = 0.5` (weak recovery) grow as :math:`d`
(:math:`k = 1`), :math:`d \log d` (:math:`k = 2`) and :math:`d^{k-1}` (:math:`k \ge 3`) with the
per-sample step :math:`\eta = \delta/d` (:math:`k \le 2`) or :math:`\delta d^{-k/2}`
(:math:`k \ge 3`), :func:`sgdlab.theory.theory_lr` with ``log_step=False``.

Protocol, per link and dimension:

- start: uniform on the sphere; for odd :math:`k` conditioned on a positive overlap
  (``init = "random_positive"``, the sign convention of the escape statistics), for even
  :math:`k` unconditioned (escape on :math:`|m|`);
- step size: :math:`\delta` a fixed fraction of :func:`sgdlab.theory.critical_delta` (above it
  the renormalisation term makes the equator attracting at :math:`m \sim d^{-1/2}`);
- minibatch: :math:`n_b = \max(1, \text{round}(\beta d))` samples per step (``batch_per_d``
  :math:`= \beta`) with step size :math:`n_b\,\eta`. Per sample this is the same process to
  leading order (drift, noise and renormalisation per sample are unchanged while
  :math:`n_b \ll d^{k/2}`, Arnaboldi et al. 2024); the relative corrections are
  :math:`O(n_b/d)`, constant along the series because :math:`n_b \propto d`, so they cannot
  tilt the fitted slope. The run checks it at one
  dimension: batch 1 against the series' batches (``batch_check`` in the JSON);
- horizon: ``horizon`` times the steps of the effective dynamics
  (:func:`sgdlab.theory.escape_steps_effective`) from :math:`m_0 = d^{-1/2}`, ended early once
  70% of the seeds have escaped (``stop_fraction``: the Kaplan–Meier median and its bootstrap
  interval only involve the first ~60% of escapes);
- statistics: the censoring-aware median of the escape samples with a bootstrap interval,
  :func:`sgdlab.analysis.escape_from_result`; the exponent is the weighted log-log slope of
  median against :math:`d` (:func:`sgdlab.analysis.fit_scaling`; for :math:`k = 2` of
  median / :math:`\log d`).

The second figure shows :math:`m(t)` at one dimension from a fixed start :math:`m_0 = d^{-1/2}`:
chain seeds, full-simulation seeds and the ODE, with the long search phase and the short
descent.

The SDE part (``sde_quartiles.png`` and the SDE points of ``scaling.png``). For
:math:`k \ge 3` in the search scaling (:math:`\mu = \sqrt d\, m`, :math:`s = \text{samples}/d^{k-1}`,
per-sample step :math:`\eta = \delta' d^{-k/2}`) the chain of the overlap converges to the
diffusion :math:`d\mu = [\delta' k A_k \mu^{k-1} - (\delta'^2/2) V_0 \mu]\,ds + \delta' \sqrt{W_0}\,dB`
(:class:`sgdlab.engines.SDE`; ``docs/sde.md``): population drift, the sphere's Ito correction
and the gradient noise along :math:`w^*`, with :math:`A_k, V_0, W_0` free of :math:`d`. The
series' protocol lies in its scope: isotropic inputs, one index, one spherical neuron, square
loss, a random start (conditioned on :math:`m_0 > 0` for odd k), and with :math:`\text{lr} = n_b
\eta` the SDE's :math:`\delta' = \text{lr}\, d^{k/2}/n_b = \delta`. The batch enters the limit
only through corrections of order :math:`\sqrt{n_b/d^{k-1}}` (the third moment of a step summed
over the :math:`d^{k-1}/n_b` steps of a unit of s; the renormalisation's next order is
:math:`O(n_b/d^{k-1})`): :math:`d^{-1/2}/2` for h3 at :math:`n_b = d/4`, the same order as the
other finite-d corrections, and :math:`2/d` for h4 at :math:`n_b = 4d`.

- quartiles of s for h3: the chain at :math:`d = 64 .. 1024` (its own runs, ended once 80% of
  the seeds escaped so that the upper quartile is measured), the SDE at the same d (threshold
  :math:`\mu_1 = \sqrt d/2`, the start law of :math:`\sqrt d\, m_0` exact at d) and at
  :math:`d = 10^{12}` (the :math:`d \to \infty` law: for :math:`k \ge 3` the drift blows up in
  finite time, so the escape time converges as :math:`\mu_1 \to \infty`); the chain's quartiles
  are fitted by :math:`a + b\, d^{-1/2}` (the order of the leading corrections: the finite
  threshold and the m-dependence of the noise and curvature terms) and the intercept is compared
  with the SDE limit. Quartile intervals are distribution-free order-statistic intervals
  (:func:`sgdlab.analysis.quantile_interval`);
- ``scaling.png``: SDE medians at the series' d and at :math:`d = 10^4 .. 10^9` (h3),
  :math:`10^3 .. 10^8` (h4), beside the chain and the theory line. k = 1 and 2 are not extended:
  for k = 1 the series' step :math:`\delta/d` is not the diffusion scaling, and for k = 2 the
  descent from :math:`\mu = O(1)` to :math:`m = 0.5` costs :math:`O(d)` samples outside the
  diffusion, so the SDE's escape time is right only to relative :math:`O(1/\log d)`.

``reproduce(parts=["sde"], base="docs/reproductions/info-exponent/results.json")`` (CLI
``--parts sde --base FILE``) runs only this part and takes the others from a committed
``results.json``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from .._functions import information_exponent, resolve_fn
from ..analysis import extrapolate_linear, quantile_interval, theory_exponent
from ..config import ConfigError
from ..theory import critical_delta, escape_steps_effective, theory_lr
from ._common import (
    STOP_FRACTION,
    Outputs,
    Point,
    cost,
    escape_row,
    fit_row,
    fmt_g,
    markdown_table,
    matched_config,
    pow2,
    provenance,
    require_engine,
    run_points,
    write_outputs,
)

__all__ = ["FULL", "PARTS", "QUICK", "SDE_PART", "Series", "cost", "plan", "reproduce"]

FULL_ENGINE_MAX_D = 1024  # the d-dimensional simulation runs the part of a series with d <= this


@dataclass(frozen=True)
class Series:
    """One link's sweep over dimensions. ``delta_fraction`` of the critical delta for
    :math:`k \\ge 2` (``delta`` itself for :math:`k = 1`, which has none)."""

    link: str
    ds: tuple[int, ...]
    seeds: int
    delta_fraction: float = 0.5
    delta: float | None = None
    batch_per_d: float = 1 / 16
    horizon: float = 6.0
    seeds_large: tuple[int, int] | None = None  # (d0, n): n seeds for d >= d0

    def seeds_at(self, d: int) -> int:
        if self.seeds_large is not None and d >= self.seeds_large[0]:
            return self.seeds_large[1]
        return self.seeds

    def k(self) -> int:
        g = resolve_fn(self.link, "target.link")
        k = information_exponent(g, g)
        if k is None:
            raise ConfigError(
                f"--links: got {self.link!r}; allowed: a link with a non-zero Hermite coefficient of degree >= 1"
            )
        return int(k)

    def step_delta(self) -> float:
        if self.delta is not None:
            return self.delta
        dc = critical_delta(self.link)
        return 0.5 if math.isinf(dc) else self.delta_fraction * dc



FULL: tuple[Series, ...] = (
    Series("h1", pow2(6, 14), seeds=256, batch_per_d=1 / 64),
    Series("h2", pow2(6, 14), seeds=256, batch_per_d=1 / 64),
    Series("h3", pow2(6, 12), seeds=128, delta_fraction=0.5, batch_per_d=1 / 4),
    Series("h4", pow2(4, 7), seeds=128, delta_fraction=0.25, batch_per_d=4.0),
)
QUICK: tuple[Series, ...] = (
    Series("h1", pow2(5, 8), seeds=128, batch_per_d=1 / 64),
    Series("h2", pow2(5, 8), seeds=128, batch_per_d=1 / 64),
    Series("h3", pow2(4, 7), seeds=96, delta_fraction=0.5, batch_per_d=1 / 4),
)
TRAJECTORY = {
    "full": dict(link="h3", d=256, chain_seeds=64, full_seeds=16),
    "quick": dict(link="h3", d=64, chain_seeds=32, full_seeds=8),
}
BATCH_CHECK = {
    "full": dict(link="h3", d=128, batches=(1, 8, 32, 128), seeds=128),
    "quick": dict(link="h3", d=64, batches=(1, 4), seeds=96),
}
#: The SDE part. ``chain``: the finite-d escape-time law of ``link`` on the series' protocol
#: (same step, batch and start), run until ``stop`` of the seeds escaped so that the upper
#: quartile is measured; ``paths``: SDE paths per point; ``extension``: the dimensions (per k)
#: at which the SDE extends the scaling figure; ``at_series_d``: also at each series' own d.
SDE_PART = {
    "full": dict(link="h3", ds=pow2(6, 10), seeds=512, stop=0.8, horizon=12.0, paths=4000, at_series_d=True,
                 extension={3: tuple(10**i for i in range(4, 10)), 4: tuple(10**i for i in range(3, 9))}),
    # quick: the series' own runs at d = 16, 64 (seeds, horizon and stop None: the series'), so the
    # chain costs nothing extra and only q25 and the median are measured (stop 0.7 < 0.75)
    "quick": dict(link="h3", ds=(16, 64), seeds=None, stop=None, horizon=None, paths=500, at_series_d=False,
                  extension={3: (10**5, 10**8)}),
}
SDE_LIMIT_D = 10**12  # the "d -> infinity" SDE point: mu1 = 5e5, the time left from mu1 is < 1e-3 of the median
SDE_HORIZON = 1.5  # SDE horizon: this times the series' horizon (in s = samples / d^{k-1}) at its largest d
QUARTILES = (0.25, 0.5, 0.75)
PARTS = ("series", "batch", "trajectory", "sde")
SDE_NOT_COVERED = {
    1: "k = 1: the series' step eta = delta/d is not the diffusion scaling eta ~ d^{-1/2}; in it the overlap "
       "moves by O(1) in O(d) samples and the ODE, not an SDE, is the limit",
    2: "k = 2: the diffusion describes mu = sqrt(d) m = O(1), but from there to m = 0.5 the chain spends O(d) "
       "samples in the nonlinear descent, the same order as the search's d log d up to a log: the SDE's escape "
       "time at m = 0.5 converges to the chain's only in relative error O(1/log d), not d^{-1/2}",
}
RECONSTRUCTED = [
    "the SDE part runs the chain on the series' own protocol (square loss, spherical, batch d/4, delta = 1/32, "
    "start conditioned on m0 > 0), which the SDE covers: delta' = lr d^{3/2} / batch = delta; the batch d/4 adds "
    "corrections of order sqrt(batch / d^2) = d^{-1/2}/2, inside the fitted d^{-1/2} trend",
    "chain runs of the SDE part end once 80% of the seeds escaped (stop_fraction = 0.8, the series use 0.7): "
    "the upper quartile and its interval need 79% at 512 seeds",
    "the d -> infinity limit is the SDE at d = 10^12 (mu1 = 5e5, start law |N(0, 1)| to 1e-12)",
    "the finite-d trend is a straight line in d^{-1/2} through the chain's quartiles at each d (weighted least "
    "squares, errors inflated by sqrt(chi2/dof) when above 1); the order d^{-1/2} is that of the leading "
    "corrections (escape threshold mu1 = sqrt(d)/2 and the m-dependence of the noise and curvature terms)",
    "SDE horizon: 1.5 times the series' horizon in s at its largest d; SDE extension only for k >= 3",
]


def _batch(series: Series, d: int) -> int:
    return max(1, round(d * series.batch_per_d))


def _config(link: str, d: int, k: int, delta: float, batch: int, steps: int, seeds: int, init, engine: str,
            stop: float | None, seed: int = 0) -> dict:
    eta = theory_lr(k, d, delta, log_step=False)
    return matched_config(link, d, seeds=seeds, seed=seed, engine=engine, loss="square", lr=eta * batch, batch=batch,
                          steps=steps, spherical=True, init=init, stop_fraction=stop)


def _horizon_steps(link: str, k: int, d: int, delta: float, batch: int, mult: float) -> int:
    eta = theory_lr(k, d, delta, log_step=False)
    t = escape_steps_effective(link, 1.0 / math.sqrt(d), 0.5, eta, d)
    if not math.isfinite(t):
        raise ConfigError(f"delta: got {delta:.4g} for {link} at d={d}; allowed: below the critical delta")
    return max(10, int(math.ceil(mult * t / batch)))


def _series_points(series: Series, engine: str, seed: int) -> list[Point]:
    k = series.k()
    delta = series.step_delta()
    init = "random_positive" if k % 2 else "random"
    pts = []
    for d in series.ds:
        if engine == "full" and d > FULL_ENGINE_MAX_D:
            continue
        b = _batch(series, d)
        steps = _horizon_steps(series.link, k, d, delta, b, series.horizon)
        cfg = _config(series.link, d, k, delta, b, steps, series.seeds_at(d), init, engine, STOP_FRACTION, seed)
        pts.append(Point({"part": "series", "link": series.link, "k": k, "d": d, "batch": b, "delta": delta}, cfg))
    return pts


def _batch_points(spec: dict, series: Sequence[Series], engine: str, seed: int) -> list[Point]:
    s = next((x for x in series if x.link == spec["link"]), None)
    if s is None:
        return []
    k, delta, d = s.k(), s.step_delta(), spec["d"]
    init = "random_positive" if k % 2 else "random"
    pts = []
    for b in spec["batches"]:
        steps = _horizon_steps(s.link, k, d, delta, b, s.horizon)
        cfg = _config(s.link, d, k, delta, b, steps, spec["seeds"], init, engine, STOP_FRACTION, seed)
        pts.append(Point({"part": "batch", "link": s.link, "k": k, "d": d, "batch": b, "delta": delta}, cfg))
    return pts


def _trajectory_points(spec: dict, series: Sequence[Series], seed: int) -> list[Point]:
    link, d = spec["link"], spec["d"]
    s = next((x for x in series if x.link == link), Series(link, (d,), seeds=1))
    k, delta = s.k(), s.step_delta()
    b = _batch(s, d)
    m0 = 1.0 / math.sqrt(d)
    eta = theory_lr(k, d, delta, log_step=False)
    t_eff = escape_steps_effective(link, m0, 0.5, eta, d)
    steps = max(10, int(math.ceil(3.0 * t_eff / b)))
    pts = []
    for engine, seeds in (("chain", spec["chain_seeds"]), ("full", spec["full_seeds"]), ("ode", 1)):
        cfg = _config(link, d, k, delta, b, steps, seeds, m0, engine, None, seed)
        cfg["train"]["record_every"] = max(1, steps // 400)
        if engine == "full":
            cfg["full"] = {"dtype": "float64"}
        pts.append(Point({"part": "trajectory", "engine": engine, "link": link, "d": d, "batch": b}, cfg))
    return pts


def plan(
    *,
    quick: bool = False,
    engine: str = "chain",
    links: Sequence[str] | None = None,
    seeds: int | None = None,
    seed: int = 0,
    parts: Sequence[str] | None = None,
) -> tuple[list[Series], list[Point]]:
    """The series and every run of the reproduction (nothing is run). Runs can be computed
    anywhere into a store (e.g. the expensive ones on an accelerator, :func:`cost`) and
    :func:`reproduce` then reads them back. ``parts``: a subset of :data:`PARTS`
    (default all)."""
    require_engine(engine, ("chain", "full"))
    mode = "quick" if quick else "full"
    series = list(QUICK if quick else FULL)
    if links:
        series = [_series_for(link, series) for link in links]
    if seeds is not None:
        series = [replace(s, seeds=seeds, seeds_large=None) for s in series]
    parts = _parts(parts)
    pts = [p for s in series for p in _series_points(s, engine, seed)] if "series" in parts else []
    if "batch" in parts:
        pts += _batch_points(BATCH_CHECK[mode], series, engine, seed)
    if "trajectory" in parts:
        pts += _trajectory_points(TRAJECTORY[mode], series, seed)
    if "sde" in parts:
        pts += _sde_points(SDE_PART[mode], series, engine, seed, seeds)
    return series, pts


def _parts(parts) -> tuple[str, ...]:
    if parts is None:
        return PARTS
    out = tuple(parts)
    bad = [p for p in out if p not in PARTS]
    if bad or not out:
        raise ConfigError(f"parts: got {list(parts)!r}; allowed: a non-empty list of {', '.join(PARTS)}")
    return out


def _sde_horizon_s(s: Series, k: int) -> float:
    """The SDE's horizon in s = samples / d^{k-1}: SDE_HORIZON times the series' horizon at its
    largest d (the effective dynamics' integral is evaluated there, not at d = 10^12)."""
    d = max(s.ds)
    b = _batch(s, d)
    return SDE_HORIZON * _horizon_steps(s.link, k, d, s.step_delta(), b, s.horizon) * b / d ** (k - 1)


def _sde_points(spec: dict, series: Sequence[Series], engine: str, seed: int, seeds: int | None) -> list[Point]:
    """The SDE part: the chain at ``spec["ds"]`` run past the upper quartile, and SDE points
    (the same protocol; one path per seed) at those d, at the series' d, at the extension d and
    at SDE_LIMIT_D, for every series with k >= 3."""
    pts = []
    for s in series:
        k = s.k()
        if k < 3:
            continue
        delta = s.step_delta()
        init = "random_positive" if k % 2 else "random"
        quart = s.link == spec["link"]
        if quart:
            for d in spec["ds"]:
                b = _batch(s, d)
                steps = _horizon_steps(s.link, k, d, delta, b, spec["horizon"] or s.horizon)
                n = seeds or spec["seeds"] or s.seeds_at(d)
                cfg = _config(s.link, d, k, delta, b, steps, n, init, engine, spec["stop"] or STOP_FRACTION, seed)
                pts.append(Point({"part": "sde_chain", "link": s.link, "k": k, "d": d, "batch": b}, cfg))
        s_T = _sde_horizon_s(s, k)
        ds = set(spec["extension"].get(k, ()))
        ds |= set(spec["ds"]) | {SDE_LIMIT_D} if quart else set()
        ds |= set(s.ds) if spec["at_series_d"] else set()
        for d in sorted(ds):
            b = _batch(s, d)
            steps = max(10, math.ceil(s_T * d ** (k - 1) / b))
            if steps >= 2**62:  # beyond the int64 step counter of a Result
                continue
            cfg = _config(s.link, d, k, delta, b, steps, spec["paths"], init, "sde", None, seed)
            pts.append(Point({"part": "sde", "link": s.link, "k": k, "d": d, "batch": b,
                              "limit": d == SDE_LIMIT_D}, cfg))
    return pts


def reproduce(
    *,
    quick: bool = False,
    engine: str = "chain",
    store: str | Path = "results/store",
    out: str | Path | None = None,
    links: Sequence[str] | None = None,
    seeds: int | None = None,
    workers: int | None = None,
    progress: bool = False,
    seed: int = 0,
    parts: Sequence[str] | None = None,
    base: str | Path | None = None,
) -> Outputs:
    """Run (or read back from ``store``) every run of the reproduction and write
    ``scaling.png``, ``trajectories.png``, ``sde_quartiles.png``, ``table.md`` and
    ``results.json`` into ``out`` (default ``results/reproduce/info-exponent[-quick]``).
    ``links`` replaces the series' links (each named link gets the d-grid of the matching
    default series, or of h3 for a link of exponent >= 3); ``seeds`` overrides the seeds per
    point (of the series, the batch check and the SDE part's chain runs).

    ``parts`` (a subset of :data:`PARTS`, default all) runs only those parts; ``base``, the
    ``results.json`` of an earlier run of the same mode, supplies the parts not run (their
    summaries, table sections, provenance and compute time; the scaling figure is redrawn from
    its series rows), so that e.g. ``parts=["sde"], base=".../results.json"`` adds the SDE part
    to committed outputs without recomputing the series. A figure whose part is neither run
    nor drawable from ``base`` (``trajectories.png``) is not written, so an earlier copy in
    ``out`` stays."""
    started = time.perf_counter()
    mode = "quick" if quick else "full"
    parts = _parts(parts)
    series, pts = plan(quick=quick, engine=engine, links=links, seeds=seeds, seed=seed, parts=parts)
    out = Path(out) if out is not None else Path("results/reproduce") / ("info-exponent" + ("-quick" if quick else ""))
    prior = _read_base(base, mode, parts)
    results, rows = run_points(pts, store=store, workers=workers, progress=progress, order=cost)

    def part_idx(name):
        return [i for i, p in enumerate(pts) if p.tags["part"] == name]

    summary = {"mode": mode, "engine": engine, "protocol": {
        "loss": "square", "geometry": "spherical", "escape_threshold": 0.5, "stop_fraction": STOP_FRACTION,
        "step": "eta = delta/d (k <= 2), delta d^{-k/2} (k >= 3); lr = batch * eta",
        "batch": "max(1, round(batch_per_d * d))",
    }}
    figures = {}
    # ---- scaling per series
    if "series" in parts:
        summary_series = {}
        for s in series:
            idx = [i for i in part_idx("series") if pts[i].tags["link"] == s.link]
            summary_series[s.link] = _series_summary(s, [pts[i] for i in idx], [results[i] for i in idx],
                                                     [rows[i] for i in idx])
        summary["series"] = summary_series
    # ---- batch check
    if "batch" in parts:
        batch_rows = []
        for i in part_idx("batch"):
            _, row = escape_row(results[i])
            batch_rows.append({"batch": pts[i].tags["batch"], "d": pts[i].tags["d"], "link": pts[i].tags["link"],
                               **row})
        summary["batch_check"] = batch_rows
    # ---- trajectories
    if "trajectory" in parts:
        traj = {pts[i].tags["engine"]: results[i] for i in part_idx("trajectory")}
        tspec = TRAJECTORY[mode]
        traj_summary = {}
        for name, res in traj.items():
            e = np.asarray(res.escape_step)
            traj_summary[name] = {
                "seeds": int(e.size),
                "median_escape_samples": None
                if (e >= 0).mean() < 0.5
                else float(np.median(np.where(e >= 0, e, np.inf))) * res.batch,
                "fraction_escaped": float((e >= 0).mean()),
            }
        summary["trajectory"] = {"link": tspec["link"], "d": tspec["d"], "m0": 1 / math.sqrt(tspec["d"]),
                                 **traj_summary}
        figures["trajectories.png"] = _trajectory_figure(traj, tspec)
    # ---- the SDE part
    if "sde" in parts:
        idx = part_idx("sde_chain") + part_idx("sde")
        summary["sde"] = _sde_summary(SDE_PART[mode], series, [pts[i] for i in idx], [results[i] for i in idx],
                                      [rows[i] for i in idx])
        if summary["sde"]["quartiles"] is not None:
            figures["sde_quartiles.png"] = _sde_quartile_figure(summary["sde"]["quartiles"])
    by_part = {p: 0.0 for p in parts}  # run time (the store's wall time of each run) per part
    for pt, r in zip(pts, rows, strict=True):
        by_part[_row_part(pt.tags)] += float(r.get("wall_time") or 0.0)
    provenance_rows = provenance(pts, rows)
    if prior is not None:
        for key in ("series", "batch_check", "trajectory", "sde"):
            if key not in summary and key in prior:
                summary[key] = prior[key]
        # outputs written before the per-part record: all their compute time belongs to their parts
        prior_by = prior.get("compute_s_by_part") or {"base": float(prior.get("compute_s") or 0.0)}
        summary["merged"] = {
            "base": str(base), "parts_run": list(parts),
            "parts_from_base": [p for p in PARTS if p not in parts and _PART_KEYS[p] in prior],
            "base_compute_s": prior.get("compute_s"), "base_wall_time_s": prior.get("wall_time_s"),
            "compute_s_this_run": sum(by_part.values()),
        }
        by_part = {**{k: v for k, v in prior_by.items() if k not in parts}, **by_part}
        # the base's provenance of the parts not run here, then this run's
        kept = [r for r in prior.get("runs_computed_on", []) if _row_part(r) not in parts]
        if "runs_computed_on" not in prior:  # outputs written before per-run provenance: the base's own device
            kept = [{"part": "base", "computed_on": prior.get("device") or "device not recorded"}]
        provenance_rows = kept + provenance_rows
    summary["compute_s_by_part"] = by_part
    summary["compute_s"] = float(sum(by_part.values()))
    if "series" in summary or "sde" in summary:
        figures["scaling.png"] = _scaling_figure(summary.get("series", {}), (summary.get("sde") or {}).get("scaling"))
    return write_outputs(out, name="info-exponent", summary=summary, table=_table(summary), figures=figures,
                         started=started, points=provenance_rows)


_PART_KEYS = {"series": "series", "batch": "batch_check", "trajectory": "trajectory", "sde": "sde"}


def _row_part(row: dict) -> str:
    p = row.get("part")
    return "sde" if p in ("sde", "sde_chain") else p


def _read_base(base, mode: str, parts: Sequence[str]) -> dict | None:
    if base is None:
        return None
    import json

    path = Path(base)
    try:
        prior = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"base: got {str(base)!r} ({e}); allowed: the results.json of an info-exponent run") from e
    if prior.get("reproduction") != "info-exponent" or prior.get("mode") != mode:
        raise ConfigError(f"base: got {str(base)!r} (reproduction {prior.get('reproduction')!r}, mode "
                          f"{prior.get('mode')!r}); allowed: the results.json of an info-exponent {mode} run")
    return prior


def _series_summary(s: Series, pts: Sequence[Point], results, rows) -> dict:
    k = s.k()
    theory = theory_exponent(k)
    stats, point_rows = [], []
    for p, res, r in zip(pts, results, rows, strict=True):
        st, row = escape_row(res)
        d = p.tags["d"]
        scale = d**theory * (math.log(d) if k == 2 else 1.0)
        point_rows.append({
            "link": s.link, "k": k, "d": d, "batch": p.tags["batch"], "lr": p.config["train"]["lr"],
            **row, "median_over_theory": None if row["median_samples"] is None else row["median_samples"] / scale,
            "wall_time_s": r.get("wall_time"),
            "effective_samples": _effective_samples(s.link, k, d, s.step_delta()),
        })
        stats.append(st)
    ds = [p.tags["d"] for p in pts]
    _, fitrow = fit_row(ds, stats, theory, log_correction=k == 2)
    fitrow.update(_effective_slope(s, k, ds, fitrow))
    return {
        "k": k, "delta": s.step_delta(), "delta_fraction_of_critical": None if k == 1 else s.delta_fraction,
        "batch_per_d": s.batch_per_d, "seeds": s.seeds, "horizon_multiple": s.horizon,
        "init": "random_positive" if k % 2 else "random", "fit": fitrow, "points": point_rows,
    }


def _table(summary: dict) -> str:
    fmt, f3 = fmt_g(), fmt_g(".3f")
    table = ""
    ser = summary.get("series") or {}
    if ser:
        table_rows = [row for s in ser.values() for row in s["points"]]
        table += "## Median escape samples (m = 0.5)\n\n" + markdown_table(table_rows, [
            ("link", "link", str), ("k", "k", str), ("d", "d", str), ("batch", "batch", str), ("lr", "lr", fmt),
            ("n_seeds", "seeds", str), ("fraction_escaped", "escaped", f3),
            ("median_samples", "median samples", fmt), ("median_samples_lo", "CI low", fmt),
            ("median_samples_hi", "CI high", fmt), ("effective_samples", "effective dynamics", fmt),
            ("median_over_theory", "median / d^theory", fmt),
        ])
        fit_rows = [{"link": link, "k": s["k"], **s["fit"]} for link, s in ser.items()]
        for r in fit_rows:
            r["ci_text"] = "-" if r.get("ci") is None else f"[{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]"
            r["law"] = "d log d" if r["k"] == 2 else f"d^{r['theory']:g}"
        table += "\n## Fitted exponents\n\n" + markdown_table(fit_rows, [
            ("link", "link", str), ("k", "k", str), ("law", "theory", str), ("slope", "fitted", f3),
            ("ci_text", "95% CI", str), ("chi2_red", "chi2/dof", fmt), ("theory_in_ci", "theory in CI", str),
            ("effective_slope", "effective dynamics, same d", f3), ("effective_in_ci", "in CI", str),
        ])
    if summary.get("batch_check"):
        table += "\n## Batch check (same per-sample step)\n\n" + markdown_table(summary["batch_check"], [
            ("link", "link", str), ("d", "d", str), ("batch", "batch", str), ("n_seeds", "seeds", str),
            ("fraction_escaped", "escaped", f3), ("median_samples", "median samples", fmt),
            ("median_samples_lo", "CI low", fmt), ("median_samples_hi", "CI high", fmt),
        ])
    if summary.get("sde"):
        table += _sde_table(summary["sde"])
    return table


def _series_for(link: str, defaults: Sequence[Series]) -> Series:
    probe = Series(link, (), seeds=1)
    k = probe.k()
    for s in defaults:
        if s.link == link:
            return s
    like = next((s for s in defaults if s.k() == min(k, 3)), defaults[-1])
    return replace(like, link=link)


def _effective_slope(s: Series, k: int, ds: Sequence[int], fitrow: dict) -> dict:
    """The slope the effective dynamics (:func:`sgdlab.theory.escape_steps_effective`, from
    m0 = d^{-1/2}, noise-free) has over the same dimensions, fitted the same way: the
    finite-d prediction, which differs from the asymptotic exponent by the d-dependence of
    the start (the integral from d^{-1/2} converges slowly for k <= 2)."""
    x = np.log(np.asarray(ds, dtype=float))
    y = np.log([_effective_samples(s.link, k, int(d), s.step_delta()) for d in ds])
    if k == 2:
        y = y - np.log(x)
    slope = float(np.polyfit(x, y, 1)[0]) if len(ds) >= 2 else None
    ci = fitrow.get("ci")
    return {
        "effective_slope": slope,
        "effective_in_ci": None if slope is None or ci is None else bool(ci[0] <= slope <= ci[1]),
    }


def _effective_samples(link: str, k: int, d: int, delta: float) -> float:
    eta = theory_lr(k, d, delta, log_step=False)
    return float(escape_steps_effective(link, 1.0 / math.sqrt(d), 0.5, eta, d))


def _escape_s(res, k: int) -> np.ndarray:
    """Per-seed escape time s = samples / d^{k-1} (inf where censored)."""
    e = np.asarray(res.escape_step, dtype=np.float64)
    return np.where(np.isnan(e) | (e < 0), np.inf, e * res.batch / float(res.d) ** (k - 1))


def _quartile_row(res, k: int) -> dict:
    t = _escape_s(res, k)
    row = {"d": int(res.d), "batch": int(res.batch), "n": int(t.size),
           "fraction_escaped": float(np.isfinite(t).mean())}
    for q in QUARTILES:
        row[f"q{int(q * 100)}"] = _finite_q(quantile_interval(t, q))
    return row


def _finite_q(qi: dict) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in qi.items()}


def _dt_check(res) -> dict:
    c = (res.info.get("sde") or {}).get("dt_check") or {}
    return {"dt_max_change_in_se": c.get("max_change_in_se"), "dt_converged": c.get("converged")}


def _sde_summary(spec: dict, series: Sequence[Series], pts: Sequence[Point], results, rows) -> dict:
    """The SDE part's numbers: the quartiles of s = samples / d^{k-1} of the chain and of the SDE
    at each d of ``spec``, the SDE's d -> infinity quartiles, the chain's d^{-1/2}
    extrapolation against them, and the SDE's median samples per series (scaling figure)."""
    by = {(p.tags["part"], p.tags["link"], p.tags["d"]): i for i, p in enumerate(pts)}
    out = {"protocol": {
        "sde": "d mu = [delta' k A_k mu^{k-1} - (delta'^2/2) V0 mu] ds + delta' sqrt(W0) dB, s = samples / d^{k-1}, "
               "mu = sqrt(d) m, delta' = lr d^{k/2} / batch (docs/sde.md)",
        "paths": spec["paths"], "chain_seeds": None, "chain_stop_fraction": spec["stop"] or STOP_FRACTION,
        "chain_horizon_multiple": spec["horizon"], "limit_d": SDE_LIMIT_D, "sde_horizon_multiple": SDE_HORIZON,
        "quartile_ci": "order statistics: ranks from Binomial(n, q) at 95%; se = CI width / 3.92",
    }, "reconstructed": list(RECONSTRUCTED), "quartiles": None, "scaling": {}, "scaling_fit": {},
        "not_covered": {}}
    for s in series:
        k = s.k()
        if k < 3:
            out["not_covered"][s.link] = SDE_NOT_COVERED.get(k, "k < 3")
            continue
        srows = []
        for (part, link, d), i in sorted(by.items(), key=lambda kv: kv[0][2]):
            if part != "sde" or link != s.link or d == SDE_LIMIT_D:
                continue
            _, row = escape_row(results[i])
            srows.append({"link": link, "k": k, "d": d, "batch": pts[i].tags["batch"], **row,
                          "median_s": None if row["median_samples"] is None else row["median_samples"] / d ** (k - 1),
                          **_dt_check(results[i]), "wall_time_s": rows[i].get("wall_time")})
        out["scaling"][s.link] = srows
        # the exponent over the extension (d beyond the series) and over the series' own d, where
        # the SDE's finite-threshold correction tilts it as it tilts the chain's
        beyond = [r for r in srows if r["d"] > max(s.ds)]
        within = [r for r in srows if r["d"] in s.ds]
        for name, sel in (("scaling_fit", beyond), ("scaling_fit_series_d", within)):
            pick = [r for r in sel if r["median_samples"] is not None]
            if len(pick) >= 2:
                stats = [escape_row(results[by[("sde", s.link, r["d"])]])[0] for r in pick]
                out.setdefault(name, {})[s.link] = {
                    **fit_row([r["d"] for r in pick], stats, theory_exponent(k))[1],
                    "d_range": [pick[0]["d"], pick[-1]["d"]]}
    link = spec["link"]
    ser = next((x for x in series if x.link == link), None)
    if ser is None or ("sde", link, SDE_LIMIT_D) not in by:
        out["compute_s"] = float(sum((r.get("wall_time") or 0.0) for r in rows))
        return out
    k = ser.k()
    chain = []
    for d in spec["ds"]:
        i = by[("sde_chain", link, d)]
        chain.append({**_quartile_row(results[i], k), "wall_time_s": rows[i].get("wall_time")})
    same = []
    for d in spec["ds"]:
        i = by[("sde", link, d)]
        same.append({**_quartile_row(results[i], k), **_dt_check(results[i])})
    i = by[("sde", link, SDE_LIMIT_D)]
    limit = {**_quartile_row(results[i], k), **_dt_check(results[i])}
    out["protocol"]["chain_seeds"] = chain[0]["n"]
    extra = {}
    x = np.array([d**-0.5 for d in spec["ds"]])
    for q in QUARTILES:
        key = f"q{int(q * 100)}"
        y = [c[key]["value"] for c in chain]
        se = [c[key]["se"] for c in chain]
        try:
            fit = extrapolate_linear(x, [math.inf if v is None else v for v in y],
                                     [math.inf if v is None else v for v in se])
        except ValueError as e:
            extra[key] = {"error": str(e)}
            continue
        lim, lim_se = limit[key]["value"], limit[key]["se"]
        gap = None if lim is None or lim_se is None else (fit["intercept"] - lim) / math.hypot(fit["intercept_se"],
                                                                                             lim_se)
        # chain minus SDE at the same d, in units of the combined standard error
        z_same = [None if c[key]["value"] is None or m[key]["value"] is None or c[key]["se"] is None
                  or m[key]["se"] is None else (c[key]["value"] - m[key]["value"]) / math.hypot(c[key]["se"],
                                                                                                   m[key]["se"])
                  for c, m in zip(chain, same, strict=True)]
        extra[key] = {**fit, "sde_limit": lim, "sde_limit_se": lim_se, "gap_in_se": gap,
                      "limit_in_ci": None if lim is None else bool(fit["intercept_ci"][0] <= lim
                                                                  <= fit["intercept_ci"][1]),
                      "chain_minus_sde_same_d_in_se": z_same}
    out["quartiles"] = {"link": link, "k": k, "delta": ser.step_delta(), "batch_per_d": ser.batch_per_d,
                        "ds": list(spec["ds"]), "chain": chain, "sde_same_d": same, "sde_limit": limit,
                        "extrapolation": extra}
    out["compute_s"] = float(sum((r.get("wall_time") or 0.0) for r in rows))
    return out


def _sde_table(sde: dict) -> str:
    fmt, f2 = fmt_g(), fmt_g(".2f")
    table = ""
    qs = sde.get("quartiles")
    if qs:
        rows = []
        for c, m in zip(qs["chain"], qs["sde_same_d"], strict=True):
            for who, r in (("chain", c), ("SDE", m)):
                rows.append({"who": who, "d": r["d"], "n": r["n"], "fraction_escaped": r["fraction_escaped"],
                             **{f"q{int(q * 100)}": _q_text(r[f"q{int(q * 100)}"]) for q in QUARTILES}})
        lim = qs["sde_limit"]
        rows.append({"who": "SDE, d -> inf", "d": lim["d"], "n": lim["n"], "fraction_escaped": lim["fraction_escaped"],
                     **{f"q{int(q * 100)}": _q_text(lim[f"q{int(q * 100)}"]) for q in QUARTILES}})
        ext = {"who": "chain, d^{-1/2} fit at d -> inf", "d": "inf", "n": "-", "fraction_escaped": None}
        for q in QUARTILES:
            e = qs["extrapolation"].get(f"q{int(q * 100)}", {})
            ext[f"q{int(q * 100)}"] = ("-" if "intercept" not in e else
                                       f"{e['intercept']:.3g} [{e['intercept_ci'][0]:.3g}, {e['intercept_ci'][1]:.3g}]")
        rows.append(ext)
        table += (f"\n## Escape-time quartiles, s = samples / d^{qs['k'] - 1} ({qs['link']}; chain vs SDE; "
                  "95% CI)\n\n") + markdown_table(rows, [
            ("who", "engine", str), ("d", "d", str), ("n", "seeds / paths", str),
            ("fraction_escaped", "escaped", fmt_g(".3f")), ("q25", "q25", str), ("q50", "median", str),
            ("q75", "q75", str)])
        gaps = [{"q": q, **qs["extrapolation"].get(f"q{int(q * 100)}", {})} for q in QUARTILES]
        table += "\n## Chain's d^{-1/2} extrapolation against the SDE limit\n\n" + markdown_table(gaps, [
            ("q", "quantile", str), ("intercept", "chain at d -> inf", fmt), ("intercept_se", "se", fmt),
            ("slope", "slope in d^{-1/2}", fmt), ("chi2_red", "chi2/dof", fmt), ("sde_limit", "SDE limit", fmt),
            ("sde_limit_se", "se", fmt), ("gap_in_se", "gap / se", f2), ("limit_in_ci", "limit in 95% CI", str)])
    srows = [r for rows_ in sde.get("scaling", {}).values() for r in rows_]
    if srows:
        table += "\n## SDE median escape samples (the scaling figure's SDE points)\n\n" + markdown_table(srows, [
            ("link", "link", str), ("k", "k", str), ("d", "d", fmt), ("batch", "batch", fmt),
            ("n_seeds", "paths", str), ("fraction_escaped", "escaped", fmt_g(".3f")),
            ("median_samples", "median samples", fmt), ("median_samples_lo", "CI low", fmt),
            ("median_samples_hi", "CI high", fmt), ("median_s", "median / d^{k-1}", fmt),
            ("dt_max_change_in_se", "dt check (se)", f2)])
    fits = [{"link": link, "over": "extension", **f} for link, f in sde.get("scaling_fit", {}).items()]
    fits += [{"link": link, "over": "series' d", **f} for link, f in sde.get("scaling_fit_series_d", {}).items()]
    if fits:
        for r in fits:
            r["ci_text"] = "-" if r.get("ci") is None else f"[{r['ci'][0]:.4f}, {r['ci'][1]:.4f}]"
            r["d_text"] = "-" if r.get("d_range") is None else f"{r['d_range'][0]:g} .. {r['d_range'][1]:g}"
        table += "\n## SDE exponent of the median samples\n\n" + markdown_table(fits, [
            ("link", "link", str), ("over", "over", str), ("d_text", "d", str), ("theory", "theory", fmt),
            ("slope", "fitted", fmt_g(".4f")), ("ci_text", "95% CI", str), ("theory_in_ci", "theory in CI", str)])
    if sde.get("not_covered"):
        table += "\n## Not covered by the SDE\n\n" + "".join(f"- {k}: {v}\n" for k, v in sde["not_covered"].items())
    return table


def _q_text(q: dict) -> str:
    if q["value"] is None:
        return "censored"
    hi = "inf" if q["hi"] is None else f"{q['hi']:.3g}"
    return f"{q['value']:.3g} [{q['lo']:.3g}, {hi}]"


def _sde_quartile_figure(qs: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(6.6, 4.8))
    ds = np.asarray(qs["ds"], dtype=float)
    x = ds**-0.5
    xmax = float(x.max()) * 1.08
    for j, q in enumerate(QUARTILES):
        key, c = f"q{int(q * 100)}", f"C{j}"
        ch = [r[key] for r in qs["chain"]]
        v = np.array([np.nan if r["value"] is None else r["value"] for r in ch])
        lo = np.array([np.nan if r["lo"] is None else r["lo"] for r in ch])
        hi = np.array([np.nan if r["hi"] is None else r["hi"] for r in ch])
        ax.errorbar(x, v, yerr=[v - lo, np.where(np.isfinite(hi), hi, v) - v], fmt="o", color=c, ms=5, capsize=3)
        sm = np.array([np.nan if r[key]["value"] is None else r[key]["value"] for r in qs["sde_same_d"]])
        ax.plot(x, sm, "s", mfc="none", color=c, ms=7)
        lim = qs["sde_limit"][key]
        if lim["value"] is not None:
            ax.errorbar([0.0], [lim["value"]], yerr=[[lim["value"] - lim["lo"]], [(lim["hi"] or lim["value"])
                                                                                  - lim["value"]]],
                        fmt="*", color=c, ms=12, capsize=3)
        e = qs["extrapolation"].get(key, {})
        if "intercept" in e:
            grid = np.linspace(0.0, xmax, 20)
            ax.plot(grid, e["intercept"] + e["slope"] * grid, "--", color=c, lw=1)
            ax.errorbar([0.015 * xmax], [e["intercept"]],
                        yerr=[[e["intercept"] - e["intercept_ci"][0]], [e["intercept_ci"][1] - e["intercept"]]],
                        fmt="D", mfc="none", color=c, ms=5, capsize=3)
    ax.set_xlim(-0.02 * xmax, xmax)
    ax.set_xlabel("d^(-1/2)")
    ax.set_ylabel(f"escape time s = samples / d^{qs['k'] - 1} (to m = 0.5)")
    top = ax.secondary_xaxis("top")
    top.set_xticks(x)
    top.set_xticklabels([f"d={int(d)}" for d in ds], fontsize=7)
    n_chain, n_sde = qs["chain"][0]["n"], qs["sde_limit"]["n"]
    styles = [
        Line2D([], [], color="grey", marker="o", ls="none", label=f"chain, {n_chain} seeds (95% CI)"),
        Line2D([], [], color="grey", marker="s", mfc="none", ls="none", label=f"SDE at the same d, {n_sde} paths"),
        Line2D([], [], color="grey", marker="*", ms=10, ls="none",
               label=f"SDE limit (d = {_d_text(qs['sde_limit']['d'])})"),
        Line2D([], [], color="grey", ls="--", marker="D", mfc="none",
               label="chain: fit a + b d^(-1/2), a with 95% CI"),
    ]
    colours = [Line2D([], [], color=f"C{j}", lw=3, label=f"q = {q:g}") for j, q in enumerate(QUARTILES)]
    leg = ax.legend(handles=styles, fontsize=7, loc="upper right")
    ax.add_artist(leg)
    ax.legend(handles=colours, fontsize=7, loc="upper left", title="quartile", title_fontsize=7)
    ax.set_title(f"{qs['link']} (k = {qs['k']}), delta = {qs['delta']:.4g}, batch = d/{round(1 / qs['batch_per_d'])}: "
                 "escape-time quartiles of the chain and the SDE vs d", fontsize=9)
    ax.grid(True, alpha=0.3)
    return fig


def _scaling_figure(summary_series: dict, sde_scaling: dict | None = None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 5.0))
    sde_scaling = sde_scaling or {}
    links = list(summary_series) + [x for x in sde_scaling if x not in summary_series]
    for i, link in enumerate(links):
        c, s = f"C{i}", summary_series.get(link)
        d_hi, d_lo = 0.0, math.inf
        if s is not None:
            k, pts_ = s["k"], s["points"]
            ds_a = np.array([p["d"] for p in pts_], dtype=float)
            med = np.array([np.nan if p["median_samples"] is None else p["median_samples"] for p in pts_])
            lo = np.array([np.nan if p["median_samples_lo"] is None else p["median_samples_lo"] for p in pts_])
            hi = np.array([np.inf if p["median_samples_hi"] is None else p["median_samples_hi"] for p in pts_])
            ok = np.isfinite(med)
            hi_c = np.where(np.isfinite(hi), hi, med * 10)
            fit = s["fit"]
            label = f"{link} (k={k}) chain" + (
                f": slope {fit['slope']:.2f} [{fit['ci'][0]:.2f}, {fit['ci'][1]:.2f}]" if fit.get("slope") is not None
                else "")
            ax.errorbar(ds_a[ok], med[ok], yerr=[med[ok] - lo[ok], hi_c[ok] - med[ok]], fmt="o", color=c, ms=4,
                        capsize=2, label=label)
            eff = np.array([_effective_samples(link, k, int(d), s["delta"]) for d in ds_a])
            ax.plot(ds_a, eff, ":", color=c, lw=1)
            d_hi, d_lo = ds_a.max(), ds_a.min()
        srows = [r for r in sde_scaling.get(link, []) if r["median_samples"] is not None]
        if srows:
            sd = np.array([r["d"] for r in srows], dtype=float)
            sm = np.array([r["median_samples"] for r in srows])
            slo = np.array([r["median_samples_lo"] for r in srows])
            shi = np.array([sm[j] if r["median_samples_hi"] is None else r["median_samples_hi"]
                            for j, r in enumerate(srows)])
            ax.errorbar(sd, sm, yerr=[sm - slo, shi - sm], fmt="D", mfc="none", color=c, ms=5, capsize=2,
                        label=f"{link} (k={srows[0]['k']}) SDE (diffusion limit), {srows[0]['n_seeds']} paths: "
                              f"d = {_d_text(sd.min())}..{_d_text(sd.max())}")
            d_hi = max(d_hi, sd.max())
        if s is not None and fit.get("slope") is not None:
            th = theory_exponent(k)
            x0 = math.exp(np.mean(np.log(ds_a[ok])))
            y0 = math.exp(fit["intercept"] + fit["slope"] * math.log(x0)) * (math.log(x0) if k == 2 else 1.0)
            grid = np.geomspace(d_lo, d_hi, 80)
            corr = np.log(grid) / math.log(x0) if k == 2 else 1.0
            ax.plot(grid, y0 * (grid / x0) ** th * corr, "--", color=c, lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("d")
    ax.set_ylabel("median samples to m = 0.5")
    ax.set_title("Information exponent: escape samples vs d (bars: 95% CI)\n"
                 "dashed: theory slope (d, d log d, d^{k-1}) through the chain's fit; dotted: effective dynamics "
                 "from m0 = d^{-1/2}", fontsize=8)
    ax.legend(fontsize=6.5, loc="upper left")
    ax.grid(True, which="both", alpha=0.3)
    return fig


def _d_text(d: float) -> str:
    e = math.log10(d)
    return f"1e{round(e)}" if abs(e - round(e)) < 1e-9 and d >= 1e4 else f"{int(d)}"


def _trajectory_figure(traj, spec):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    colors = {"chain": "C0", "full": "C1", "ode": "k"}
    for name, res in traj.items():
        t = np.asarray(res.steps, dtype=float) * res.batch / res.d
        m = res.overlap()[:, :, 0, 0]
        if name == "ode":
            ax.plot(t, m[0], color="k", lw=2, label="ODE (with the eta^2 term)")
            continue
        for j in range(min(8, m.shape[0])):
            ax.plot(t, m[j], color=colors[name], lw=0.5, alpha=0.5)
        ax.plot(t, np.nanmedian(m, axis=0), color=colors[name], lw=2, label=f"{name}: median of {m.shape[0]} seeds")
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("t = samples / d")
    ax.set_ylabel("overlap m")
    ax.set_title(f"{spec['link']}, d = {spec['d']}, m0 = d^(-1/2): long search phase, short descent", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    return fig


def describe() -> dict:
    """The default series (for documentation and tests)."""
    return {"full": [asdict(s) for s in FULL], "quick": [asdict(s) for s in QUICK]}
