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
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from .._functions import information_exponent, resolve_fn
from ..analysis import theory_exponent
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
    run_points,
    write_outputs,
)

__all__ = ["FULL", "QUICK", "Series", "cost", "plan", "reproduce"]

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
) -> tuple[list[Series], list[Point]]:
    """The series and every run of the reproduction (nothing is run). Runs can be computed
    anywhere into a store (e.g. the expensive ones on an accelerator, :func:`cost`) and
    :func:`reproduce` then reads them back."""
    if engine not in ("chain", "full"):
        raise ConfigError(f"--engine: got {engine!r}; allowed: chain or full")
    mode = "quick" if quick else "full"
    series = list(QUICK if quick else FULL)
    if links:
        series = [_series_for(link, series) for link in links]
    if seeds is not None:
        series = [replace(s, seeds=seeds, seeds_large=None) for s in series]
    pts = [p for s in series for p in _series_points(s, engine, seed)]
    pts += _batch_points(BATCH_CHECK[mode], series, engine, seed)
    pts += _trajectory_points(TRAJECTORY[mode], series, seed)
    return series, pts


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
) -> Outputs:
    """Run (or read back from ``store``) every run of the reproduction and write
    ``scaling.png``, ``trajectories.png``, ``table.md`` and ``results.json`` into ``out``
    (default ``results/reproduce/info-exponent[-quick]``). ``links`` replaces the series'
    links (each named link gets the d-grid of the matching default series, or of h3 for a
    link of exponent >= 3); ``seeds`` overrides the seeds per point."""
    started = time.perf_counter()
    mode = "quick" if quick else "full"
    series, pts = plan(quick=quick, engine=engine, links=links, seeds=seeds, seed=seed)
    out = Path(out) if out is not None else Path("results/reproduce") / ("info-exponent" + ("-quick" if quick else ""))
    results, rows = run_points(pts, store=store, workers=workers, progress=progress, order=cost)

    # ---- scaling per series
    summary_series, table_rows, scaling = {}, [], []
    for s in series:
        k = s.k()
        idx = [i for i, p in enumerate(pts) if p.tags["part"] == "series" and p.tags["link"] == s.link]
        stats, point_rows = [], []
        for i in idx:
            st, row = escape_row(results[i])
            theory = theory_exponent(k)
            d = pts[i].tags["d"]
            scale = d**theory * (math.log(d) if k == 2 else 1.0)
            row = {
                "link": s.link, "k": k, "d": d, "batch": pts[i].tags["batch"], "lr": pts[i].config["train"]["lr"],
                **row, "median_over_theory": None if row["median_samples"] is None else row["median_samples"] / scale,
                "wall_time_s": rows[i].get("wall_time"),
                "effective_samples": _effective_samples(s.link, k, d, s.step_delta()),
            }
            stats.append(st)
            point_rows.append(row)
        table_rows += point_rows
        ds = [pts[i].tags["d"] for i in idx]
        fit, fitrow = fit_row(ds, stats, theory_exponent(k), log_correction=k == 2)
        fitrow.update(_effective_slope(s, k, ds, fitrow))
        summary_series[s.link] = {
            "k": k, "delta": s.step_delta(), "delta_fraction_of_critical": None if k == 1 else s.delta_fraction,
            "batch_per_d": s.batch_per_d, "seeds": s.seeds, "horizon_multiple": s.horizon,
            "init": "random_positive" if k % 2 else "random", "fit": fitrow, "points": point_rows,
        }
        scaling.append((s, k, ds, stats, fit))

    # ---- batch check
    bidx = [i for i, p in enumerate(pts) if p.tags["part"] == "batch"]
    batch_rows = []
    for i in bidx:
        _, row = escape_row(results[i])
        batch_rows.append({"batch": pts[i].tags["batch"], "d": pts[i].tags["d"], "link": pts[i].tags["link"], **row})

    # ---- trajectories
    tidx = [i for i, p in enumerate(pts) if p.tags["part"] == "trajectory"]
    traj = {pts[i].tags["engine"]: results[i] for i in tidx}
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

    summary = {
        "mode": mode,
        "engine": engine,
        "protocol": {
            "loss": "square", "geometry": "spherical", "escape_threshold": 0.5, "stop_fraction": STOP_FRACTION,
            "step": "eta = delta/d (k <= 2), delta d^{-k/2} (k >= 3); lr = batch * eta",
            "batch": "max(1, round(batch_per_d * d))",
        },
        "series": summary_series,
        "batch_check": batch_rows,
        "trajectory": {"link": tspec["link"], "d": tspec["d"], "m0": 1 / math.sqrt(tspec["d"]), **traj_summary},
        "compute_s": float(sum((r.get("wall_time") or 0.0) for r in rows)),
    }
    fmt, f3 = fmt_g(), fmt_g(".3f")
    table = "## Median escape samples (m = 0.5)\n\n" + markdown_table(table_rows, [
        ("link", "link", str), ("k", "k", str), ("d", "d", str), ("batch", "batch", str), ("lr", "lr", fmt),
        ("n_seeds", "seeds", str), ("fraction_escaped", "escaped", f3), ("median_samples", "median samples", fmt),
        ("median_samples_lo", "CI low", fmt), ("median_samples_hi", "CI high", fmt),
        ("effective_samples", "effective dynamics", fmt), ("median_over_theory", "median / d^theory", fmt),
    ])
    fit_rows = [{"link": s.link, "k": k, **summary_series[s.link]["fit"]} for s, k, *_ in scaling]
    for r in fit_rows:
        r["ci_text"] = "-" if r.get("ci") is None else f"[{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]"
        r["law"] = "d log d" if r["k"] == 2 else f"d^{r['theory']:g}"
    table += "\n## Fitted exponents\n\n" + markdown_table(fit_rows, [
        ("link", "link", str), ("k", "k", str), ("law", "theory", str), ("slope", "fitted", f3),
        ("ci_text", "95% CI", str), ("chi2_red", "chi2/dof", fmt), ("theory_in_ci", "theory in CI", str),
        ("effective_slope", "effective dynamics, same d", f3), ("effective_in_ci", "in CI", str),
    ])
    if batch_rows:
        table += "\n## Batch check (same per-sample step)\n\n" + markdown_table(batch_rows, [
            ("link", "link", str), ("d", "d", str), ("batch", "batch", str), ("n_seeds", "seeds", str),
            ("fraction_escaped", "escaped", f3), ("median_samples", "median samples", fmt),
            ("median_samples_lo", "CI low", fmt), ("median_samples_hi", "CI high", fmt),
        ])
    figures = {"scaling.png": _scaling_figure(scaling), "trajectories.png": _trajectory_figure(traj, tspec)}
    return write_outputs(out, name="info-exponent", summary=summary, table=table, figures=figures, started=started,
                         points=provenance(pts, rows))



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


def _scaling_figure(scaling):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for i, (s, k, ds, stats, fit) in enumerate(scaling):
        c = f"C{i}"
        ds_a = np.asarray(ds, dtype=float)
        med = np.array([st.median_samples for st in stats])
        lo = np.array([st.median_samples_ci[0] for st in stats])
        hi = np.array([st.median_samples_ci[1] for st in stats])
        ok = np.isfinite(med)
        hi_c = np.where(np.isfinite(hi), hi, med * 10)
        label = f"{s.link} (k={k})"
        if fit is not None:
            label += f": slope {fit.slope:.2f} [{fit.ci[0]:.2f}, {fit.ci[1]:.2f}]"
        ax.errorbar(ds_a[ok], med[ok], yerr=[med[ok] - lo[ok], hi_c[ok] - med[ok]], fmt="o", color=c, ms=4, capsize=2,
                    label=label)
        eff = np.array([_effective_samples(s.link, k, int(d), s.step_delta()) for d in ds_a])
        ax.plot(ds_a, eff, ":", color=c, lw=1)
        if fit is not None:
            th = theory_exponent(k)
            x0 = math.exp(np.mean(np.log(ds_a[ok])))
            y0 = math.exp(fit.intercept + fit.slope * math.log(x0)) * (math.log(x0) if k == 2 else 1.0)
            grid = np.geomspace(ds_a.min(), ds_a.max(), 50)
            corr = np.log(grid) / math.log(x0) if k == 2 else 1.0
            ax.plot(grid, y0 * (grid / x0) ** th * corr, "--", color=c, lw=1)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("d")
    ax.set_ylabel("median samples to m = 0.5")
    ax.set_title("Information exponent: escape samples vs d\n"
                 "dashed: theory slope (d, d log d, d^{k-1}); dotted: effective dynamics from m0 = d^{-1/2}",
                 fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    return fig


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
