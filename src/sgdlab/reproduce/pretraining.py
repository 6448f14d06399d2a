r"""``sgdlab reproduce pretraining``: pre-training and transfer (Jones-McCormick, Jagannath, Sen 2025).

The claim checked (their abstract): on spiked single-index problems, a start from unsupervised
pre-training (PCA on unlabelled inputs) or from a related task (transfer) cuts the sample
complexity of online SGD by polynomial factors in d, and in some settings the gain over a
random start is exponential (the random start is trapped, the PCA start is not).

Setting [paper]: inputs x ~ N(0, I_d + lambda v v^T), labels y = He3(w*.x), one He3 neuron
trained by online SGD, lambda = 1, eta1 = 0.45, d = 1000, random vs PCA starts, the step chosen
so that a random start succeeds at lambda = 0. Everything else is reconstructed [R] (``CHOICES``).
``link`` (``--link NAME``) replaces He3 by another named link of information exponent k >= 2
(target and matched student); the step-size rules, horizons and theory slopes follow its k.
Engine: the exact chain (``sgdlab.engines.Chain``), whose PCA start is the exact finite-d law
of the top eigenvector (:class:`sgdlab.init.PCA`, docs/chain.md); the (m, r) flow and the ODE
from warm starts use the model's expected increment per step with the lr^2 corrector.

Parts:

1. Samples to weak recovery (m >= 0.5, every step) vs d: random start (conditioned on m0 > 0)
   at eta = delta_r d^{-k/2} (k = 3 for He3), PCA (n' = d / gamma inputs, gamma = ``GAMMA``,
   positive sign) and transfer starts at eta = delta_w / d; Kaplan-Meier medians and log-log
   slopes with 95% intervals against k - 1 (1 with a log d factor for k = 2, fitted with
   ``log_correction``) and 1.
2. m(t) at one d for the three starts: chain seeds (median, 10-90% band, mean) and the ODE from
   the warm starts (the chain's mean initial state); the largest |ODE - chain mean| in
   standard errors of the mean.
3. The PCA overlap <v_hat, v>^2 and the top eigenvalue vs gamma at several lambda: exact
   finite-d draws (:func:`sgdlab.spiked.pca_draws`) against the BBP limits.
4. The trap: the (lambda, eta1) phase diagram of the flow at the random-start step (the
   outcome of the flow from the random point and from the PCA point); at one trapped setting,
   chain runs from both starts within a budget of ``TRAP_BUDGET`` d^{k-1} samples.
5. Both PCA signs for an odd link: "random" (as PCA gives it) and "labels" (fixed by
   ``LABELS`` labelled samples, counted in the budget): the fraction of seeds that stall
   (m < 0.5 at the horizon), apart from the escape times of the others. For an even link the
   loss is invariant under w -> -w and escape is measured on |m|: the sign of the PCA start
   is irrelevant and part 5 is not run.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..analysis import escape_from_result, fit_scaling, needs_log_correction, theory_exponent, wilson_interval
from ..config import ConfigError
from ..data import Spiked
from ..engines import ODE, Chain
from ..init import PCA, FromResult, Gram, RandomPositive
from ..model import Problem, Record, Student, Training
from ..spiked import (
    Flow,
    bbp_overlap,
    bbp_threshold,
    bbp_top_eigenvalue,
    mr,
    pca_draws,
    pca_point,
    scan,
)
from ..theory import critical_delta
from ._common import Outputs, fmt_g, markdown_table, require_engine, write_outputs

__all__ = ["CHOICES", "FULL", "LINKS", "QUICK", "Spec", "check_link", "choices", "reproduce"]

LINK = "He3"  # [paper] f = He3 = x^3 - 3x (c_3 = sqrt 6 in the orthonormal basis)
LAMBDA = 1.0  # [paper]
ETA1 = 0.45  # [paper]
GAMMA = 0.25  # [R] d / n' of the PCA start (n' = 4 d: above the BBP threshold at lambda = 1)
LABELS = 512  # [R] labelled samples that fix the PCA sign (part 5)
C_TRANSFER = 0.4  # [R] overlap of the source teacher with w* (below the escape threshold 0.5)
SOURCE_LR = 0.5  # [R] source task (linear teacher, linear student): eta = SOURCE_LR / d
SOURCE_STEPS = 40  # [R] source steps, in units of d
RANDOM_FRACTION = 0.5  # [R] delta_r = RANDOM_FRACTION * delta_c(lambda = 0)
WARM_FRACTION = 0.5  # [R] delta_w = WARM_FRACTION * (largest logged delta whose flow escapes from the PCA point)
DELTA_GRID = tuple(2.0**-k for k in range(1, 13))  # logged warm-step scan (eta = delta / d)
THRESHOLD = 0.5
TRAP_BUDGET = 30.0  # [R] part 4: chain budget in units of d^{k-1} samples


def _links() -> tuple[str, ...]:
    from .._functions import LINK_NAMES, information_exponent

    return tuple(n for n in LINK_NAMES if (information_exponent(n, None, 8) or 0) >= 2)


LINKS = _links()  # the named links with information exponent k >= 2 (He2.., h2.., abs)


def check_link(link: Any, field: str = "link") -> tuple[str, int]:
    """(name, information exponent k) of a link for this reproduction, or a one-line
    :class:`~sgdlab.config.ConfigError` naming ``field``, the value and the allowed names."""
    from .._errors import did_you_mean
    from .._functions import information_exponent

    if not isinstance(link, str) or link not in LINKS:
        why = ""
        if isinstance(link, str):
            try:
                why = f" (information exponent {information_exponent(link, None, 8)})"
            except ValueError:
                why = did_you_mean(link, LINKS)
        raise ConfigError(f"{field}: got {link!r}{why}; allowed: a named link with information exponent k >= 2: "
                          f"{', '.join(LINKS)}")
    return link, int(information_exponent(link, None, 8))


def _half(k: int) -> str:
    """k / 2 as written in the exponent of the random-start step: '3/2' for k = 3, '1' for k = 2."""
    return f"{k // 2}" if k % 2 == 0 else f"{k}/2"


def _odd(link: str) -> bool:
    """Whether the link is odd (its even Hermite coefficients vanish)."""
    from .._functions import hermite_coefficients

    return bool(np.all(np.abs(hermite_coefficients(link, 8)[::2]) < 1e-12))


def choices(link: str = LINK) -> dict[str, list[str]]:
    """The settings of the run, marked [paper] / [prior] / [R], for ``link`` (the paper's He3
    by default; another link is itself an [R] choice)."""
    _, k = check_link(link)
    half = _half(k)
    out = {
        "paper": list(CHOICES["paper"]),
        "prior": [CHOICES["prior"][0],
                  f"BAGJ: random start n ~ d^{{k-1}} (k = {k}) at eta ~ d^{{-{half}}}; a Theta(1) warm start n ~ d "
                  "at eta ~ 1/d"],
        "R": [c.replace("d^-3/2", f"d^-{half}").replace("d^2 samples", "d^{k-1} samples" if k != 3 else "d^2 samples")
              for c in CHOICES["R"]],
    }
    if link != LINK:
        out["R"].insert(0, f"link {link} (information exponent k = {k}) in place of the paper's {LINK}: target "
                           f"y = {link}(w*.x) and a {link} student")
    return out


CHOICES = {
    "paper": [
        "x ~ N(0, I + lambda v v^T), y = He3(w*.x), one He3 neuron, online SGD; lambda = 1, eta1 = 0.45, "
        "d = 1000; random vs PCA starts; the step chosen so that a random start succeeds at lambda = 0",
    ],
    "prior": [
        "BBP: <v_hat, v>^2 -> (1 - gamma/lambda^2) / (1 + gamma/lambda) above lambda = sqrt(gamma), 0 below; "
        "top eigenvalue (1 + lambda)(1 + gamma/lambda), else (1 + sqrt gamma)^2",
        "BAGJ: random start n ~ d^{k-1} (k = 3) at eta ~ d^{-3/2}; a Theta(1) warm start n ~ d at eta ~ 1/d",
    ],
    "R": [
        "v = eta1 w* + sqrt(1 - eta1^2) v_perp; the target sees the raw field w*.x (variance 1 + lambda eta1^2)",
        "square loss 1/2 (f - y)^2, spherical online SGD (tangent projection, step, renormalise), batch 1, "
        "Euclidean unit sphere, no label noise",
        f"escape (weak recovery): first step with m = w.w* >= {THRESHOLD}; random starts conditioned on m0 > 0",
        f"PCA start: top eigenvector of the sample covariance of n' = d / {GAMMA} fresh unlabelled inputs "
        "(exact finite-d law on the chain); parts 1-2 take the positive sign (an oracle, as the random start's "
        f"conditioning), part 5 compares the random sign with the sign fixed by {LABELS} labelled samples "
        "(sign of sum y f(w.x)), counted in the sample budget",
        f"random step eta = delta_r d^-3/2, delta_r = {RANDOM_FRACTION} x delta_c, delta_c = 2 k |c_k| / V(0) "
        "of the lambda = 0 problem (the lr^2 corrector's threshold for escape from m0 = d^-1/2), checked by a "
        "logged lambda = 0 chain run",
        f"warm step eta = delta_w / d, delta_w = {WARM_FRACTION} x the largest delta of a logged grid whose "
        "(m, r) flow (with corrector) escapes from the BBP PCA point at the paper's lambda, eta1",
        f"transfer: source task on the same inputs, linear teacher w_s = {C_TRANSFER} w* + "
        f"sqrt(1 - {C_TRANSFER}^2) w*_2 (w*_2 orthogonal to w* and v), linear student (He1), spherical SGD at "
        f"eta = {SOURCE_LR}/d for {SOURCE_STEPS} d steps from a random start; the target run continues seed by "
        "seed from its final state (FromResult); source samples are reported apart",
        "flow stand-ins: random start = (m, r) = (d^-1/2, eta1 d^-1/2); PCA start = the BBP limit "
        "r = sqrt(overlap), m = eta1 r",
        f"part 4 budget: {TRAP_BUDGET} d^2 samples for both starts",
    ],
}


@dataclass(frozen=True)
class Spec:
    random_ds: tuple[int, ...]
    warm_ds: tuple[int, ...]
    seeds: int
    random_horizon: float  # in units of d^2 samples
    warm_horizon: float  # in units of d / delta_w samples
    trajectory_d: int
    bbp_samples: int  # part 3: n' fixed, d = gamma n'
    bbp_gammas: tuple[float, ...]
    bbp_lambdas: tuple[float, ...]
    bbp_seeds: int
    phase_lambdas: tuple[float, ...]
    phase_eta1s: tuple[float, ...]
    phase_d: int
    trap_d: int
    trap_seeds: int
    sign_d: int
    sign_seeds: int
    calibration_d: int
    trap_check: bool = True  # part 4's chain runs at the trapped setting
    signs: bool = True  # part 5


FULL = Spec(random_ds=(128, 256, 512), warm_ds=(128, 256, 512, 1024, 2048), seeds=40, random_horizon=120.0,
            warm_horizon=1.0, trajectory_d=512, bbp_samples=1024, bbp_gammas=(0.125, 0.25, 0.5, 1.0, 2.0, 4.0),
            bbp_lambdas=(0.5, 1.0, 2.0, 4.0), bbp_seeds=200, phase_lambdas=(0.0, 0.5, 1.0, 2.0),
            phase_eta1s=(0.3, 0.45, 0.6, 0.75, 0.9), phase_d=1000, trap_d=256, trap_seeds=32, sign_d=1024,
            sign_seeds=64, calibration_d=256)
QUICK = Spec(random_ds=(40, 64), warm_ds=(40, 64), seeds=32, random_horizon=120.0, warm_horizon=1.0,
             trajectory_d=64, bbp_samples=256, bbp_gammas=(0.25, 1.0, 4.0), bbp_lambdas=(1.0, 2.0), bbp_seeds=100,
             phase_lambdas=(0.0, 1.0), phase_eta1s=(0.9,), phase_d=1000, trap_d=64, trap_seeds=16,
             sign_d=64, sign_seeds=32, calibration_d=64, trap_check=False, signs=False)


def _problem(d: int, lam: float = LAMBDA, eta1: float = ETA1, link: str = LINK) -> Problem:
    return Problem(d=d, link=link, data=Spiked(strength=lam, overlap=eta1))


def _transfer_problems(d: int, link: str = LINK) -> tuple[Problem, Problem]:
    """(source, target) on the same inputs: frame [w*, w*_2, v_perp], the spike in span(w*, v_perp)."""
    data = Spiked(strength=LAMBDA, overlap=[ETA1, 0.0])
    c = C_TRANSFER
    source = Problem(d=d, directions=2, link="He1", weights=(c, math.sqrt(1 - c * c)), data=data)
    target = Problem(d=d, directions=2, link=link, weights=(1.0, 0.0), data=data)
    return source, target


STUDENT = Student(activation=LINK)


def _student(link: str) -> Student:
    return STUDENT if link == LINK else Student(activation=link)


def _training(lr: float, steps: int, init: Any, records: int = 100) -> Training:
    return Training(lr=lr, steps=int(steps), spherical=True, init=init, record_every=max(1, int(steps) // records),
                    escape_threshold=THRESHOLD)


def _run(problem, training, *, seeds, seed, engine=None, stop: float | None = 0.7, student=STUDENT):
    from ..api import run

    rec = Record(every=training.record_every, escape_threshold=THRESHOLD, stop_fraction=stop)
    return run(problem, student, training, engine=engine or Chain(), record=rec, seeds=seeds, seed=seed)


def _stats(res, seed: int, extra_samples: int = 0) -> dict:
    """Escape statistics of a run (samples to m >= 0.5), ``extra_samples`` added (labels)."""
    s = escape_from_result(res, seed=seed)
    fin = (lambda x: None if x is None or not math.isfinite(x) else float(x) + extra_samples)
    return {"d": int(res.d), "n_seeds": s.n, "n_escaped": s.n_escaped, "horizon_samples": s.horizon * s.batch,
            "median": fin(s.median_samples), "median_lo": fin(s.median_samples_ci[0]),
            "median_hi": fin(s.median_samples_ci[1])}


def _fit(rows: list[dict], theory: float, log_correction: bool = False) -> dict:
    ok = [r for r in rows if r["median"] is not None]
    if len(ok) < 2:
        return {"slope": None, "theory": theory, "error": "fewer than two finite medians"}
    hi = [r["median_hi"] if r["median_hi"] is not None else math.inf for r in ok]
    try:
        f = fit_scaling([r["d"] for r in ok], [r["median"] for r in ok], [r["median_lo"] for r in ok], hi,
                        log_correction=log_correction)
    except ValueError as e:
        return {"slope": None, "theory": theory, "error": str(e)}
    out = {"slope": f.slope, "ci": list(f.ci), "stderr": f.stderr, "intercept": f.intercept, "theory": theory,
           "theory_in_ci": bool(f.ci[0] <= theory <= f.ci[1]), "n_points": f.n}
    if log_correction:  # the slope of median / log d (the d log d law of k = 2)
        out["log_correction"] = True
    return out


# ----------------------------------------------------------------------------- calibration


def random_delta(link: str = LINK) -> dict:
    """delta_r = RANDOM_FRACTION * delta_c of the lambda = 0 problem (logged): the random-start
    step is eta = delta_r d^{-k/2} (k the link's information exponent)."""
    dc = critical_delta(link, link)
    return {"delta_c_lambda0": dc, "fraction": RANDOM_FRACTION, "delta_r": RANDOM_FRACTION * dc,
            "rule": "delta_r = fraction x 2 k |c_k| / V(0) at lambda = 0 (theory.critical_delta)"}


def warm_delta(d: int, link: str = LINK) -> dict:
    """delta_w from the (m, r) flow: the largest delta of DELTA_GRID whose flow escapes from
    the BBP PCA point at (LAMBDA, ETA1) within 100 d / delta steps, times WARM_FRACTION."""
    prob = _problem(d, link=link)
    pm, pr = pca_point(prob.data, GAMMA)
    log = []
    best = None
    base = Flow(prob, _student(link), _training(DELTA_GRID[0] / d, 1, "random"))
    for delta in DELTA_GRID:
        out = base.at_lr(delta / d).outcome(pm, pr, 100.0 * d / delta)
        log.append({"delta": delta, "outcome": out["outcome"], "steps": out["steps"]})
        if out["outcome"] == "escapes":
            best = delta
            break  # the grid is decreasing: the first that escapes is the largest
    if best is None:
        raise ConfigError("pretraining: no step of the grid lets the flow escape from the PCA point")
    return {"d": d, "pca_point": [pm, pr], "scan": log, "delta_star": best, "fraction": WARM_FRACTION,
            "delta_w": WARM_FRACTION * best,
            "rule": "delta_w = fraction x largest delta (grid 2^-1..2^-12) whose flow escapes from the PCA point"}


# ----------------------------------------------------------------------------- parts


def _random_run(d, delta_r, spec, seeds, seed, lam=LAMBDA, eta1=ETA1, horizon=None, link=LINK, k=3):
    """Random start at eta = delta_r d^{-k/2} for (horizon or spec.random_horizon) d^{k-1} samples."""
    steps = int((horizon or spec.random_horizon) * d ** (k - 1))
    return _run(_problem(d, lam, eta1, link), _training(delta_r * d ** (-k / 2), steps, RandomPositive()),
                seeds=seeds, seed=seed, student=_student(link))


def _pca_run(d, delta_w, spec, seeds, seed, sign="positive", labels=0, lam=LAMBDA, eta1=ETA1, steps=None, stop=None,
             link=LINK):
    n = int(round(d / GAMMA))
    steps = steps or int(spec.warm_horizon * d / delta_w)
    return _run(_problem(d, lam, eta1, link), _training(delta_w / d, steps, PCA(n, sign, labels)), seeds=seeds,
                seed=seed, stop=stop, student=_student(link))


def _transfer_runs(d, delta_w, spec, seeds, seed, link=LINK):
    source, target = _transfer_problems(d, link)
    src = _run(source, _training(SOURCE_LR / d, SOURCE_STEPS * d, "random"), seeds=seeds, seed=seed, stop=None,
               student=Student(activation="He1"))
    steps = int(spec.warm_horizon * d / delta_w)
    tgt = _run(target, _training(delta_w / d, steps, FromResult(src)), seeds=seeds, seed=seed + 1,
               student=_student(link))
    return src, tgt


def _m(res) -> np.ndarray:
    return res.overlap()[:, :, 0, 0]  # (seeds, records)


def _ode_compare(chain_res, problem, delta_w, init, student=STUDENT) -> dict:
    """ODE from ``init`` on the chain's record grid vs the chain's mean m: max |diff| / SE."""
    from ..api import run

    steps = int(chain_res.steps[-1])
    every = int(chain_res.steps[1] - chain_res.steps[0]) if len(chain_res.steps) > 1 else steps
    tr = _training(delta_w / problem.d, steps, init)
    ode = run(problem, student, tr, engine=ODE(), record=Record(every=every, escape_threshold=THRESHOLD))
    m = _m(chain_res)
    ok = np.all(np.isfinite(m), axis=0)
    mean, se = m.mean(axis=0), m.std(axis=0, ddof=1) / math.sqrt(m.shape[0])
    mo = np.interp(chain_res.steps, ode.steps, ode.overlap()[0, :, 0, 0])
    z = np.abs(mo - mean) / np.maximum(se, 1e-12)
    return {"steps": chain_res.steps, "ode_m": mo, "chain_mean": mean, "chain_se": se,
            "chain_q10": np.quantile(m, 0.1, axis=0), "chain_q50": np.median(m, axis=0),
            "chain_q90": np.quantile(m, 0.9, axis=0), "max_z": float(np.max(z[ok][1:])) if ok.sum() > 1 else None,
            "max_abs_diff": float(np.max(np.abs(mo - mean)[ok]))}


def _part3(spec: Spec, seed: int) -> list[dict]:
    rows = []
    n = spec.bbp_samples
    for lam in spec.bbp_lambdas:
        for g in spec.bbp_gammas:
            d = int(round(g * n))
            out = pca_draws(lam, ETA1, d, n, spec.bbp_seeds, seed=seed + 17)
            r2, top = out["r"] ** 2, out["top"]
            k = len(r2)
            rows.append({"lambda": lam, "gamma": d / n, "d": d, "n_samples": n, "seeds": k,
                         "overlap2": float(r2.mean()), "overlap2_se": float(r2.std(ddof=1) / math.sqrt(k)),
                         "bbp_overlap2": float(bbp_overlap(lam, d / n)),
                         "top": float(top.mean()), "top_se": float(top.std(ddof=1) / math.sqrt(k)),
                         "bbp_top": float(bbp_top_eigenvalue(lam, d / n)),
                         "above_threshold": bool(lam > bbp_threshold(d / n))})
    return rows


def _lambda0(spec: Spec, seed: int) -> dict:
    """At lambda = 0 the PCA start is a uniform random start: KS of m^2 against Beta(1/2, (d-1)/2)."""
    from scipy import stats

    n = spec.bbp_samples
    d = n  # gamma = 1
    out = pca_draws(0.0, ETA1, d, n, spec.bbp_seeds, seed=seed + 29)  # the shapes of part 3: no new build
    p = stats.kstest(out["m"] ** 2, stats.beta(0.5, (d - 1) / 2).cdf).pvalue
    return {"d": d, "n_samples": n, "seeds": len(out["m"]), "ks_pvalue_m2_vs_uniform": float(p)}


def _part4(spec: Spec, delta_r: float, seeds: int, seed: int, link: str = LINK, k: int = 3) -> dict:
    d = spec.phase_d
    tr = _training(delta_r * d ** (-k / 2), 1, "random")
    rows = scan(_problem(d, link=link), _student(link), tr, strengths=spec.phase_lambdas, overlaps=spec.phase_eta1s,
                gamma=GAMMA, budget=1e3 * d ** (k - 1), fixed_points=True)
    for r in rows:  # the random point's distance to the separatrix: the saddle's m in units of d^-1/2
        saddles = [f for f in r["fixed_points"] if not f["stable"] and 0 < f["m"] < THRESHOLD]
        r["saddle_m_sqrt_d"] = min((f["m"] for f in saddles), default=None)
        if r["saddle_m_sqrt_d"] is not None:
            r["saddle_m_sqrt_d"] *= math.sqrt(d)
    traps = [r for r in rows if r["trap"]]
    check = None
    if traps and spec.trap_check:  # prefer a PCA start below the threshold (not an immediate escape), then depth
        pick = max(traps, key=lambda r: (r["pca_m"] < THRESHOLD, r["saddle_m_sqrt_d"] or 0.0))
        lam, e1 = pick["strength"], pick["overlap"]
        dt = spec.trap_d
        budget = TRAP_BUDGET * dt ** (k - 1)
        rr = _random_run(dt, delta_r, spec, spec.trap_seeds, seed + 40, lam, e1, horizon=TRAP_BUDGET, link=link, k=k)
        pr = _pca_run(dt, delta_r * dt ** (1 - k / 2), spec, spec.trap_seeds, seed + 41, lam=lam, eta1=e1,
                      steps=int(budget), link=link)  # the random start's step eta = delta_r d^{-k/2}
        check = {"strength": lam, "overlap": e1, "d": dt, "budget_samples": budget,
                 "step": delta_r * dt ** (-k / 2), "random": _stats(rr, seed), "pca": _stats(pr, seed),
                 "flow_saddle_m_sqrt_d": pick["saddle_m_sqrt_d"]}
    return {"d": d, "step": delta_r * d ** (-k / 2), "grid": rows, "check": check}


def _part5(spec: Spec, delta_w: float, seed: int, link: str = LINK) -> dict:
    d = spec.sign_d
    steps = int(spec.warm_horizon * d / delta_w)
    out = {}
    for sign, labels in (("random", 0), ("labels", LABELS)):
        res = _pca_run(d, delta_w, spec, spec.sign_seeds, seed + 50, sign=sign, labels=labels, steps=steps, stop=None,
                       link=link)
        m_end = _m(res)[:, -1]
        m0 = _m(res)[:, 0]
        stalled = ~(np.nan_to_num(m_end, nan=-1.0) >= THRESHOLD)
        ok = ~stalled
        esc = np.asarray(res.escape_step, dtype=np.float64)
        times = esc[ok & np.isfinite(esc) & (esc >= 0)] + (labels if sign == "labels" else 0)
        k = int(stalled.sum())
        lo, hi = wilson_interval(k, len(stalled))
        out[sign] = {"labels": labels, "seeds": len(stalled), "stalled": k, "fraction_stalled": k / len(stalled),
                     "fraction_ci": [lo, hi], "negative_starts": int((m0 < 0).sum()),
                     "median_escape_samples_of_the_others": float(np.median(times)) if times.size else None,
                     "horizon_samples": steps}
    return {"d": d, **out}


def calibrate(spec: Spec, link: str = LINK, k: int = 3, seeds: int | None = None, seed: int = 0) -> dict:
    """The logged step rules for ``link``: the random-start delta_r (theory, checked by a chain
    run at lambda = 0 on ``spec.calibration_d``) and the warm delta_w (the (m, r) flow)."""
    cal_r = random_delta(link)
    cal_w = warm_delta(spec.phase_d, link)
    check0 = _random_run(spec.calibration_d, cal_r["delta_r"], spec, seeds or spec.seeds, seed + 1, lam=0.0,
                         link=link, k=k)
    cal_r["check_lambda0"] = _stats(check0, seed)
    cal_r["check_lambda0"]["escaped_within_budget"] = cal_r["check_lambda0"]["median"] is not None
    return {"random": cal_r, "warm": cal_w}


def part1(spec: Spec, delta_r: float, delta_w: float, *, link: str = LINK, k: int = 3, seeds: int | None = None,
          seed: int = 0, say=None) -> tuple[dict, dict, dict]:
    """Part 1: (series, fits, runs) of the samples to weak recovery vs d for the random, PCA and
    transfer starts of ``link`` (information exponent ``k``): random start at eta = delta_r
    d^{-k/2}, theory slope k - 1 (k = 2: 1, fitted with the log d factor); PCA and transfer at
    eta = delta_w / d, theory slope 1."""
    n_seeds = seeds or spec.seeds
    series: dict[str, list[dict]] = {"random": [], "pca": [], "transfer": []}
    keep: dict[Any, Any] = {}
    for d in spec.random_ds:
        if say:
            say(f"random start, d = {d}")
        res = _random_run(d, delta_r, spec, n_seeds, seed + 2, link=link, k=k)
        series["random"].append(_stats(res, seed))
        keep[("random", d)] = res
    for d in spec.warm_ds:
        if say:
            say(f"PCA and transfer starts, d = {d}")
        res = _pca_run(d, delta_w, spec, n_seeds, seed + 3, link=link)
        series["pca"].append({**_stats(res, seed), "unlabelled_samples": int(round(d / GAMMA))})
        keep[("pca", d)] = res
        src, tgt = _transfer_runs(d, delta_w, spec, n_seeds, seed + 4, link=link)
        m_src = _m(src)[:, -1]
        series["transfer"].append({**_stats(tgt, seed), "source_samples": int(src.steps[-1]),
                                   "start_m_mean": float(np.mean(m_src))})
        keep[("transfer", d)] = (src, tgt)
    fits = {"random": _fit(series["random"], float(theory_exponent(k)), log_correction=needs_log_correction(k)),
            "pca": _fit(series["pca"], 1.0), "transfer": _fit(series["transfer"], 1.0)}
    return series, fits, keep


def reproduce(
    *,
    quick: bool = False,
    engine: str = "chain",
    store: str | Path | None = None,
    out: str | Path | None = None,
    seeds: int | None = None,
    workers: int | None = None,
    progress: bool = False,
    seed: int = 0,
    link: str = LINK,
) -> Outputs:
    """Run every part and write ``scaling.png``, ``trajectories.png``, ``bbp.png``,
    ``phase.png``, ``table.md`` and ``results.json`` into ``out`` (default
    ``results/reproduce/pretraining[-quick]``, with ``-LINK`` for a link other than He3).
    ``link``: the target and matched student, a named link of information exponent k >= 2
    (:data:`LINKS`; the paper's He3 by default): the random-start step delta_r d^{-k/2} and
    horizon (d^{k-1} samples) and the theory slope follow k. ``engine`` must be ``"chain"`` (the
    d-dimensional simulation of d^{k-1} samples at these d is out of reach; the chain is exact);
    ``store`` and ``workers`` are unused (runs are vmapped over seeds in this process)."""
    del store, workers
    link, k = check_link(link)
    require_engine(engine, ("chain",), "the exact chain; the full engine is checked against it in law in the tests")
    started = time.perf_counter()
    spec = QUICK if quick else FULL
    n_seeds = seeds or spec.seeds
    if out is None:
        out = Path("results/reproduce") / ("pretraining" + ("" if link == LINK else f"-{link}")
                                           + ("-quick" if quick else ""))
    out = Path(out)
    student = _student(link)

    def say(msg):
        if progress:
            print(f"[pretraining] {time.perf_counter() - started:7.1f} s: {msg}", flush=True)

    cal = calibrate(spec, link, k, n_seeds, seed)
    delta_r, delta_w = cal["random"]["delta_r"], cal["warm"]["delta_w"]
    say(f"delta_r = {delta_r:.4g}, delta_w = {delta_w:.4g}")

    series, fits, keep = part1(spec, delta_r, delta_w, link=link, k=k, seeds=n_seeds, seed=seed, say=say)

    # part 2
    dT = spec.trajectory_d
    say(f"trajectories and ODE, d = {dT}")
    pca_res = keep.get(("pca", dT)) or _pca_run(dT, delta_w, spec, n_seeds, seed + 3, link=link)
    m0 = pca_res.M[:, 0, 0].mean(axis=0)
    traj = {"pca": _ode_compare(pca_res, _problem(dT, link=link), delta_w, Gram([[1.0]], [m0]), student)}
    src, tgt = keep.get(("transfer", dT)) or _transfer_runs(dT, delta_w, spec, n_seeds, seed + 4, link=link)
    if not quick:  # one more ODE build (the three-direction frame); the quick run checks the PCA start
        traj["transfer"] = _ode_compare(tgt, _transfer_problems(dT, link)[1], delta_w, FromResult(src), student)
    rnd = keep.get(("random", dT)) or _random_run(dT, delta_r, spec, n_seeds, seed + 2, link=link, k=k)
    mr_ = _m(rnd)
    traj["random"] = {"steps": rnd.steps, "chain_q10": np.nanquantile(mr_, 0.1, axis=0),
                      "chain_q50": np.nanmedian(mr_, axis=0), "chain_q90": np.nanquantile(mr_, 0.9, axis=0)}
    pca_start = mr(pca_res.M[:, 0, 0], _problem(dT, link=link).data)

    # parts 3-5
    say("BBP")
    bbp = _part3(spec, seed)
    lam0 = _lambda0(spec, seed)
    say("trap phase diagram")
    trap = _part4(spec, delta_r, n_seeds, seed, link, k)
    odd = _odd(link)
    say("PCA signs")
    signs = _part5(spec, delta_w, seed, link) if spec.signs and odd else None

    escape_pca = [r["median"] is not None and r["n_escaped"] == r["n_seeds"] for r in series["pca"]]
    random_law = "~d^2" if k == 3 else "~d log d" if k == 2 else f"~d^{k - 1}"
    summary = {
        "claim": f"PCA pre-training and transfer cut the samples to weak recovery of a spiked {link} single-index "
                 f"model from {random_law} (random start) to ~d; in some settings the random start is trapped "
                 "(Jones-McCormick, Jagannath, Sen 2025)",
        "engine": "chain", "quick": quick, "spec": asdict(spec), "choices": choices(link), "seeds": n_seeds,
        "parameters": {"link": link, "lambda": LAMBDA, "eta1": ETA1, "gamma": GAMMA, "labels": LABELS,
                       "c_transfer": C_TRANSFER, "threshold": THRESHOLD, "loss": "square (1/2)",
                       "geometry": "spherical, Euclidean unit sphere"},
        "calibration": cal,
        "part1_scaling": {"series": series, "fits": fits, "pca_all_escape": escape_pca},
        "part2_trajectories": {
            "d": dT, "pca_start_m_mean": float(np.mean(pca_start[0])), "pca_start_r2_mean": float(np.mean(
                pca_start[1] ** 2)), "bbp_r2": float(bbp_overlap(LAMBDA, GAMMA)),
            "ode_vs_chain": {k_: {"max_z": v["max_z"], "max_abs_diff": v["max_abs_diff"]}
                             for k_, v in traj.items() if "max_z" in v}},
        "part3_bbp": bbp,
        "part3_lambda0": lam0,
        "part4_trap": trap,
        "part5_signs": signs,
    }
    if link != LINK:
        summary["parameters"]["information_exponent"] = k
    if not odd:
        summary["part5_note"] = (f"not run: {link} is even, so the loss is invariant under w -> -w and escape is "
                                 "measured on |m|; the sign of the PCA start does not matter")
    table = _table(summary, link, k)
    figures = {"scaling.png": _scaling_figure(series, fits, link), "trajectories.png": _traj_figure(traj, dT),
               "bbp.png": _bbp_figure(bbp, spec), "phase.png": _phase_figure(trap, spec)}
    return write_outputs(out, name="pretraining", summary=summary, table=table, figures=figures, started=started)


# ----------------------------------------------------------------------------- outputs


def _table(s: dict, link: str = LINK, k: int = 3) -> str:
    p1 = s["part1_scaling"]
    cols = [("d", "d", fmt_g()), ("n_escaped", "escaped", fmt_g()), ("n_seeds", "seeds", fmt_g()),
            ("median", "median samples", fmt_g()), ("median_lo", "95% lo", fmt_g()), ("median_hi", "95% hi", fmt_g()),
            ("horizon_samples", "horizon", fmt_g())]
    cal = s["calibration"]
    text = ("Engine: chain (exact). Settings marked [paper] / [prior] / [R] are listed in results.json (`choices`).\n\n"
            f"Step sizes (logged rules): random eta = {cal['random']['delta_r']:.4g} d^-{_half(k)} "
            f"({cal['random']['fraction']} x delta_c = {cal['random']['delta_c_lambda0']:.4g} at lambda = 0; "
            f"check at lambda = 0, d = {cal['random']['check_lambda0']['d']}: median "
            f"{fmt_g()(cal['random']['check_lambda0']['median'])} samples); "
            f"warm eta = {cal['warm']['delta_w']:.4g} / d "
            f"({cal['warm']['fraction']} x delta* = {cal['warm']['delta_star']:.4g}, the largest grid step whose flow "
            "escapes from the PCA point).\n\n## 1. Samples to weak recovery (m >= 0.5)\n")
    for name in ("random", "pca", "transfer"):
        text += f"\n### {name}\n\n" + markdown_table(p1["series"][name], cols)
    rows = [{"series": n, **v, "lo": (v.get("ci") or [None, None])[0], "hi": (v.get("ci") or [None, None])[1]}
            for n, v in p1["fits"].items()]
    note = " (random: the slope of median / log d, the d log d law of k = 2)" if p1["fits"]["random"].get(
        "log_correction") else ""
    text += f"\n### Log-log slopes (95% CI){note}\n\n" + markdown_table(rows, [
        ("series", "series", str), ("slope", "slope", fmt_g(".3f")), ("lo", "lo", fmt_g(".3f")),
        ("hi", "hi", fmt_g(".3f")), ("theory", "theory", fmt_g()), ("theory_in_ci", "theory in CI", str)])
    p2 = s["part2_trajectories"]
    text += (f"\n## 2. Trajectories at d = {p2['d']}\n\nPCA start: mean m0 = {p2['pca_start_m_mean']:.3f}, "
             f"mean r0^2 = {p2['pca_start_r2_mean']:.3f} (BBP limit {p2['bbp_r2']:.3f}). ODE from the chain's mean "
             "start vs the chain's mean m: " + "; ".join(
                 f"{k}: max |diff| = {v['max_abs_diff']:.3g} ({fmt_g('.2f')(v['max_z'])} SE)"
                 for k, v in p2["ode_vs_chain"].items()) + "\n")
    text += "\n## 3. PCA overlap and top eigenvalue vs gamma (finite d vs BBP)\n\n" + markdown_table(s["part3_bbp"], [
        ("lambda", "lambda", fmt_g()), ("gamma", "gamma", fmt_g()), ("d", "d", fmt_g()), ("n_samples", "n'", fmt_g()),
        ("overlap2", "<v_hat,v>^2", fmt_g(".4f")), ("overlap2_se", "SE", fmt_g(".2g")),
        ("bbp_overlap2", "BBP", fmt_g(".4f")), ("top", "top eig.", fmt_g(".4f")), ("bbp_top", "BBP", fmt_g(".4f")),
        ("above_threshold", "above threshold", str)])
    z = s["part3_lambda0"]
    text += (f"\nAt lambda = 0 (d = n' = {z['d']}, {z['seeds']} draws) the PCA start's m^2 against the uniform start's "
             f"Beta(1/2, (d-1)/2): KS p = {z['ks_pvalue_m2_vs_uniform']:.3g}.\n")
    p4 = s["part4_trap"]
    text += (f"\n## 4. Trap: (m, r) flow at the random-start step (d = {p4['d']}, eta = {p4['step']:.3g})\n\n"
             + markdown_table(p4["grid"], [
                 ("strength", "lambda", fmt_g()), ("overlap", "eta1", fmt_g()), ("random", "random start", str),
                 ("random_steps", "steps", fmt_g()), ("pca", "PCA start", str), ("pca_steps", "steps", fmt_g()),
                 ("saddle_m_sqrt_d", "saddle m sqrt(d)", fmt_g(".3g")), ("trap", "trap", str)]))
    c = p4["check"]
    if c is None:
        text += "\nNo chain check (quick run, or no trapped setting in this grid).\n"
    else:
        text += (f"\nChain check at lambda = {c['strength']}, eta1 = {c['overlap']}, d = {c['d']}, budget "
                 f"{c['budget_samples']:.3g} samples, the same step for both: random start escaped "
                 f"{c['random']['n_escaped']}/{c['random']['n_seeds']}, PCA start {c['pca']['n_escaped']}/"
                 f"{c['pca']['n_seeds']} (median {fmt_g()(c['pca']['median'])} samples).\n")
    p5 = s["part5_signs"]
    if p5 is None:
        if "part5_note" in s:
            return text + f"\n## 5. PCA signs: {s['part5_note']}.\n"
        return text + "\n## 5. PCA signs: not in the quick run.\n"
    text += f"\n## 5. PCA sign for the odd link (d = {p5['d']})\n\n" + markdown_table(
        [{"sign": k, **p5[k]} for k in ("random", "labels")], [
            ("sign", "sign", str), ("labels", "labelled samples", fmt_g()), ("stalled", "stalled", fmt_g()),
            ("seeds", "seeds", fmt_g()), ("fraction_stalled", "fraction", fmt_g(".3f")),
            ("negative_starts", "m0 < 0", fmt_g()),
            ("median_escape_samples_of_the_others", "median escape (others)", fmt_g())])
    return text


def _provenance(fig):
    from ..io import package_versions
    from ._common import device_description

    v = package_versions()
    fig.text(0.01, 0.005, f"sgdlab {v.get('sgdlab', '?')}, jax {v.get('jax', '?')}; {device_description()}",
             fontsize=6, color="0.4")


def _scaling_figure(series, fits, link: str = LINK):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for (name, rows), col in zip(series.items(), ("C0", "C1", "C2"), strict=True):
        ok = [r for r in rows if r["median"] is not None]
        if not ok:
            continue
        d = np.array([r["d"] for r in ok], float)
        med = np.array([r["median"] for r in ok])
        lo = np.array([r["median_lo"] for r in ok])
        hi = np.array([r["median_hi"] if r["median_hi"] is not None else r["median"] for r in ok])
        f = fits[name]
        lab = f"{name}: slope {f['slope']:.2f} [{f['ci'][0]:.2f}, {f['ci'][1]:.2f}], theory {f['theory']:g}" \
            if f.get("slope") is not None else name
        ax.errorbar(d, med, yerr=[med - lo, hi - med], fmt="o", color=col, label=lab, capsize=3)
        if f.get("slope") is not None:
            dd = np.geomspace(d.min(), d.max(), 20)
            ax.plot(dd, math.exp(f["intercept"]) * dd ** f["slope"], "-", color=col, lw=1)
            ax.plot(dd, med[0] * (dd / d[0]) ** f["theory"], ":", color=col, lw=1)
    ax.set(xscale="log", yscale="log", xlabel="d", ylabel="samples to m >= 0.5 (KM median, 95% CI)",
           title=f"Spiked {link}: random vs PCA vs transfer (dotted: theory slopes)")
    ax.legend(fontsize=7)
    _provenance(fig)
    return fig


def _traj_figure(traj, d):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    colors = {"pca": "C1", "transfer": "C2", "random": "C0"}
    for name, t in traj.items():
        col = colors[name]
        x = np.asarray(t["steps"], float) / d
        ax.fill_between(x, t["chain_q10"], t["chain_q90"], color=col, alpha=0.2)
        ax.plot(x, t["chain_q50"], "-", color=col, label=f"{name}: chain median, 10-90%")
        if "ode_m" in t:
            ax.plot(x, t["chain_mean"], "--", color=col, lw=1, label=f"{name}: chain mean")
            ax.plot(x, t["ode_m"], ":", color="k", lw=1.5, label=f"{name}: ODE from the mean start")
    ax.axhline(THRESHOLD, color="0.5", lw=0.5)
    ax.set(xscale="log", xlabel="t = samples / d", ylabel="m = w.w*", title=f"m(t) at d = {d}")
    ax.legend(fontsize=6)
    _provenance(fig)
    return fig


def _bbp_figure(rows, spec):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    g = np.geomspace(min(spec.bbp_gammas) / 1.5, max(spec.bbp_gammas) * 1.5, 200)
    for lam, col in zip(spec.bbp_lambdas, (f"C{i}" for i in range(9)), strict=False):
        rs = [r for r in rows if r["lambda"] == lam]
        x = np.array([r["gamma"] for r in rs])
        axes[0].plot(g, bbp_overlap(lam, g), "-", color=col, label=f"lambda = {lam:g}: BBP")
        axes[0].errorbar(x, [r["overlap2"] for r in rs], yerr=[2 * r["overlap2_se"] for r in rs], fmt="o",
                         color=col, capsize=2, label=f"lambda = {lam:g}: finite d (n' = {spec.bbp_samples}), 2 SE")
        axes[1].plot(g, bbp_top_eigenvalue(lam, g), "-", color=col, label=f"lambda = {lam:g}: BBP")
        axes[1].errorbar(x, [r["top"] for r in rs], yerr=[2 * r["top_se"] for r in rs], fmt="o", color=col, capsize=2)
    axes[0].set(xscale="log", xlabel="gamma = d / n'", ylabel="<v_hat, v>^2", title="PCA overlap")
    axes[1].set(xscale="log", yscale="log", xlabel="gamma = d / n'", ylabel="top eigenvalue of X^T X / n'",
                title="top eigenvalue")
    axes[0].legend(fontsize=6)
    _provenance(fig)
    return fig


def _phase_figure(trap, spec):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    codes = {"both escape": 0, "trap (random trapped, PCA escapes)": 1, "random escapes only": 2, "neither": 3}
    cmap = {0: "C2", 1: "C3", 2: "C0", 3: "0.6"}
    seen = set()
    for r in trap["grid"]:
        re, pe = r["random"] == "escapes", r["pca"] == "escapes"
        key = ("both escape" if re and pe else "trap (random trapped, PCA escapes)" if pe
               else "random escapes only" if re else "neither")
        ax.scatter(r["overlap"], r["strength"], s=250, marker="s", color=cmap[codes[key]],
                   label=None if key in seen else key)
        seen.add(key)
    ax.set(xlabel="eta1 (spike overlap with w*)", ylabel="lambda (spike strength)",
           title=f"(m, r) flow at the random-start step, d = {trap['d']}")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    _provenance(fig)
    return fig
