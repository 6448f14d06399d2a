r"""``sgdlab reproduce smoothing``: landscape smoothing (Damian, Nichani, Ge, Lee 2023).

Single-index targets :math:`h_3` and :math:`h_4` learnt by the matched student with spherical
online SGD on the correlation loss (their setting), from a random start (conditioned on a
positive overlap for odd :math:`k`), two ways:

- **vanilla**: per-sample step :math:`\eta = \delta_v d^{-k/2}`; samples to :math:`m = 0.5`
  grow as :math:`d^{k-1}`;
- **smoothed**: SGD on :math:`L_\lambda` (``Training(smoothing=lam)``, :mod:`sgdlab.smoothing`)
  with :math:`\lambda = c\, d^{1/4}` and Damian et al.'s step
  :math:`\eta = \delta_s d^{-k/2} \lambda^{2k-2} = \delta_s c^{2k-2} d^{-1/2}`; samples grow as
  :math:`d^{k/2}` (the CSQ lower bound), because the smoothed drift near :math:`m \sim d^{-1/2}`
  is set by :math:`\lambda/\sqrt d` instead of :math:`m`.

Parameters (chosen on the chain at d = 64 .. 1024): :math:`c = 1` (for :math:`c \gtrsim 2` the
smoothed minimum moves away from :math:`w^*` at small d), :math:`\delta_s = 0.3` (the
correlation loss settles on a plateau :math:`|m| \approx 0.75` for k = 3 and 0.7 for k = 4 at
this step; the threshold 0.5 is reached with smoothing on throughout), :math:`\delta_v = 0.5`
(k = 3 and 4): with a larger vanilla step the noise plateau at small d sits just above
0.5 and biases the smallest-d point. The minibatch rule and its check are those of
``info-exponent``; smoothed runs use batch 1 (the chain's smoothed step draws an
:math:`n_b \times n_b` Wishart matrix, so batches do not pay).

Statistics: censoring-aware medians with bootstrap intervals, weighted log-log slopes with
their confidence intervals, against :math:`k - 1` and :math:`k/2`, and the difference of the
two slopes with its interval (``slope_gap``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .._functions import information_exponent, resolve_fn
from ..analysis import smoothed_exponent, theory_exponent
from ..config import ConfigError
from ..smoothing import smoothing_lam
from ..theory import escape_steps_effective
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

__all__ = ["FULL", "QUICK", "Series", "cost", "plan", "reproduce"]



@dataclass(frozen=True)
class Series:
    """One (link, vanilla|smoothed) sweep over d."""

    link: str
    smoothed: bool
    ds: tuple[int, ...]
    delta: float
    seeds: int
    batch_per_d: float = 0.0  # batch = max(1, round(batch_per_d * d)); 0: batch 1
    c: float = 1.0
    horizon: float = 6.0

    def k(self) -> int:
        g = resolve_fn(self.link, "target.link")
        return int(information_exponent(g, g))

    def lam(self, d: int) -> float | None:
        return smoothing_lam(d, self.c) if self.smoothed else None

    def eta(self, d: int) -> float:
        k = self.k()
        eta = self.delta * d ** (-k / 2.0)
        return eta * self.lam(d) ** (2 * k - 2) if self.smoothed else eta

    def batch(self, d: int) -> int:
        return max(1, round(self.batch_per_d * d))

    @property
    def label(self) -> str:
        return f"{self.link} {'smoothed' if self.smoothed else 'vanilla'}"



FULL: tuple[Series, ...] = (
    Series("h3", False, pow2(7, 11), delta=0.5, seeds=128, batch_per_d=1 / 16),
    Series("h3", True, pow2(6, 11), delta=0.3, seeds=128),
    Series("h4", False, pow2(5, 8), delta=0.5, seeds=64, batch_per_d=1 / 2),
    Series("h4", True, pow2(6, 10), delta=0.3, seeds=64),
)
QUICK: tuple[Series, ...] = (
    Series("h3", False, pow2(7, 9), delta=0.5, seeds=128, batch_per_d=1 / 16),
    Series("h3", True, pow2(6, 8), delta=0.3, seeds=128),
    Series("h4", False, pow2(5, 7), delta=0.5, seeds=32, batch_per_d=1 / 2),
    Series("h4", True, pow2(5, 7), delta=0.3, seeds=32),
)


def _expected_samples(s: Series, d: int) -> float:
    """Scale of the median escape samples, for the horizon: the effective dynamics from
    m0 = d^{-1/2} (vanilla) or the measured rule of thumb d^{k/2} / (2 delta_s) (smoothed)."""
    k = s.k()
    if s.smoothed:
        return 0.5 * d ** (k / 2.0) / s.delta
    t = escape_steps_effective(s.link, 1.0 / math.sqrt(d), 0.5, s.eta(d), d, loss="correlation")
    if not math.isfinite(t):
        raise ConfigError(f"delta: got {s.delta:g} for {s.label} at d={d}; allowed: a step at which m = 0.5 is reached")
    return t


def _point(s: Series, d: int, engine: str, seed: int) -> Point:
    k, b = s.k(), s.batch(d)
    steps = max(10, int(math.ceil(s.horizon * _expected_samples(s, d) / b)))
    cfg = matched_config(s.link, d, seeds=s.seeds, seed=seed, engine=engine, loss="correlation", lr=s.eta(d) * b,
                         batch=b, steps=steps, spherical=True, init="random_positive" if k % 2 else "random",
                         stop_fraction=STOP_FRACTION, smoothing=s.lam(d))
    tags = {"link": s.link, "k": k, "smoothed": s.smoothed, "d": d, "batch": b, "lam": s.lam(d)}
    return Point(tags, cfg)


def plan(*, quick: bool = False, engine: str = "chain", seeds: int | None = None, seed: int = 0,
         **_: object) -> tuple[list[Series], list[Point]]:
    """The series and every run of the reproduction (nothing is run)."""
    require_engine(engine, ("chain", "full"))
    series = list(QUICK if quick else FULL)
    if seeds is not None:
        series = [replace(s, seeds=seeds) for s in series]
    return series, [_point(s, d, engine, seed) for s in series for d in s.ds]



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
    """Run (or read back from ``store``) every run and write ``scaling.png``, ``table.md`` and
    ``results.json`` into ``out`` (default ``results/reproduce/smoothing[-quick]``)."""
    started = time.perf_counter()
    series, pts = plan(quick=quick, engine=engine, seeds=seeds, seed=seed)
    out = Path(out) if out is not None else Path("results/reproduce") / ("smoothing" + ("-quick" if quick else ""))
    results, rows = run_points(pts, store=store, workers=workers, progress=progress, order=cost)

    table_rows, fits, summary_series = [], {}, {}
    for s in series:
        k = s.k()
        theory = smoothed_exponent(k) if s.smoothed else theory_exponent(k)
        idx = [i for i, p in enumerate(pts) if p.tags["link"] == s.link and p.tags["smoothed"] == s.smoothed]
        stats, prow = [], []
        for i in idx:
            st, row = escape_row(results[i])
            d = pts[i].tags["d"]
            prow.append({"series": s.label, "k": k, "d": d, "batch": pts[i].tags["batch"], "lam": pts[i].tags["lam"],
                         "lr": pts[i].config["train"]["lr"], **row, "wall_time_s": rows[i].get("wall_time"),
                         "median_over_theory": None if row["median_samples"] is None
                         else row["median_samples"] / d**theory})
            stats.append(st)
        ds = [pts[i].tags["d"] for i in idx]
        fit, frow = fit_row(ds, stats, theory)
        fits[(s.link, s.smoothed)] = (s, ds, stats, fit)
        summary_series[s.label] = {"k": k, "smoothed": s.smoothed, "delta": s.delta, "c": s.c if s.smoothed else None,
                                   "batch_per_d": s.batch_per_d, "seeds": s.seeds, "fit": frow, "points": prow}
        table_rows += prow

    gaps = {}
    for link in sorted({s.link for s in series}):
        v, sm = fits.get((link, False)), fits.get((link, True))
        if v and sm and v[3] is not None and sm[3] is not None:
            k = v[0].k()
            diff = v[3].slope - sm[3].slope
            se = math.hypot(v[3].stderr, sm[3].stderr)
            common = sorted(set(v[1]) & set(sm[1]))
            at = None
            if common:
                dmax = common[-1]
                sv, ss = v[2][v[1].index(dmax)], sm[2][sm[1].index(dmax)]
                at = {"d": dmax, "vanilla": _ci(sv), "smoothed": _ci(ss),
                      "ratio": sv.median_samples / ss.median_samples}
            gaps[link] = {"k": k, "theory": theory_exponent(k) - smoothed_exponent(k), "gap": diff, "stderr": se,
                          "ci_normal": [diff - 1.96 * se, diff + 1.96 * se], "lower_one_sided_95": diff - 1.645 * se,
                          "largest_common_d": at}

    summary = {
        "mode": "quick" if quick else "full",
        "engine": engine,
        "protocol": {
            "loss": "correlation", "geometry": "spherical", "escape_threshold": 0.5, "stop_fraction": STOP_FRACTION,
            "vanilla_step": "eta = delta d^{-k/2}", "smoothed_step": "eta = delta d^{-k/2} lam^{2k-2}, lam = c d^{1/4}",
            "batch": "max(1, round(batch_per_d * d)), lr = batch * eta",
        },
        "series": summary_series,
        "slope_gap": gaps,
        "compute_s": float(sum((r.get("wall_time") or 0.0) for r in rows)),
    }
    fmt, f3 = fmt_g(), fmt_g(".3f")
    table = "## Median escape samples (m = 0.5)\n\n" + markdown_table(table_rows, [
        ("series", "series", str), ("d", "d", str), ("batch", "batch", str), ("lam", "lambda", fmt), ("lr", "lr", fmt),
        ("n_seeds", "seeds", str), ("fraction_escaped", "escaped", f3), ("median_samples", "median samples", fmt),
        ("median_samples_lo", "CI low", fmt), ("median_samples_hi", "CI high", fmt),
    ])
    frows = []
    for label, ss in summary_series.items():
        f = ss["fit"]
        frows.append({"series": label, "theory": f["theory"], "slope": f.get("slope"), "chi2_red": f.get("chi2_red"),
                      "ci_text": "-" if f.get("ci") is None else f"[{f['ci'][0]:.3f}, {f['ci'][1]:.3f}]",
                      "theory_in_ci": f.get("theory_in_ci")})
    table += "\n## Fitted exponents\n\n" + markdown_table(frows, [
        ("series", "series", str), ("theory", "theory", fmt), ("slope", "fitted", f3), ("ci_text", "95% CI", str),
        ("chi2_red", "chi2/dof", fmt), ("theory_in_ci", "theory in CI", str),
    ])
    grows = [
        {"link": link, **g, "ci_text": f"[{g['ci_normal'][0]:.3f}, {g['ci_normal'][1]:.3f}]"}
        for link, g in gaps.items()
    ]
    table += "\n## Vanilla minus smoothed slope\n\n" + markdown_table(grows, [
        ("link", "link", str), ("theory", "theory (k-1) - k/2", fmt), ("gap", "measured", f3),
        ("ci_text", "95% CI", str),
    ])
    return write_outputs(out, name="smoothing", summary=summary, table=table,
                         figures={"scaling.png": figure(summary_series)}, started=started,
                         points=provenance(pts, rows))


def _ci(st) -> list[float | None]:
    return [float(x) if math.isfinite(x) else None for x in (st.median_samples, *st.median_samples_ci)]


def figure(series: dict):
    """The scaling figure from the ``series`` of ``results.json`` (label -> k, smoothed, fit,
    points), so a committed figure can be redrawn from its numbers without the runs. Legends
    sit below the axes, where they hide no data point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    links = sorted({label.split()[0] for label in series})
    fig, axes = plt.subplots(1, len(links), figsize=(5.2 * len(links), 5.4), squeeze=False)
    for ax, link in zip(axes[0], links, strict=True):
        for j, smoothed in enumerate((False, True)):
            ss = series.get(f"{link} {'smoothed' if smoothed else 'vanilla'}")
            if ss is None:
                continue
            fit, pts, k = ss["fit"], ss["points"], ss["k"]
            c = f"C{j}"
            x = np.asarray([p["d"] for p in pts], dtype=float)
            med, lo, hi = (np.array([np.nan if p[key] is None else p[key] for p in pts], dtype=float)
                           for key in ("median_samples", "median_samples_lo", "median_samples_hi"))
            ok = np.isfinite(med)
            hi = np.where(np.isfinite(hi), hi, med * 10)
            label = "smoothed, lam = d^(1/4)" if smoothed else "vanilla"
            if fit.get("slope") is not None:
                label += f": slope {fit['slope']:.2f} [{fit['ci'][0]:.2f}, {fit['ci'][1]:.2f}]"
            ax.errorbar(x[ok], med[ok], yerr=[med[ok] - lo[ok], hi[ok] - med[ok]], fmt="o", color=c, ms=4, capsize=2,
                        label=label)
            if fit.get("slope") is not None:
                th = smoothed_exponent(k) if smoothed else theory_exponent(k)
                x0 = math.exp(np.mean(np.log(x[ok])))
                y0 = math.exp(fit["intercept"] + fit["slope"] * math.log(x0))
                grid = np.geomspace(x.min(), x.max(), 50)
                ax.plot(grid, y0 * (grid / x0) ** th, "--", color=c, lw=1, label=f"theory d^{th:g}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("d")
        ax.set_ylabel("median samples to m = 0.5")
        ax.set_title(f"{link}: vanilla d^(k-1) vs smoothed d^(k/2)", fontsize=9)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return fig
