"""``sgdlab reproduce ssi``: sequence single-index models and single-layer attention
(Arnaboldi, Loureiro, Stephan, Krzakala, Zdeborova 2025).

Four parts, every run through the results store (cached, resumable):

1. **Tied vs position-specific.** Target y = h_k(L^{-1/2} sum_l w*.x_l) (k = 1: linear,
   k = 2: He2), tied student h_k(L^{-1/2} sum_l w.x_l) and plain student
   h_k(L^{-1/2} sum_l w_l.x_l), spherical SGD at the same per-sample step lr = delta / d,
   square loss. The tied network sees the pooled token L^{-1/2} sum_l x_l ~ N(0, I_d): it is
   the single-index model in d, whatever L. The plain network is a single-index model in
   dimension L d with step lr / L (its flattened weight has norm sqrt(L)), so it needs ~L
   times the samples: gain T_plain / T_tied = L for k = 1, L (1 + log L / log d) for k = 2 at
   leading order. Beside each median: the effective dynamics (drift - lr^2 d m V / 2,
   ``sgdlab.theory``) of the tied model in d and of the equivalent model in L d.
2. **Attention vs position-specific** on the He2 sequence target y = L^{-1/2} sum_l h2(nu_l):
   single-layer attention tr softmax(q q^T) (one w shared by the tokens) against the plain
   network L^{-1/2} sum_l h2(w_l.x_l) and the tied one L^{-1/2} sum_l h2(w.x_l); correlation
   loss (the trace readout has a constant mean that the square loss would also have to fit).
3. **Positional vs semantic attention.** L = 2, p_1 = s u, p_2 = -s u, target
   (1 - omega) softmax(z* z*^T) + omega A, student softmax(q q^T), q_l = w.(x_l + p_l),
   read out as the matrix with the *squared* Frobenius loss 1/2 ||S - Y||_F^2 (the
   non-squared norm has a gradient discontinuous at S = Y). The population loss F(m, e) on
   the disk m^2 + e^2 <= 1 (``sgdlab.landscape``), the first escape direction from the
   Hessian at the origin, the global minimum, the two omega transitions, and the fraction of
   SGD runs (chain) that end positional (|e| > |m|, signed overlaps stored) vs omega.
4. **ODE vs simulation**: (m, e) of the attention model from a warm start, chain mean over
   seeds against the ODE (with its finite-d lr^2 term).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import theory
from ..analysis import km_median, wilson_interval
from ._common import (
    Outputs,
    Point,
    cost,
    escape_row,
    fmt_g,
    markdown_table,
    provenance,
    run_points,
    write_outputs,
)

__all__ = ["plan", "cost", "reproduce"]

STOP_FRACTION = 0.9  # Kaplan–Meier medians are unchanged for any stop fraction > 1/2
THRESHOLD = 0.5
RECORDS = 25  # records per run (escape is detected at every step; the trajectory part records 100)
HORIZON = 6.0  # horizon = HORIZON x the effective-dynamics escape steps
POSITIONAL = {"attention_a": 1.0, "positional_scale": 1.0}  # a and s of the positional/semantic model


@dataclass(frozen=True)
class Spec:
    d_escape: int
    lengths: tuple[int, ...]  # of the plain/tied gain (1 = the tied network itself)
    tied_lengths: tuple[int, ...]
    d_attention: int
    attention_lengths: tuple[int, ...]
    attention_kinds: tuple[str, ...]
    d_positional: int
    omegas: tuple[float, ...]
    landscape_omegas: tuple[float, ...]
    grid: int  # of the landscape figure
    transition_omegas: int  # grid of the omega transitions (each root then refined by brentq)
    minimum_grid: int  # of the global-minimum search
    d_trajectory: int
    seeds: int
    seeds_positional: int
    seeds_trajectory: int
    minimum_points: int | None = None  # quadrature of F at the minimisers for the minimum transition (None: default)


FULL = Spec(d_escape=512, lengths=(1, 2, 4, 8), tied_lengths=(1, 2, 4, 8), d_attention=256, attention_lengths=(2, 4, 8),
            attention_kinds=("attention", "plain", "tied"), d_positional=256,
            omegas=(0.0, 0.3, 0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.9, 1.0), landscape_omegas=(0.0, 0.5, 0.7, 1.0),
            grid=61, transition_omegas=41, minimum_grid=41,
            d_trajectory=4096, seeds=128, seeds_positional=64, seeds_trajectory=256,
            minimum_points=40**4)  # the root's third decimal converged from 32^4 nodes on
QUICK = Spec(d_escape=128, lengths=(1, 2, 4), tied_lengths=(1, 4), d_attention=64, attention_lengths=(2, 4),
             attention_kinds=("attention", "plain"), d_positional=64, omegas=(0.0, 1.0),
             landscape_omegas=(0.0, 1.0), grid=21, transition_omegas=5, minimum_grid=21, d_trajectory=512,
             seeds=48, seeds_positional=32,
             seeds_trajectory=96)

LINKS = {"h1": 1, "h2": 2}
ATTENTION_DELTA = 0.2


def _delta(link: str) -> float:
    dc = theory.critical_delta(link)
    return 0.5 if math.isinf(dc) else 0.5 * dc


def _batch(d: int) -> int:
    """Minibatch n_b = d / 64 (at least 1) at step n_b lr: the per-sample process while n_b << d."""
    return max(1, d // 64)


def effective_samples(link: str, d: int, L: int, kind: str, lr: float) -> float:
    """Samples to m = 0.5 of the effective dynamics: the single-index model in d (tied) or the
    equivalent one in L d with per-sample step lr / L (plain), from m0 = dimension^{-1/2}."""
    D, eta = (d, lr) if kind == "tied" else (L * d, lr / L)
    return theory.escape_steps_effective(link, 1.0 / math.sqrt(D), THRESHOLD, eta, D)


def _config(d: int, seeds: int, seed: int, engine: str, sequence: dict, target: dict, student: dict,
            train: dict) -> dict:
    return {"d": d, "seeds": seeds, "seed": seed, "engine": engine, "target": target, "student": student,
            "train": {"record_every": max(1, train["steps"] // RECORDS), "escape_threshold": THRESHOLD,
                      "spherical": True, **train},
            "sequence": sequence}


def positional_sequence(omega: float) -> dict:
    return {"length": 2, "combine": "attention", "omega": omega, "positional": "opposite",
            "student": "attention", "readout": "matrix", **POSITIONAL}


def plan(*, quick: bool = False, engine: str = "chain", seeds: int | None = None, seed: int = 0
         ) -> tuple[Spec, list[Point]]:
    spec = QUICK if quick else FULL
    n_seeds = seeds or spec.seeds
    pts: list[Point] = []
    # 1. tied vs plain
    d = spec.d_escape
    nb = _batch(d)
    for link, k in LINKS.items():
        delta = _delta(link)
        lr = delta / d
        for kind in ("tied", "plain"):
            for L in spec.tied_lengths if kind == "tied" else spec.lengths:
                if kind == "plain" and L == 1:
                    continue  # the same model as tied at L = 1
                samples = effective_samples(link, d, L, kind, lr)
                steps = max(10, int(HORIZON * samples / nb))
                cfg = _config(d, n_seeds, seed, engine,
                              {"length": L, "combine": "pooled", "student": kind},
                              {"link": link}, {"activation": link},
                              {"lr": lr * nb, "batch": nb, "steps": steps, "stop_fraction": STOP_FRACTION,
                               "init": "random_positive" if k % 2 else "random"})
                pts.append(Point({"part": "tied-plain", "link": link, "k": k, "kind": kind, "L": L, "d": d,
                                  "lr": lr, "batch": nb, "effective_samples": samples}, cfg))
    # 2. attention vs position-specific on a He2 sequence target
    d = spec.d_attention
    lr, nb = ATTENTION_DELTA / d, _batch(d)
    for kind in spec.attention_kinds:
        for L in spec.attention_lengths:
            seq = {"length": L, "combine": "sum", "scale": "sqrt", "student": kind}
            if kind == "attention":
                seq["readout"] = "trace"
            else:
                seq["pooling"] = "sum"
            steps = int(25 * max(L, 2) * d / (ATTENTION_DELTA * nb))
            cfg = _config(d, n_seeds, seed, engine, seq, {"link": "h2"}, {"activation": "h2"},
                          {"loss": "correlation", "lr": lr * nb, "batch": nb, "steps": steps,
                           "stop_fraction": STOP_FRACTION})
            pts.append(Point({"part": "attention", "kind": kind, "L": L, "d": d, "lr": lr, "batch": nb}, cfg))
    # 3. positional vs semantic: where SGD ends
    d = spec.d_positional
    for om in spec.omegas:
        steps = 60 * d
        cfg = _config(d, seeds or spec.seeds_positional, seed, engine, positional_sequence(om),
                      {"link": "h1"}, {"activation": "h1"}, {"lr": 1.0 / d, "steps": steps,
                                                               "escape_threshold": 2.0})
        pts.append(Point({"part": "positional", "omega": om, "d": d, "lr": 1.0 / d}, cfg))
    # 4. ODE vs simulation
    d = spec.d_trajectory
    for eng, n in ((engine, seeds or spec.seeds_trajectory), ("ode", 1)):
        cfg = _config(d, n, seed, eng, positional_sequence(0.5), {"link": "h1"}, {"activation": "h1"},
                      {"lr": 1.0 / d, "steps": 8 * d, "init": 0.2, "escape_threshold": 2.0,
                       "record_every": 8 * d // 100})
        pts.append(Point({"part": "trajectory", "engine": eng, "d": d, "lr": 1.0 / d}, cfg))
    return spec, pts


# ------------------------------------------------------------------ statistics
def ratio_interval(a, b, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """Ratio of Kaplan–Meier medians of two runs' escape steps (``a``, ``b``: (steps, escaped,
    batch)) and its percentile-bootstrap interval from resampling the seeds of both."""
    rng = np.random.default_rng(seed)
    (ta, ea, ba), (tb, eb, bb) = a, b
    est = km_median(ta, ea) * ba / (km_median(tb, eb) * bb)
    boots = []
    for _ in range(n_boot):
        i, j = rng.integers(0, len(ta), len(ta)), rng.integers(0, len(tb), len(tb))
        boots.append(km_median(ta[i], ea[i]) * ba / (km_median(tb[j], eb[j]) * bb))
    q = (1 - level) / 2
    lo, hi = np.nanquantile(np.asarray(boots), [q, 1 - q])
    return float(est), float(lo), float(hi)


def loglog_fit(x, y, lo, hi, level: float = 0.95) -> dict:
    """Weighted least squares of log y = a + b log x, each point weighted by its interval
    (sigma = (log hi - log lo) / (2 z)); standard error inflated by the reduced chi^2 when the
    scatter exceeds the intervals; t-interval with n - 2 degrees of freedom."""
    from scipy import stats

    x, y = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    z = stats.norm.ppf(0.5 + level / 2)
    sig = np.maximum((np.log(np.asarray(hi, float)) - np.log(np.asarray(lo, float))) / (2 * z), 1e-3)
    w = 1.0 / sig**2
    X = np.stack([np.ones_like(x), x], axis=1)
    cov = np.linalg.inv(X.T @ (w[:, None] * X))
    a, b = cov @ (X.T @ (w * y))
    n = len(x)
    chi2 = float(np.sum(w * (y - a - b * x) ** 2))
    se = math.sqrt(cov[1, 1] * max(1.0, chi2 / (n - 2))) if n > 2 else math.sqrt(cov[1, 1])
    t = stats.t.ppf(0.5 + level / 2, n - 2) if n > 2 else math.inf
    return {"slope": float(b), "stderr": se, "ci": [float(b - t * se), float(b + t * se)], "n_points": n,
            "prefactor": math.exp(a), "chi2_red": chi2 / (n - 2) if n > 2 else None}


def _times(result) -> tuple[np.ndarray, np.ndarray, int]:
    e = np.asarray(result.escape_step)
    return np.where(e >= 0, e, int(result.steps[-1])).astype(float), e >= 0, result.batch


def _final_phase(result) -> dict:
    """Where each seed ends: positional when |e| > |m| at the last record (signed overlaps)."""
    M = result.M[:, -1, 0, :]
    m, e = M[:, 0], M[:, 1]
    pos = np.abs(e) > np.abs(m)
    n = len(m)
    k = int(pos.sum())
    lo, hi = wilson_interval(k, n)
    return {"n_seeds": n, "n_positional": k, "fraction_positional": k / n, "fraction_lo": lo, "fraction_hi": hi,
            "median_abs_m": float(np.median(np.abs(m))), "median_abs_e": float(np.median(np.abs(e))),
            "mean_final_risk": float(np.nanmean(result.risk[:, -1]))}


def _positional_model(omega: float, d: int):
    from ..landscape import positional_semantic_model

    return positional_semantic_model(omega, a=POSITIONAL["attention_a"], scale=POSITIONAL["positional_scale"], d=d)


# ------------------------------------------------------------------ the reproduction
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
    """Run (or read back) every run and write ``escape.png``, ``positional.png``,
    ``trajectories.png``, ``table.md`` and ``results.json`` into ``out`` (default
    ``results/reproduce/ssi[-quick]``)."""
    from .. import landscape

    started = time.perf_counter()
    spec, pts = plan(quick=quick, engine=engine, seeds=seeds, seed=seed)
    out = Path(out) if out is not None else Path("results/reproduce") / ("ssi" + ("-quick" if quick else ""))
    results, rows = run_points(pts, store=store, workers=workers, progress=progress, order=cost)
    idx = {i: p.tags for i, p in enumerate(pts)}

    def find(**tags: Any) -> int | None:
        for i, t in idx.items():
            if all(t.get(k) == v for k, v in tags.items()):
                return i
        return None

    # ---- 1. tied vs plain
    escape_rows, gain_rows, gain_fits = [], [], {}
    for link in LINKS:
        for kind in ("tied", "plain"):
            for L in spec.tied_lengths if kind == "tied" else spec.lengths[1:]:
                i = find(part="tied-plain", link=link, kind=kind, L=L)
                tg = pts[i].tags
                _, row = escape_row(results[i], seed=seed)
                escape_rows.append({"part": "tied-plain", "link": link, "kind": kind, "L": L, "d": tg["d"],
                                    "effective_samples": tg["effective_samples"], **row,
                                    "wall_time_s": rows[i].get("wall_time")})
        for L in spec.lengths:
            # the tied network at L is the tied network at 1 in law (the pooled token is N(0, I_d)):
            # compare with the tied run at the same L where there is one
            it = find(part="tied-plain", link=link, kind="tied", L=L)
            it = find(part="tied-plain", link=link, kind="tied", L=1) if it is None else it
            ip = find(part="tied-plain", link=link, kind="plain", L=L) if L > 1 else it
            g, lo, hi = ratio_interval(_times(results[ip]), _times(results[it]), seed=seed)
            d, lr = pts[it].tags["d"], pts[it].tags["lr"]
            g_eff = effective_samples(link, d, L, "plain", lr) / effective_samples(link, d, L, "tied", lr)
            gain_rows.append({"link": link, "L": L, "tied_L": pts[it].tags["L"], "gain": g, "gain_lo": lo,
                              "gain_hi": hi, "gain_effective": g_eff, "gain_per_L": g / L})
        sel = [r for r in gain_rows if r["link"] == link]
        fit = loglog_fit([r["L"] for r in sel], [r["gain"] for r in sel], [r["gain_lo"] for r in sel],
                         [r["gain_hi"] for r in sel])
        eff_slope = float(np.polyfit(np.log([r["L"] for r in sel]), np.log([r["gain_effective"] for r in sel]), 1)[0])
        gain_fits[link] = {**fit, "theory_leading": 1.0, "theory_effective_slope": eff_slope}

    # ---- 2. attention vs plain (vs tied)
    for kind in spec.attention_kinds:
        for L in spec.attention_lengths:
            i = find(part="attention", kind=kind, L=L)
            _, row = escape_row(results[i], seed=seed)
            escape_rows.append({"part": "attention", "link": "h2-sum", "kind": kind, "L": L, "d": pts[i].tags["d"],
                                "effective_samples": None, **row, "wall_time_s": rows[i].get("wall_time")})
    att_growth = {}
    for kind in spec.attention_kinds:
        i0 = find(part="attention", kind=kind, L=spec.attention_lengths[0])
        i1 = find(part="attention", kind=kind, L=spec.attention_lengths[-1])
        g, lo, hi = ratio_interval(_times(results[i1]), _times(results[i0]), seed=seed)
        att_growth[kind] = {"L_from": spec.attention_lengths[0], "L_to": spec.attention_lengths[-1],
                            "ratio": g, "ratio_lo": lo, "ratio_hi": hi,
                            "L_ratio": spec.attention_lengths[-1] / spec.attention_lengths[0]}

    # ---- 3. positional vs semantic
    d_pos = spec.d_positional
    m_axis, grids = _landscape_grids(spec)
    land_rows = []
    for om in spec.omegas:
        mdl = _positional_model(om, d_pos)
        fe = landscape.first_escape_direction(mdl)
        gm = landscape.global_minimum(mdl, grid=spec.minimum_grid)
        i = find(part="positional", omega=om)
        land_rows.append({"omega": om, "escape_direction": fe["label"],
                          "hessian_eigenvalues": [float(v) for v in fe["eigenvalues"]],
                          "global_minimum": gm["label"], "minimum_m": float(gm["m"]), "minimum_e": float(gm["e"]),
                          "minimum_F": float(gm["F"]), **_final_phase(results[i]),
                          "wall_time_s": rows[i].get("wall_time")})
    fine = np.linspace(0.0, 1.0, spec.transition_omegas)
    trans = landscape.omega_transitions(lambda om: _positional_model(om, d_pos), fine, grid=spec.minimum_grid,
                                        minimum_points=spec.minimum_points,
                                        xtol=1e-4 if not quick else 1e-3)

    # ---- 4. ODE vs simulation
    ic, io_ = find(part="trajectory", engine=engine), find(part="trajectory", engine="ode")
    rc, ro = results[ic], results[io_]
    n = rc.n_seeds
    traj = {}
    for j, name in enumerate(("m", "e")):
        mean = np.nanmean(rc.M[:, :, 0, j], axis=0)
        se = np.nanstd(rc.M[:, :, 0, j], axis=0, ddof=1) / math.sqrt(n)
        ode = ro.M[0, :, 0, j]
        z = np.abs(mean - ode) / np.maximum(se, 1e-12)
        traj[name] = {"max_abs_gap": float(np.nanmax(np.abs(mean - ode))), "max_z": float(np.nanmax(z[1:])),
                      "final_chain": float(mean[-1]), "final_chain_se": float(se[-1]), "final_ode": float(ode[-1])}
    traj.update({"d": pts[ic].tags["d"], "seeds": n, "lr": pts[ic].tags["lr"], "omega": 0.5, "init": 0.2,
                 "ode_info": ro.info})

    # ---- outputs
    summary = {
        "mode": "quick" if quick else "full",
        "engine": engine,
        "protocol": {"threshold": THRESHOLD, "stop_fraction": STOP_FRACTION, "horizon_multiple": HORIZON,
                     "tied_plain": "pooled h_k target, matched tied/plain students, spherical SGD, square loss, "
                                   "lr = delta/d per sample (h1: delta 0.5; h2: delta = critical/2), "
                                   "batch d/64 at step batch*lr",
                     "attention": f"y = L^-1/2 sum_l h2(nu_l), correlation loss, lr = {ATTENTION_DELTA}/d",
                     "positional": {"length": 2, "encodings": "p_1 = s u, p_2 = -s u", **POSITIONAL,
                                    "loss": "1/2 squared Frobenius norm", "lr": "1/d", "steps": "60 d",
                                    "ends_positional": "|e| > |m| at the last step"}},
        "escape": escape_rows,
        "gain": gain_rows,
        "gain_fit": gain_fits,
        "attention_growth": att_growth,
        "positional": land_rows,
        "transitions": trans,
        "trajectory": traj,
    }
    figures = {"escape.png": _escape_figure(escape_rows, gain_rows, gain_fits, spec),
               "positional.png": _positional_figure(grids, m_axis, land_rows, trans),
               "trajectories.png": _trajectory_figure(rc, ro)}
    return write_outputs(out, name="ssi", summary=summary, table=_table(summary), figures=figures, started=started,
                         points=provenance(pts, rows))


# ------------------------------------------------------------------ table and figures
def _table(s: dict) -> str:
    g = fmt_g()
    parts = ["## Escape samples (Kaplan–Meier median, 95% bootstrap CI)\n",
             markdown_table(s["escape"], [("part", "part", str), ("link", "target", str), ("kind", "student", str),
                                          ("L", "L", str), ("d", "d", str), ("fraction_escaped", "escaped", g),
                                          ("median_samples", "median samples", g), ("median_samples_lo", "lo", g),
                                          ("median_samples_hi", "hi", g),
                                          ("effective_samples", "effective dynamics", g)]),
             "\n## Plain / tied gain (ratio of medians, bootstrap CI)\n",
             markdown_table(s["gain"], [("link", "target", str), ("L", "L", str), ("gain", "gain", g),
                                        ("gain_lo", "lo", g), ("gain_hi", "hi", g),
                                        ("gain_effective", "effective dynamics", g), ("gain_per_L", "gain / L", g)]),
             "\n## Fit gain ~ L^b\n",
             markdown_table([{"target": k, **v} for k, v in s["gain_fit"].items()],
                            [("target", "target", str), ("slope", "b", g), ("ci", "95% CI", _ci),
                             ("theory_effective_slope", "effective-dynamics b", g),
                             ("theory_leading", "leading order", g)]),
             "\n## Attention vs position-specific: escape-time growth from the shortest to the longest L\n",
             markdown_table([{"student": k, **v} for k, v in s["attention_growth"].items()],
                            [("student", "student", str), ("L_from", "L from", str), ("L_to", "L to", str),
                             ("ratio", "T(L_to) / T(L_from)", g), ("ratio_lo", "lo", g), ("ratio_hi", "hi", g),
                             ("L_ratio", "L ratio", g)]),
             "\n## Positional vs semantic attention (L = 2)\n",
             markdown_table(s["positional"], [("omega", "omega", g), ("escape_direction", "first escape", str),
                                              ("global_minimum", "global minimum", str), ("minimum_m", "m*", g),
                                              ("minimum_e", "e*", g), ("fraction_positional", "SGD ends positional", g),
                                              ("fraction_lo", "lo", g), ("fraction_hi", "hi", g)]),
             f"\nTransitions: the first escape direction turns positional at omega = {g(s['transitions']['escape'])}"
             f" (H_mm = H_ee), the global minimum at omega = {g(s['transitions']['minimum'])}"
             " (F_semantic = F_positional).\n",
             "\n## ODE vs chain, attention (omega 0.5, m0 = e0 = 0.2)\n",
             markdown_table([{"order parameter": k, **s["trajectory"][k]} for k in ("m", "e")],
                            [("order parameter", "order parameter", str), ("max_abs_gap", "max |gap|", g),
                             ("max_z", "max z", g), ("final_chain", "chain final", g), ("final_ode", "ODE final", g)])]
    return "\n".join(parts)


def _ci(v: Any) -> str:
    return "-" if not v else f"[{v[0]:.3g}, {v[1]:.3g}]"


def _landscape_grids(spec: Spec) -> tuple[np.ndarray, dict]:
    """The m (= e) axis and F(m, e) on it at each of ``spec.landscape_omegas``."""
    from .. import landscape

    axis = np.linspace(-1.0, 1.0, spec.grid)
    return axis, {om: np.asarray(landscape.loss_grid(_positional_model(om, spec.d_positional), axis, axis))
                  for om in spec.landscape_omegas}


def redraw(out: str | Path, *, quick: bool = False) -> list[Path]:
    """Redraw ``escape.png`` and ``positional.png`` in ``out`` from its ``results.json`` (the
    numbers a full run wrote; the landscapes are recomputed, no run is needed)."""
    import matplotlib.pyplot as plt

    out = Path(out)
    s = json.loads((out / "results.json").read_text())
    spec = QUICK if quick else FULL
    axis, grids = _landscape_grids(spec)
    figures = {"escape.png": _escape_figure(s["escape"], s["gain"], s["gain_fit"], spec),
               "positional.png": _positional_figure(grids, axis, s["positional"], s["transitions"])}
    for name, fig in figures.items():
        fig.savefig(out / name, dpi=130, bbox_inches="tight")
        plt.close(fig)
    return [out / name for name in figures]


def _escape_figure(rows, gains, fits, spec):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5), constrained_layout=True)
    ax = axes[0]
    for link, color in (("h1", "C0"), ("h2", "C1")):
        for kind, mk in (("tied", "o"), ("plain", "s")):
            sel = [r for r in rows if r["part"] == "tied-plain" and r["link"] == link and r["kind"] == kind]
            L = [r["L"] for r in sel]
            med = np.array([r["median_samples"] or np.nan for r in sel], float)
            lo = np.array([r["median_samples_lo"] or np.nan for r in sel], float)
            hi = np.array([r["median_samples_hi"] or np.nan for r in sel], float)
            ax.errorbar(L, med, yerr=[med - lo, hi - med], fmt=mk, color=color, label=f"{link} {kind}")
            ax.plot(L, [r["effective_samples"] for r in sel], "--", color=color, lw=0.8)
    ax.set(xscale="log", yscale="log", xlabel="sequence length L", ylabel="samples to m = 0.5",
           title=f"tied vs position-specific (d = {spec.d_escape}); dashed: effective dynamics")
    ax.legend(fontsize=8)
    ax = axes[1]
    for link, color in (("h1", "C0"), ("h2", "C1")):
        sel = [r for r in gains if r["link"] == link]
        L = np.array([r["L"] for r in sel])
        g = np.array([r["gain"] for r in sel])
        ax.errorbar(L, g, yerr=[g - [r["gain_lo"] for r in sel], [r["gain_hi"] for r in sel] - g], fmt="o",
                    color=color, label=f"{link}: b = {fits[link].get('slope') or float('nan'):.2f}")
        ax.plot(L, [r["gain_effective"] for r in sel], "--", color=color, lw=0.8)
    ax.plot(L, L, ":", color="k", label="gain = L")
    ax.set(xscale="log", yscale="log", xlabel="L", ylabel="T_plain / T_tied", title="gain of weight tying")
    ax.legend(fontsize=8)
    ax = axes[2]
    for kind, color in (("attention", "C2"), ("plain", "C3"), ("tied", "C4")):
        sel = [r for r in rows if r["part"] == "attention" and r["kind"] == kind]
        if not sel:
            continue
        L = [r["L"] for r in sel]
        med = np.array([r["median_samples"] or np.nan for r in sel], float)
        lo = np.array([r["median_samples_lo"] or np.nan for r in sel], float)
        hi = np.array([r["median_samples_hi"] or np.nan for r in sel], float)
        ax.errorbar(L, med, yerr=[med - lo, hi - med], fmt="o-", color=color, label=kind)
    ax.set(xscale="log", yscale="log", xlabel="L", ylabel="samples to m = 0.5",
           title="He2 sequence target: attention vs position-specific")
    ax.legend(fontsize=8)
    lengths = sorted({r["L"] for r in rows})
    for ax in axes:  # plain integer ticks at the sequence lengths
        ax.set_xticks(lengths, [str(L) for L in lengths])
        ax.minorticks_off()
    return fig


def _positional_figure(grids, axis, rows, trans):
    import matplotlib.pyplot as plt

    n = len(grids)
    fig, axes = plt.subplots(1, n + 1, figsize=(4.2 * (n + 1), 4), constrained_layout=True)
    for ax, (om, F) in zip(axes[:n], grids.items(), strict=True):
        im = ax.contourf(axis, axis, np.asarray(F).T, levels=30)
        ax.set(xlabel="m (semantic)", ylabel="e (positional)", title=f"F(m, e), omega = {om:g}", aspect="equal")
        fig.colorbar(im, ax=ax, shrink=0.8)
        r = next((r for r in rows if r["omega"] == om), None)
        if r is not None:
            ax.plot([r["minimum_m"], -r["minimum_m"]], [r["minimum_e"], -r["minimum_e"]], "r*", ms=10)
    ax = axes[n]
    om = [r["omega"] for r in rows]
    f = np.array([r["fraction_positional"] for r in rows])
    ax.errorbar(om, f, yerr=[f - [r["fraction_lo"] for r in rows], [r["fraction_hi"] for r in rows] - f], fmt="o-",
                label="SGD ends positional")
    for key, style, what in (("escape", "--", "first escape turns positional"),
                             ("minimum", ":", "global minimum turns positional")):
        if trans.get(key) is not None:
            ax.axvline(trans[key], ls=style, color="k", label=f"{what} ({trans[key]:.3f})")
    ax.set(xlabel="omega", ylabel="fraction of runs", ylim=(-0.05, 1.05), title="where SGD ends")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16))  # below the axes: hides no point
    return fig


def _trajectory_figure(rc, ro):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2), constrained_layout=True)
    t = rc.samples / rc.d
    for j, (name, color) in enumerate((("m", "C0"), ("e", "C1"))):
        x = rc.M[:, :, 0, j]
        mean, sd = np.nanmean(x, axis=0), np.nanstd(x, axis=0)
        ax.plot(t, mean, color=color, label=f"{name}: chain mean ({rc.n_seeds} seeds)")
        ax.fill_between(t, mean - sd, mean + sd, color=color, alpha=0.2)
        ax.plot(ro.samples / ro.d, ro.M[0, :, 0, j], "k--", lw=1)
    ax.plot([], [], "k--", label="ODE")
    ax.set(xlabel="t = samples / d", ylabel="overlap", title=f"attention, d = {rc.d}: ODE vs simulation")
    ax.legend(fontsize=8)
    return fig
