r"""``sgdlab reproduce curriculum``: curricula vs overparameterisation in the XOR-like Gaussian
mixture (Sarao Mannelli, Ivashynka, Saxe, Saglietti 2024).

The claim checked (their abstract): online learning of a two-layer network with K hidden units
on the XOR-like Gaussian mixture; a larger K raises the chance of a good initial "lottery
ticket" and shrinks the benefit of a curriculum (easy examples first), which vanishes when the
network is highly overparameterised; the effect splits into discovering the relevant manifold
and identifying the labelling rule. The mixture is that of Refinetti, Goldt, Krzakala,
Zdeborova (2021); the difficulty of a sample is its noise in the irrelevant directions
(Saglietti, Sarao Mannelli, Saxe 2022). Only the abstracts are public: everything below that
they do not fix is a reconstruction, marked [R] in the outputs (``CHOICES``, ``parameters``).

Data and student (:mod:`sgdlab.curriculum`): four clusters +-mu u1 (label +1), +-mu u2
(label -1), relevant noise Delta_rel, irrelevant noise Delta_irr = ``EASY`` or ``HARD``;
f(x) = (1/K) sum_k v_k relu(w_k . x + b_k) with trained v (v_k(0) = +1, -1, +1, ...), biases
(a bias coordinate of the data law, trained at the weights' rate), half square loss on +-1
labels, plain online SGD with batch 1 at the matched effective step size lr = eta K / d for
both layers (part 6 also at the fixed lr = eta / d). Every schedule runs the same number of
samples and is scored on the same hard test distribution (Delta_irr = ``HARD``), by the
classification error of sign(f) computed from the order parameters
(:func:`sgdlab.curriculum.hard_error`). Runs are on the exact ``chain`` (cost independent of
d); one small configuration is compared with the ``full`` simulation in law (KS tests).

Parts:

1. hard-test error vs samples for no curriculum, curriculum (easy until half the budget),
   anti-curriculum, random mixing (easy fraction 1/2) and annealing, at every K;
2. the curriculum benefit B(K) = err(no curriculum) - err(curriculum) at the budget (paired
   over seeds: the schedules share the seeds, hence the initial states; mean and 95%
   interval), and the time to reach the success threshold (Kaplan-Meier median, bootstrap
   interval) per schedule;
3. success probability (final hard-test error below ``THRESHOLD``) vs K with Wilson intervals;
4. the two sub-tasks over time: relevant-manifold discovery (share of the first-layer energy in
   the relevant plane) and rule identification (every cluster served by an active unit with the
   right readout sign); the lottery: initial angle of each unit in the relevant plane against
   the cluster it serves at the end;
5. ODE vs chain mean curves at one K, both from one common state, at two d (``ode_ds``): the
   order parameters' gap in standard errors shrinks with d and is a few SE at the larger d;
6. B(K) at the fixed step lr = eta / d (the 1/K prefactor then slows learning by K) beside the
   matched one.

A control: with Delta_easy = Delta_hard every schedule is the same process; the reproduction
runs each schedule so and reports whether the trajectories are bit for bit those of no
curriculum.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from .. import curriculum as C
from ..analysis import escape_statistics, wilson_interval
from ._common import (
    RUNS_ITSELF,
    Outputs,
    cached_arrays,
    chain_vs_ode,
    description_key,
    fig_chain_vs_ode,
    fmt_g,
    markdown_table,
    require_engine,
    write_outputs,
)

__all__ = ["CHOICES", "FULL", "QUICK", "Spec", "benefit", "law_statistics", "merge_ode_part", "reproduce", "run_cached"]

MU = 1.4  # norm of the cluster means ("unit" scaling)
DELTA_REL = 0.05  # relevant-plane noise variance
EASY, HARD = 0.1, 1.0  # irrelevant-direction noise variances
ETA = 1.0  # effective per-unit step: lr * s_K = ETA / d
BIAS = 1.0  # bias coordinate: biases trained at the weights' rate
THRESHOLD = 0.1  # success: hard-test error below this
N_MC = 1024  # normal draws per cluster of the test error
RECORDS = 40
MIX_FRACTION = 0.5
ODE_M0, ODE_T = 0.2, 6.0  # part 5: overlap norm of the common start, horizon (samples / d)
ODE_QUANTITIES = ("hard_error", "Q_trace", "rel_energy", "a_abs")  # part 5: compared with the chain
# part 5's check is on the order parameters: the hard error is a non-linear function of the state,
# and the chain's mean error over seeds is not the error of the ODE's (mean) state
ODE_CHECKED = ("Q_trace", "rel_energy", "a_abs")
ODE_DS = (200, 800)  # part 5: the d of the two comparisons
ODE_Z_MAX = 6.0  # part 5's check: largest |ODE - chain mean| / SE over records at the larger d [R]
ODE_SEEDS = 256  # part 5: chain seeds
SCHEDULES = ("none", "curriculum", "anti", "mixed", "anneal")
LABELS = {"none": "no curriculum", "curriculum": "curriculum (easy first)", "anti": "anti-curriculum",
          "mixed": "random mixing", "anneal": "annealing"}
COLORS = {"none": "k", "curriculum": "tab:blue", "anti": "tab:red", "mixed": "tab:green", "anneal": "tab:purple"}

CHOICES = {
    "paper": [
        "online two-layer network with K hidden units on the XOR-like Gaussian mixture; curriculum = "
        "order of easy and hard examples; larger K raises the chance of a good initial lottery ticket and "
        "shrinks the curriculum benefit, which vanishes for highly overparameterised networks; the effect "
        "splits into relevant-manifold discovery and rule identification",
    ],
    "prior": [
        "four clusters +-mu u1 (label +1), +-mu u2 (label -1); student sum_k v_k g(w_k.x); half square "
        "loss on +-1 labels; time t = samples / d (Refinetti, Goldt, Krzakala, Zdeborova 2021)",
        "difficulty = noise variance in the irrelevant directions (Saglietti, Sarao Mannelli, Saxe 2022)",
    ],
    "R": [
        f"x = mu_c + sqrt(Delta_rel) P_rel z + sqrt(Delta_irr) P_perp z, |mu_c| = mu = {MU} (means of norm "
        f"O(1): a search phase from overlaps O(d^-1/2)), Delta_rel = {DELTA_REL}, easy Delta_irr = {EASY}, "
        f"hard Delta_irr = {HARD}",
        "ReLU units with biases (a constant input coordinate of value 1: biases trained at the weights' "
        "rate, starting at O(d^-1/2)); second layer trained, v_k(0) = +1, -1, +1, ... (half the units "
        "start with each readout sign); output prefactor 1/K",
        f"plain online SGD, batch 1, matched effective step lr = eta K / d for both layers, eta = {ETA}; "
        "part 6 also at the fixed lr = eta / d",
        "rows start uniform on the unit sphere (the lottery: their angles in the relevant plane)",
        "curriculum: easy until half the budget, then hard; anti-curriculum: the reverse; random mixing: "
        f"each step easy with probability {MIX_FRACTION} (one fixed pseudo-random order for all seeds); "
        "annealing: Delta_irr linear from easy to hard over the first half, hard after",
        f"score: classification error of sign(f) on the hard distribution from the order parameters "
        f"({N_MC} common normal draws per cluster); success: final error < {THRESHOLD}; B(K): paired mean "
        "error difference no curriculum - curriculum at the budget, 95% normal interval over seeds",
        "unit -> cluster: argmax_c of the unit's mean field M_j mu_c + b_j; rule identified: each cluster "
        "has an active unit (positive mean field) with the readout sign of its label; relevant-manifold "
        "discovery: sum_j |P_rel w_j|^2 / (sum_j |P_rel w_j|^2 + sum_j |P_perp w_j|^2)",
    ],
}


@dataclass(frozen=True)
class Spec:
    d: int
    Ks: tuple[int, ...]
    seeds: int
    horizon_t: float  # budget in units of d samples
    schedules: tuple[str, ...]
    fixed_schedules: tuple[str, ...]  # part 6 at the fixed step
    law_K: int  # chain vs full in law: the curriculum run at this K, on both engines
    ode_K: int | None  # part 5 at this K (None: off)
    ode_ds: tuple[int, ...] = ODE_DS  # part 5 at each of these d


FULL = Spec(d=200, Ks=(4, 8, 16), seeds=256, horizon_t=30.0, schedules=SCHEDULES,
            fixed_schedules=("none", "curriculum"), law_K=4, ode_K=4)
QUICK = Spec(d=100, Ks=(4, 12), seeds=128, horizon_t=24.0, schedules=("none", "curriculum"),
             fixed_schedules=("none", "curriculum"), law_K=4, ode_K=4)


def xor(d: int | None = None) -> C.XORMixture:
    return C.XORMixture(mu=MU, delta_rel=DELTA_REL, scaling="unit", bias=BIAS)


def difficulty(kind: str, steps: int, easy: float = EASY, hard: float = HARD) -> C.Difficulty:
    """The schedule of a run with ``steps`` steps: switch at half the budget."""
    switch = 0 if kind in ("none", "mixed") else steps // 2
    return C.Difficulty(kind=kind, easy=easy, hard=hard, switch=switch, fraction=MIX_FRACTION)


# ----------------------------------------------------------------------------- runs


def _desc(part: str, K: int, schedule: str, *, d: int, steps: int, seeds: int, seed: int, step: str = "matched",
          engine: str = "chain", easy: float = EASY, hard: float = HARD, every: int | None = None) -> dict:
    """A run as plain data (also its cache key)."""
    eta_lr = ETA * K if step == "matched" else ETA  # mean readout: s_K = 1/K
    if schedule == "none":
        easy = hard  # no easy phase: one canonical description (and one compiled program)
    return {"part": part, "K": K, "schedule": schedule, "d": d, "steps": steps, "seeds": seeds, "seed": seed,
            "step": step, "lr": eta_lr / d, "engine": engine, "easy": easy, "hard": hard,
            "every": every or max(1, steps // RECORDS),
            "xor": asdict(xor()), "activation": "relu", "output_scale": "mean", "batch": 1}


def _objects(desc: dict):
    from ..model import Student, Training

    law = C.XORMixture(**desc["xor"])
    problem = law.problem(desc["d"], difficulty(desc["schedule"], desc["steps"], desc["easy"], desc["hard"]))
    K = desc["K"]
    student = Student(width=K, activation=desc["activation"], second_layer="trained",
                      output_scale=desc["output_scale"], a0=tuple(1.0 if j % 2 == 0 else -1.0 for j in range(K)))
    init = "random"
    if "start" in desc:  # one given state (Q0, M0, a0) for every seed
        from ..init import Gram

        init = Gram(*(np.asarray(desc["start"][k]) for k in ("Q", "M", "a")))
    training = Training(lr=desc["lr"], lr_second=desc["lr"], steps=desc["steps"], batch=desc["batch"],
                        record_every=desc["every"], init=init)
    return problem, student, training


def _execute(desc: dict) -> dict:
    from ..engines import ODE, Chain, Full

    engine = {"chain": Chain(), "full": Full(dtype="float64"), "ode": ODE()}[desc["engine"]]
    problem, student, training = _objects(desc)
    t0 = time.perf_counter()
    if desc["engine"] == "ode":
        from ..api import run

        res = run(problem, student, training, engine=engine)
        out = {"steps": res.steps, "M": res.M, "Q": res.Q, "a": res.a, "diverged_step": res.diverged_step}
    else:
        tr = C.simulate(problem, student, training, engine=engine, seeds=desc["seeds"], seed=desc["seed"])
        out = {"steps": tr.steps, "M": tr.M, "Q": tr.Q, "a": tr.a, "diverged_step": tr.diverged_step}
    out = {k: np.asarray(v) for k, v in out.items()}
    out["wall_s"] = np.asarray(time.perf_counter() - t0)
    return out


def _key(desc: dict) -> str:
    return description_key(desc)


def run_cached(desc: dict, store: str | Path | None) -> dict:
    """The run's trajectory arrays, read from ``store/curriculum/<key>.npz`` when there (runs of
    Python-function targets and schedules are not store configurations: they are cached here
    by the hash of their description)."""
    return cached_arrays("curriculum", desc, store, _execute)


# ----------------------------------------------------------------------------- statistics


def _errors(desc: dict, out: dict, store) -> np.ndarray:
    """Hard-test error per (seed, record), cached beside the run."""
    path = None if store is None else Path(store) / "curriculum" / f"{_key(desc)}.error{N_MC}.npy"
    if path is not None and path.is_file():
        return np.load(path)
    err = C.hard_error(out["M"], out["Q"], out["a"], C.XORMixture(**desc["xor"]), desc["d"], HARD, n=N_MC)
    if path is not None:
        np.save(path, err)
    return err


def benefit(err_none: np.ndarray, err_cur: np.ndarray) -> dict:
    """Paired curriculum benefit at the budget: mean over seeds of err_none - err_cur, its standard
    error and 95% normal interval (seeds that diverged in either run are dropped)."""
    diff = np.asarray(err_none, float) - np.asarray(err_cur, float)
    diff = diff[np.isfinite(diff)]
    n = diff.size
    m = float(diff.mean()) if n else math.nan
    se = float(diff.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return {"B": m, "se": se, "ci": [m - 1.96 * se, m + 1.96 * se], "n": n}


def _first_below(err: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """First recorded step with error < THRESHOLD per seed (-1: never)."""
    ok = err < THRESHOLD
    hit = np.argmax(ok, axis=1)
    return np.where(ok.any(axis=1), steps[hit], -1)


def _summary(desc: dict, out: dict, seed: int, store=None) -> dict:
    err = _errors(desc, out, store)
    law = C.XORMixture(**desc["xor"])
    d, steps = desc["d"], out["steps"]
    final = err[:, -1]
    ok = np.isfinite(final)
    k = int(np.sum(final[ok] < THRESHOLD))
    n = int(ok.sum())
    first = _first_below(err, steps)
    esc = escape_statistics(np.where(first >= 0, first, np.nan), int(steps[-1]), d=d, seed=seed)
    rel, irr = C.energies(out["M"], out["Q"], law)
    asg = C.assignment(out["M"], out["Q"], out["a"], law, d, HARD)
    ticket = C.lottery_ticket(out["M"][:, 0], out["a"][:, 0], law)
    win = final < THRESHOLD
    nt, kt = int(ticket.sum()), int(np.sum(win & ticket))
    nn, kn = int((~ticket).sum()), int(np.sum(win & ~ticket))
    K = desc["K"]
    return {
        "K": desc["K"], "schedule": desc["schedule"], "step": desc["step"], "n_seeds": int(err.shape[0]),
        "n_diverged": int(np.sum(out["diverged_step"] >= 0)),
        "final_error_mean": float(np.nanmean(final)), "final_error_se": float(np.nanstd(final) / math.sqrt(max(n, 1))),
        "success": k, "success_p": k / max(n, 1), "success_ci": list(wilson_interval(k, n)),
        "t_threshold_median": _fin(esc.median_t), "t_threshold_ci": [_fin(x) for x in esc.median_t_ci],
        "n_reached": esc.n_escaped,
        "ticket_p": nt / len(ticket), "ticket_theory": C.ticket_probability((K + 1) // 2, K // 2),
        "success_given_ticket": [kt, nt, *wilson_interval(kt, nt)],
        "success_given_no_ticket": [kn, nn, *wilson_interval(kn, nn)],
        "_err": err, "_t": steps / d, "_rel_share": rel / (rel + irr), "_rule": asg["rule"].astype(float),
        "_final": final,
    }


def _fin(x) -> float | None:
    """A finite number, or None (a median censored at the budget)."""
    return float(x) if x is not None and math.isfinite(x) else None


def _public(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith("_")}


def _nonneg_monotone(rows: list[dict]) -> bool:
    """Success probability non-decreasing in K within intervals: no later K whose upper Wilson
    bound is below an earlier K's lower bound."""
    return all(rows[j]["success_ci"][1] >= rows[i]["success_ci"][0]
               for i in range(len(rows)) for j in range(i + 1, len(rows)))


# ----------------------------------------------------------------------------- the law check


def law_statistics(oc: dict, of: dict, law: C.XORMixture, d: int) -> dict:
    """Two-sample KS tests, chain (``oc``) vs full (``of``), of the final hard-test error, an
    overlap with u1, a bias, two Q entries and a readout weight."""
    from scipy.stats import ks_2samp

    stats = {}
    for name, fn in {
        "hard_error": lambda o: C.hard_error(o["M"][:, -1], o["Q"][:, -1], o["a"][:, -1], law, d, HARD, n=N_MC),
        "M_0_u1": lambda o: law.relevant(o["M"])[:, -1, 0, 0],
        "bias_0": lambda o: law.biases(o["M"])[:, -1, 0],
        "Q_0_0": lambda o: o["Q"][:, -1, 0, 0],
        "Q_0_1": lambda o: o["Q"][:, -1, 0, 1],
        "a_0": lambda o: o["a"][:, -1, 0],
    }.items():
        x, y = np.asarray(fn(oc)), np.asarray(fn(of))
        r = ks_2samp(x[np.isfinite(x)], y[np.isfinite(y)])
        stats[name] = {"ks": float(r.statistic), "p": float(r.pvalue), "mean_chain": float(np.nanmean(x)),
                       "mean_full": float(np.nanmean(y))}
    return stats


def _law_check(spec: Spec, store, seed: int) -> dict:
    """Chain vs full: the curriculum run at K = law_K (d, seeds, budget of the reproduction) on
    both engines, :func:`law_statistics`, Bonferroni at 1%."""
    ch = plan(spec, seed=seed)[("matched", spec.law_K, "curriculum")]
    fu = {**ch, "engine": "full"}
    stats = law_statistics(run_cached(ch, store), run_cached(fu, store), C.XORMixture(**ch["xor"]), spec.d)
    pmin = min(s["p"] for s in stats.values())
    return {"K": spec.law_K, "d": spec.d, "steps": ch["steps"], "seeds": ch["seeds"], "schedule": "curriculum",
            "tests": stats, "min_p": pmin, "bonferroni_ok": bool(pmin > 0.01 / len(stats))}


def _control(spec: Spec, store, seed: int) -> dict:
    """With Delta_easy = Delta_hard every schedule of the reproduction must give bit for bit the
    trajectory of no curriculum (same seeds, K, d and budget as the main runs)."""
    main = plan(spec, seed=seed)
    K = min(spec.Ks)
    outs = {s: run_cached({**main[("matched", K, "none")], "schedule": s, "easy": HARD}, store)
            for s in spec.schedules}
    ref = outs["none"]
    same = {s: bool(all(np.array_equal(o[k], ref[k]) for k in ("M", "Q", "a"))) for s, o in outs.items()}
    return {"K": K, "schedules": list(spec.schedules), "identical_to_none": same, "all_identical": all(same.values())}


# ----------------------------------------------------------------------------- ODE


def ode_start(K: int, seed: int) -> dict:
    """Part 5's common start [R]: unit rows whose overlaps with (u1, u2) have norm ODE_M0 at angles
    drawn once (``seed``), no bias, orthogonal rows, readouts +1, -1, ..."""
    theta = np.random.default_rng(seed).uniform(-np.pi, np.pi, K)
    M = np.zeros((K, 3))
    M[:, 1], M[:, 2] = ODE_M0 * np.cos(theta), ODE_M0 * np.sin(theta)
    return {"Q": np.eye(K).tolist(), "M": M.tolist(), "a": [1.0 if j % 2 == 0 else -1.0 for j in range(K)]}


def _ode_part(spec: Spec, store, seed: int) -> dict | None:
    """Part 5: the ODE is deterministic, and the chain's mean over random starts is not the ODE
    from the mean start (the lottery). Both start from one state (:func:`ode_start`) and run
    ODE_T d samples of the curriculum schedule (switch at half); the chain's mean over its seeds
    (SGD noise only) is compared with the ODE."""
    if spec.ode_K is None:
        return None
    steps = int(round(ODE_T * spec.d))
    ch = {**_desc("ode", spec.ode_K, "curriculum", d=spec.d, steps=steps, seeds=ODE_SEEDS, seed=seed,
                  every=steps // 20), "start": ode_start(spec.ode_K, seed + 2026)}
    od = {**ch, "engine": "ode", "seeds": 1}
    try:
        o_ode = run_cached(od, store)
    except Exception as e:  # the ODE engine cannot run this network: said, not hidden
        return {"K": spec.ode_K, "error": f"{type(e).__name__}: {e}"[:400]}
    o_ch = run_cached(ch, store)
    law = C.XORMixture(**ch["xor"])
    out = {"K": spec.ode_K, "m0": ODE_M0, "t": (o_ch["steps"] / spec.d).tolist(), "seeds": ch["seeds"]}
    for name, fn in {"Q_trace": lambda o: np.einsum("...jj->...", o["Q"]),
                     "rel_energy": lambda o: C.energies(o["M"], o["Q"], law)[0],
                     "a_abs": lambda o: np.abs(o["a"]).mean(-1),
                     "hard_error": lambda o: C.hard_error(o["M"], o["Q"], o["a"], law, spec.d, HARD, n=N_MC)}.items():
        out[name] = chain_vs_ode(fn(o_ch), o_ch["steps"], fn(o_ode)[0], o_ode["steps"])
    out["wall_ode_s"] = float(o_ode["wall_s"])
    return out


def _ode_parts(spec: Spec, store, seed: int) -> dict | None:
    """Part 5 at each d of ``spec.ode_ds``: per d the largest |ODE - chain mean| over records and
    its size in standard errors; the curves of the largest d; and the check: for every order
    parameter of ODE_CHECKED the gap in SE shrinks from the smallest to the largest d and is
    below ODE_Z_MAX there."""
    if spec.ode_K is None:
        return None
    t0 = time.perf_counter()
    by_d, last = {}, None
    for d in spec.ode_ds:
        ode = _ode_part(replace(spec, d=int(d)), store, seed)
        if "error" in ode:
            by_d[str(d)] = {k: v for k, v in ode.items() if k in ("K", "error")}
            continue
        by_d[str(d)] = {"seeds": ode["seeds"], "wall_ode_s": ode["wall_ode_s"],
                        "max_abs_z": {k: ode[k]["max_abs_z"] for k in ODE_QUANTITIES},
                        "max_abs_diff": {k: ode[k]["max_abs_diff"] for k in ODE_QUANTITIES}}
        last = (d, ode)
    part = {"K": int(spec.ode_K), "m0": ODE_M0, "by_d": by_d, "wall_s": time.perf_counter() - t0,
            "checked": list(ODE_CHECKED), "z_max": ODE_Z_MAX}
    zs = [by_d[str(d)]["max_abs_z"] for d in spec.ode_ds if "max_abs_z" in by_d[str(d)]]
    if len(zs) == len(spec.ode_ds) >= 2:
        part["check"] = {k: bool(zs[-1][k] < zs[0][k] and zs[-1][k] < ODE_Z_MAX) for k in ODE_CHECKED}
    if last is not None:
        d, ode = last
        part |= {"d": int(d), "t": ode["t"], "curves": {k: ode[k] for k in ODE_QUANTITIES}}
    return part


def _ode_lines(part: dict | None) -> list[str]:
    """Part 5's lines of table.md."""
    if part is None:
        return ["- part 5 (ODE vs chain): not in this mode"]
    lines = []
    for d, row in part["by_d"].items():
        if "error" in row:
            lines.append(f"- part 5 (ODE vs chain, K = {part['K']}, d = {d}): the ODE engine could not run it: "
                         f"{row['error']}")
            continue
        z = ", ".join(f"{k} {row['max_abs_z'][k]:.1f} SE ({row['max_abs_diff'][k]:.3g})" for k in ODE_QUANTITIES)
        lines.append(f"- part 5 (ODE vs chain mean from one state, K = {part['K']}, d = {d}, {row['seeds']} chain "
                     f"seeds): largest |ODE - chain mean| over records: {z}")
    if "check" in part:
        lines.append(f"- part 5 check (order parameters {', '.join(part['checked'])}: gap in SE shrinking with d and "
                     f"below {part['z_max']:g} SE at the larger d; the hard error, non-linear in the state, is "
                     f"reported only): {part['check']}")
    return lines


# ----------------------------------------------------------------------------- figures


def _fig_curves(spec: Spec, rows: dict):
    import matplotlib.pyplot as plt

    Ks = (min(spec.Ks), max(spec.Ks))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, K in zip(axes, Ks, strict=True):
        for s in spec.schedules:
            r = rows[("matched", K, s)]
            m = np.nanmean(r["_err"], 0)
            se = np.nanstd(r["_err"], 0) / math.sqrt(r["_err"].shape[0])
            ax.plot(r["_t"], m, color=COLORS[s], label=LABELS[s])
            ax.fill_between(r["_t"], m - se, m + se, color=COLORS[s], alpha=0.2)
        ax.axvline(spec.horizon_t / 2, color="0.6", ls=":", lw=1, label="switch (half the budget)")
        ax.axhline(THRESHOLD, color="0.6", ls="--", lw=1, label=f"success threshold {THRESHOLD}")
        ax.set(title=f"K = {K}", xlabel="samples / d", ylim=(0, 0.65))
    axes[0].set_ylabel("hard-test classification error (mean ± SE)")
    axes[1].legend(fontsize=8)
    fig.suptitle(f"Part 1: hard-test error vs samples (chain, d = {spec.d}, {spec.seeds} seeds)")
    return fig


def _fig_benefit(spec: Spec, ben: dict, rows: dict):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    ax = axes[0]
    for step, mk in (("matched", "o-"), ("fixed", "s--")):
        b = [ben[step][K] for K in spec.Ks]
        ax.errorbar(spec.Ks, [x["B"] for x in b], yerr=[1.96 * x["se"] for x in b], fmt=mk, capsize=3,
                    label=f"{step} step ({'lr = eta K / d' if step == 'matched' else 'lr = eta / d'})")
    ax.axhline(0, color="0.5", lw=1)
    ax.set(xscale="log", xlabel="K (hidden units)", ylabel="B(K) = err(none) - err(curriculum) at the budget",
           title="Parts 2 and 6: curriculum benefit (95% CI)")
    ax.set_xticks(spec.Ks, [str(k) for k in spec.Ks])
    ax.legend(fontsize=8)
    ax = axes[1]
    for s in spec.schedules:
        med = [rows[("matched", K, s)]["t_threshold_median"] for K in spec.Ks]
        ci = [rows[("matched", K, s)]["t_threshold_ci"] for K in spec.Ks]
        y = np.array([np.nan if m is None else m for m in med], float)
        lo = np.array([np.nan if c[0] is None else c[0] for c in ci], float)
        hi = np.array([spec.horizon_t * 1.05 if c[1] is None else c[1] for c in ci], float)
        with np.errstate(invalid="ignore"):
            err = np.maximum([np.nan_to_num(y - lo), np.nan_to_num(hi - y)], 0.0)
        ax.errorbar(spec.Ks, y, yerr=err, fmt="o-", color=COLORS[s], capsize=3, label=LABELS[s])
    ax.axhline(spec.horizon_t, color="0.6", ls=":", lw=1, label="budget (censored above)")
    ax.set(xscale="log", xlabel="K", ylabel=f"samples / d to error < {THRESHOLD} (KM median, 95% CI)",
           title="Part 2: time to threshold")
    ax.set_xticks(spec.Ks, [str(k) for k in spec.Ks])
    ax.legend(fontsize=8)
    ax = axes[2]
    for s in spec.schedules:
        rr = [rows[("matched", K, s)] for K in spec.Ks]
        p = np.array([r["success_p"] for r in rr])
        lo = np.array([r["success_ci"][0] for r in rr])
        hi = np.array([r["success_ci"][1] for r in rr])
        yerr = np.maximum([p - lo, hi - p], 0.0)  # Wilson bounds at p = 0 or 1 round off by ~1e-17
        ax.errorbar(spec.Ks, p, yerr=yerr, fmt="o-", color=COLORS[s], capsize=3, label=LABELS[s])
    kk = np.arange(min(spec.Ks), max(spec.Ks) + 1, 2)
    ax.plot(kk, [C.ticket_probability(k // 2, k // 2) for k in kk], "k:",
            label="P(good initial ticket) = (1 - 2^(1 - K/2))^2")
    ax.set(xscale="log", xlabel="K", ylabel=f"P(final hard-test error < {THRESHOLD}) (Wilson 95%)",
           title="Part 3: success probability", ylim=(0, 1.02))
    ax.set_xticks(spec.Ks, [str(k) for k in spec.Ks])
    ax.legend(fontsize=8)
    return fig


def _fig_subtasks(spec: Spec, rows: dict, lottery: dict):
    import matplotlib.pyplot as plt

    Ks = (min(spec.Ks), max(spec.Ks))
    fig, axes = plt.subplots(1, 3, figsize=(18, 4.5), gridspec_kw={"wspace": 0.45})
    for K, ls in zip(Ks, ("-", "--"), strict=True):
        for s in spec.schedules:
            r = rows[("matched", K, s)]
            axes[0].plot(r["_t"], np.nanmean(r["_rel_share"], 0), ls, color=COLORS[s], label=f"{LABELS[s]}, K = {K}")
            axes[1].plot(r["_t"], np.nanmean(r["_rule"], 0), ls, color=COLORS[s], label=f"{LABELS[s]}, K = {K}")
    axes[0].set(xlabel="samples / d", ylabel="relevant share of first-layer energy (mean)",
                title="Part 4: relevant-manifold discovery", yscale="log")
    axes[1].set(xlabel="samples / d", ylabel="fraction of seeds with the rule identified",
                title="Part 4: rule identification", ylim=(0, 1.02))
    axes[1].legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2)
    ax = axes[2]
    th, cl, v, act = lottery["angle"], lottery["cluster"], lottery["sign"], lottery["active"]
    names = ["+mu u1 (+1)", "-mu u1 (+1)", "+mu u2 (-1)", "-mu u2 (-1)", "none (inactive)"]
    row = np.where(act, cl, 4)
    jitter = 0.3 * (np.random.default_rng(0).random(th.size) - 0.5)
    for sg, mk, col in ((1, "o", "tab:blue"), (-1, "x", "tab:red")):
        sel = v == sg
        ax.scatter(th[sel], row[sel] + jitter[sel], s=7, marker=mk, color=col, alpha=0.6,
                   label=f"units with v(0) = {sg:+d}")
    ax.set(xlabel="initial angle atan2(M_u2, M_u1) of the unit", yticks=range(5), yticklabels=names,
           ylabel="cluster served at the end (label)",
           title=f"Part 4: the lottery (K = {lottery['K']}, {LABELS[lottery['schedule']]})")
    for x in (-np.pi / 2, 0, np.pi / 2):
        ax.axvline(x, color="0.7", lw=0.8)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2)
    return fig


def _fig_ode(part: dict):
    """Part 5's figure at its largest d (``_ode_parts``)."""
    d = part["d"]
    return fig_chain_vs_ode(part["curves"], part["t"], title=f"Part 5: ODE vs chain from one state (overlaps "
                            f"{part['m0']:g}; K = {part['K']}, curriculum; chain mean over "
                            f"{part['by_d'][str(d)]['seeds']} seeds), d = {d}")


# ----------------------------------------------------------------------------- main


def plan(spec: Spec, seeds: int | None = None, seed: int = 0) -> dict:
    """The runs of parts 1-4 and 6: (step, K, schedule) -> description."""
    S = seeds or spec.seeds
    steps = int(round(spec.horizon_t * spec.d))
    runs = {("matched", K, s): _desc("main", K, s, d=spec.d, steps=steps, seeds=S, seed=seed)
            for K in spec.Ks for s in spec.schedules}
    runs |= {("fixed", K, s): _desc("main", K, s, d=spec.d, steps=steps, seeds=S, seed=seed, step="fixed")
             for K in spec.Ks for s in spec.fixed_schedules}
    return runs


def reproduce(*, quick: bool = False, engine: str = "chain", store: str | Path | None = "results/store",
              out: str | Path | None = None, seeds: int | None = None, workers: int | None = None,
              progress: bool = False, seed: int = 0, ode_width: int | None = None) -> Outputs:
    """Run (or read back from ``store``) every run and write ``curves.png``, ``benefit.png``,
    ``subtasks.png`` (and ``ode.png``), ``table.md`` and ``results.json`` into ``out`` (default
    ``results/reproduce/curriculum[-quick]``). ``engine`` must be ``"chain"`` (the law check
    runs ``full`` itself); ``workers`` is unused (the seeds of a run are vmapped). ``ode_width``:
    run part 5 at that K instead of 4 (0: leave part 5 out)."""
    del workers
    require_engine(engine, ("chain",), RUNS_ITSELF)
    started = time.perf_counter()
    spec = QUICK if quick else FULL
    if ode_width is not None:
        spec = replace(spec, ode_K=int(ode_width) or None)
    out = Path(out) if out is not None else Path("results/reproduce") / ("curriculum" + ("-quick" if quick else ""))
    runs = plan(spec, seeds, seed)
    order = sorted(runs, key=lambda k: runs[k]["K"])
    rows, wall = {}, 0.0
    t_runs = time.perf_counter()
    for i, key in enumerate(order):
        if progress:
            print(f"[curriculum] run {i + 1}/{len(order)}: {key}", flush=True)
        o = run_cached(runs[key], store)
        wall += float(o["wall_s"])
        rows[key] = _summary(runs[key], o, seed, store)
        if key == ("matched", min(spec.Ks), "none"):
            law = C.XORMixture(**runs[key]["xor"])
            asg = C.assignment(o["M"][:, -1], o["Q"][:, -1], o["a"][:, -1], law, spec.d, HARD)
            lottery = {"K": key[1], "schedule": key[2], "angle": C.initial_angles(o["M"][:, 0], law).ravel(),
                       "cluster": asg["cluster"].ravel(), "sign": np.sign(o["a"][:, 0]).ravel().astype(int),
                       "active": asg["active"].ravel()}
    control = _control(spec, store, seed)
    law_check = _law_check(spec, store, seed)
    ode = _ode_parts(spec, store, seed)
    compute_s = time.perf_counter() - t_runs

    ben = {step: {K: benefit(rows[(step, K, "none")]["_final"], rows[(step, K, "curriculum")]["_final"])
                  for K in spec.Ks} for step in ("matched", "fixed")}
    Kmin, Kmax = min(spec.Ks), max(spec.Ks)
    bm = ben["matched"]
    checks = {
        "B_small_K_positive": bool(bm[Kmin]["ci"][0] > 0),
        "B_large_below_small": bool(bm[Kmax]["B"] < bm[Kmin]["B"]),
        "success_nondecreasing_in_K": {s: _nonneg_monotone([rows[("matched", K, s)] for K in spec.Ks])
                                       for s in spec.schedules},
        "equal_noise_identical": control["all_identical"],
        "chain_equals_full_in_law": law_check["bonferroni_ok"],
    }
    if ode is not None and "check" in ode:
        checks["ode_within_few_se"] = all(ode["check"].values())
    # the lottery: does the initial sign of M_u1 (v > 0) / M_u2 (v < 0) decide the cluster served?
    th, cl, sg = lottery["angle"], lottery["cluster"], lottery["sign"]
    pred = np.where(sg > 0, np.where(np.cos(th) > 0, 0, 1), np.where(np.sin(th) > 0, 2, 3))
    act = lottery["active"]
    lottery_summary = {"K": lottery["K"], "schedule": lottery["schedule"], "units": int(th.size),
                       "fraction_active": float(np.mean(act)),
                       "active_serving_initial_half_plane": float(np.mean(pred[act] == cl[act]))}
    summary = {
        "claim": "a larger K raises the chance of a good initial lottery ticket and shrinks the benefit of a "
                 "curriculum (Sarao Mannelli, Ivashynka, Saxe, Saglietti 2024)",
        "engine": "chain", "quick": quick, "spec": asdict(spec), "choices": CHOICES,
        "parameters": {"mu": MU, "delta_rel": DELTA_REL, "easy": EASY, "hard": HARD, "eta": ETA, "bias": BIAS,
                       "threshold": THRESHOLD, "n_mc": N_MC, "records": RECORDS, "mix_fraction": MIX_FRACTION,
                       "scaling": "unit", "output_scale": "mean (1/K)", "loss": "square (1/2 (f - y)^2)",
                       "budget_samples": int(round(spec.horizon_t * spec.d))},
        "runs": [_public(r) for r in rows.values()],
        "benefit": {step: {str(K): v for K, v in b.items()} for step, b in ben.items()},
        "checks": checks, "control": control, "law_check": law_check, "lottery": lottery_summary,
        "ode": ode,
        "compute_s": compute_s, "runs_wall_s": wall,
    }
    figures = {"curves.png": _fig_curves(spec, rows), "benefit.png": _fig_benefit(spec, ben, rows),
               "subtasks.png": _fig_subtasks(spec, rows, lottery)}
    if ode is not None and "curves" in ode:
        figures["ode.png"] = _fig_ode(ode)
    return write_outputs(out, name="curriculum", summary=summary, table=_table(spec, rows, ben, summary),
                         figures=figures, started=started)


def _table(spec: Spec, rows: dict, ben: dict, summary: dict) -> str:
    cols = [("K", "K", fmt_g()), ("schedule", "schedule", str), ("step", "step", str),
            ("final_error_mean", "final error", fmt_g(".3f")), ("final_error_se", "SE", fmt_g(".3f")),
            ("success", "successes", fmt_g()), ("n_seeds", "seeds", fmt_g()), ("success_p", "P(success)", fmt_g(".2f")),
            ("success_lo", "lo", fmt_g(".2f")), ("success_hi", "hi", fmt_g(".2f")),
            ("t_threshold_median", "t to threshold", fmt_g(".3g")), ("t_lo", "lo", fmt_g(".3g")),
            ("t_hi", "hi", fmt_g(".3g"))]
    table_rows = [{**_public(r), "success_lo": r["success_ci"][0], "success_hi": r["success_ci"][1],
                   "t_lo": r["t_threshold_ci"][0], "t_hi": r["t_threshold_ci"][1]} for r in rows.values()]
    text = (f"Engine: chain, d = {spec.d}, budget {spec.horizon_t:g} d samples, {spec.seeds} seeds per run. "
            "Reconstructed choices [R] are listed in results.json (`choices`, `parameters`).\n\n"
            f"## Parts 1 and 3: final hard-test error, success (error < {THRESHOLD}, Wilson 95%), time to "
            "threshold (samples / d, KM median, 95% bootstrap; '-' = censored at the budget)\n\n"
            + markdown_table(table_rows, cols))
    brow = [{"K": K, "step": step, "B": ben[step][K]["B"], "se": ben[step][K]["se"], "lo": ben[step][K]["ci"][0],
             "hi": ben[step][K]["ci"][1]} for step in ben for K in spec.Ks]
    text += ("\n## Parts 2 and 6: curriculum benefit B(K) = err(none) - err(curriculum) at the budget "
             "(paired over seeds, 95% normal interval)\n\n"
             + markdown_table(brow, [("K", "K", fmt_g()), ("step", "step", str), ("B", "B", fmt_g(".3f")),
                                     ("se", "SE", fmt_g(".3f")), ("lo", "lo", fmt_g(".3f")),
                                     ("hi", "hi", fmt_g(".3f"))]))
    trow = [{"K": r["K"], "schedule": r["schedule"], "step": r["step"], "ticket": r["ticket_p"],
             "theory": r["ticket_theory"], "st": "{}/{} [{:.2f}, {:.2f}]".format(*r["success_given_ticket"]),
             "sn": "{}/{} [{:.2f}, {:.2f}]".format(*r["success_given_no_ticket"])}
            for r in rows.values() if r["step"] == "matched"]
    text += ("\n## The lottery ticket: P(good initial ticket) and success given it (Wilson 95%)\n\n"
             "A good ticket: each cluster has, at the start, a unit of its readout sign on its side of the "
             "relevant plane (`sgdlab.curriculum.lottery_ticket`); theory (1 - 2^(1 - K/2))^2.\n\n"
             + markdown_table(trow, [("K", "K", fmt_g()), ("schedule", "schedule", str),
                                     ("ticket", "P(ticket)", fmt_g(".3f")), ("theory", "theory", fmt_g(".3f")),
                                     ("st", "success given ticket", str), ("sn", "success given no ticket", str)]))
    ch = summary["checks"]
    lc = summary["law_check"]
    text += ("\n## Checks\n\n"
             f"- B(K = {min(spec.Ks)}) interval above 0: {ch['B_small_K_positive']}; B(K = {max(spec.Ks)}) < "
             f"B(K = {min(spec.Ks)}): {ch['B_large_below_small']}\n"
             f"- success non-decreasing in K within intervals: {ch['success_nondecreasing_in_K']}\n"
             f"- equal easy and hard noise, every schedule bit for bit no curriculum: {ch['equal_noise_identical']}\n"
             f"- chain = full in law (K = {lc['K']}, d = {lc['d']}, {lc['seeds']} seeds, KS on "
             f"{len(lc['tests'])} statistics, min p = {lc['min_p']:.3g}): {lc['bonferroni_ok']}\n"
             f"- the lottery (K = {summary['lottery']['K']}, no curriculum): "
             f"{summary['lottery']['active_serving_initial_half_plane']:.2f} of the active units end serving the "
             "cluster on the side of their initial overlap (M_u1 for v(0) > 0, M_u2 for v(0) < 0); "
             f"{summary['lottery']['fraction_active']:.2f} of the units are active at the end\n")
    text += "\n".join(_ode_lines(summary["ode"])) + "\n"
    return text


def merge_ode_part(base: str | Path, K: int = 4, ds: tuple[int, ...] = ODE_DS, *, store=None,
                   seed: int = 0) -> dict:
    """Run part 5 alone (ODE vs chain at width ``K``, :func:`_ode_parts` with the full spec at each
    d of ``ds``) and merge it into the committed outputs in ``base`` (``results.json``,
    ``table.md``, ``ode.png`` at the largest d), leaving the other parts as they are: how part 5
    joins (or is refreshed in) a finished run. Returns part 5's summary."""
    import json

    import matplotlib.pyplot as plt

    from ._common import device_description, package_versions

    base = Path(base)
    summary = json.loads((base / "results.json").read_text())
    part = _ode_parts(replace(FULL, ode_K=int(K), ode_ds=tuple(int(d) for d in ds)), store, seed)
    part |= {"computed_on": device_description(), "versions": package_versions(),
             "merged": "run alone (merge_ode_part) and merged into the committed outputs of the other parts"}
    if "curves" in part:
        fig = _fig_ode(part)
        fig.savefig(base / "ode.png", dpi=130, bbox_inches="tight")
        plt.close(fig)
    summary["ode"] = part
    summary["spec"]["ode_K"] = int(K)
    summary["spec"]["ode_ds"] = [int(d) for d in ds]
    if "check" in part:
        summary.setdefault("checks", {})["ode_within_few_se"] = all(part["check"].values())
    (base / "results.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    lines = [ln for ln in (base / "table.md").read_text().splitlines() if not ln.startswith("- part 5")]
    (base / "table.md").write_text("\n".join(lines + _ode_lines(part)) + "\n")
    return part
