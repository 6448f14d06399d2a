r"""``sgdlab reproduce fourier``: learning from Fourier phases (Ricci, Merger, Goldt 2026).

The claim checked (their abstract): with translation-invariant inputs whose two classes share
their Fourier amplitudes and differ only in their phases, online SGD on isotropic
(flat-spectrum) inputs cannot tell the classes apart within n << N^3 samples and succeeds for
n >> N^3 log^2 N; power-law spectra accelerate the learning of phase information although the
spectra themselves carry no class information; networks use amplitudes before phases. The
prior work behind the exponent: online SGD recovers a direction hidden in the p-th cumulant
with ~N^{p-1} samples at the step eta ~ N^{-p/2} (Ben Arous, Gheissari, Jagannath 2021;
Bardone, Goldt 2024); the random global sign of the structured class removes the odd
cumulants, so the classes first differ at the fourth, hence N^3.

The data are those of :mod:`sgdlab.fourier`, on a ring of N pixels, trained in its
orthonormal Fourier coordinates (the same law as in pixels for these rotation-equivariant
learners, at O(N) per input): class +1 is a :class:`~sgdlab.fourier.Template` (a "bump"
template carrying its phases on the K = ``BAND`` lowest frequencies, at a uniform random
shift and sign), class -1 the :class:`~sgdlab.fourier.Noise` with the same fixed amplitudes.
Everything runs on the ``full`` engine (the inputs are not Gaussian).

Student and training (each number marked [R] in the outputs): one neuron
f(x) = a0 sigma(w.x), sigma(z) = exp(-z^2/2) - 2^{-1/2} (:func:`sgdlab.fourier.bump_activation`,
Hermite c_2 = -1/4, c_4 = 3 / (4 sqrt 48)), fixed a0 = ``A0``, spherical online SGD on the
square loss with labels +-1 and the per-sample step eta = c / (a0 N^2) (c = ``C_EFF``; the
logistic loss, whose gradient at f = 0 is half the square loss's, takes 2 eta), minibatches
n_b(N) = 2^floor(log2(N^3 / 2048)) at step n_b eta (the same per-sample process while the
per-step noise c sqrt(n_b) / N^{3/2} stays small; checked by hand: n_b = 2, 16 give the same
medians at N = 32, 128 a 30% slower one). A small a0 makes the square loss the correlation
loss up to O(a0): the fixed output scale would otherwise push the weights toward the
low-variance (high-frequency) directions through the 1/2 f^2 term and against the template.

Parts:

1. alpha = 0: the samples at which the test accuracy (``N_TEST`` held-out inputs) first
   reaches ``THRESHOLD`` (interpolated between records; censored at the horizon), per seed;
   Kaplan-Meier median with a bootstrap interval per N; the weighted log-log slope of the
   medians (power law), the slope of median / log^2 N (3 if n* ~ N^3 log^2 N holds) and of
   median / N^3, each with its 95% interval. The local slope of N^3 log^2 N, 3 + 2 / ln N, is
   printed beside them. The full run adds the logistic loss, an ablation (the full template:
   every frequency coherent, whose per-shift fourth cumulant is N, so that it is learnt in
   ~1/eta ~ N^2 samples) and a logged scan of c at one N.
2. alpha > 0: the same per alpha: exponent and prefactor (median / N^3 at each N), beside an
   [R] heuristic: SGD on w is SGD on the whitened weight preconditioned by the covariance, so
   n*(alpha) / n*(0) ~ (P_band(0) / P_band(alpha))^2 with P_band the share of the input power
   in the coherent band (:func:`preconditioning_ratio`).
3. Amplitude before phase: class +1 the template with a flat spectrum, class -1 noise with
   alpha = 0.4, a 4-unit network (mean readout); probes at every record: test accuracy on
   phase-scrambled inputs (amplitude information only) and on inputs whose amplitudes are set
   to the alpha = 0.2 spectrum (phase information only).
4. Weight power spectra per |k|, template alignment (max over shifts), low-frequency fraction
   and IPR over time for the median seed of each alpha at the largest N.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

from .. import fourier as F
from ..analysis import escape_statistics, fit_scaling
from ..io import read_result, write_run
from ._common import Outputs, fmt_g, markdown_table, require_engine, write_outputs

__all__ = ["CHOICES", "FULL", "QUICK", "Spec", "crossing_samples", "reproduce"]

BAND = 4  # coherent band of the template: 0 < |k| <= BAND
A0 = 0.2  # fixed second layer (output scale)
C_EFF = 4.0  # per-sample step eta = C_EFF / (A0 N^2)
THRESHOLD = 0.53  # "above chance": test accuracy >= THRESHOLD
N_TEST = 20_000  # held-out inputs per test set (standard error 0.0035 at chance)
RECORDS = 100
AMP_ALPHAS = (0.0, 0.4)  # part 3: spectra of the structured and the noise class
PROBE_ALPHA = 0.2  # part 3: amplitudes of the phase-only probe

CHOICES = {
    "paper": [
        "two classes that share Fourier amplitudes and differ in phases; flat spectrum: online SGD "
        "needs >> N^3 samples (not within << N^3), sufficient n >> N^3 log^2 N; power-law spectra "
        "accelerate phase learning; amplitudes are used before phases",
    ],
    "prior": [
        "p-th cumulant -> ~N^{p-1} samples at eta ~ N^{-p/2} (Ben Arous, Gheissari, Jagannath 2021; "
        "Bardone, Goldt 2024): with the random sign the classes first differ at the fourth order",
    ],
    "R": [
        "ring of N pixels; real FFT with DC and Nyquist phases in {0, pi}; fixed amplitudes "
        "A_k^2 ~ max(|k|, 1)^-alpha normalised to E|x|^2 = N",
        "structured class: 'bump' template (phases 0) at a uniform integer shift with a random "
        f"global sign, coherent on the band 0 < |k| <= {BAND} (uniform phases above): with a fixed band "
        "the classes differ at fourth order in a fixed 2K-dimensional subspace (the N^3 setting); "
        "the full template (every frequency coherent) has a per-shift fourth cumulant ~N and is "
        "learnt in ~1/eta samples (ablation)",
        "noise class: i.i.d. uniform phases, same amplitudes",
        "student: one neuron a0 * sigma(w.x), sigma(z) = exp(-z^2/2) - 2^-1/2, "
        f"a0 = {A0} fixed; part 3: 4 such units, mean readout",
        f"spherical online SGD, square loss, labels +-1, per-sample step eta = {C_EFF} / (a0 N^2) "
        "(logistic loss: 2 eta); minibatch n_b = 2^floor(log2(N^3/2048)) at step n_b eta",
        f"above chance: test accuracy >= {THRESHOLD} on {N_TEST} held-out inputs, first crossing "
        "interpolated between records, right-censored at the horizon; Kaplan-Meier median, bootstrap CI",
        "training in the orthonormal Fourier coordinates of the ring (same law as pixels for a "
        "rotation-equivariant learner from a uniform start)",
        f"part 3: alpha_+ = {AMP_ALPHAS[0]} (template) vs alpha_- = {AMP_ALPHAS[1]} (noise); amplitude "
        f"probe = phase-scrambled test inputs, phase probe = amplitudes set to the alpha = {PROBE_ALPHA} "
        "spectrum",
    ],
}


@dataclass(frozen=True)
class Spec:
    Ns: tuple[int, ...]  # part 1 (alpha = 0)
    alphas: tuple[float, ...]  # alpha > 0 of part 2
    alpha_Ns: tuple[int, ...]  # part 2
    horizon: tuple[tuple[float, float], ...]  # (alpha, horizon in units of N^3 samples)
    seeds: int
    logistic_Ns: tuple[int, ...]
    ablation_Ns: tuple[int, ...]
    calibration_N: int | None
    calibration_cs: tuple[float, ...]
    amp_N: int
    amp_width: int
    amp_seeds: int
    amp_horizon: float  # in units of N^3


FULL = Spec(Ns=(16, 24, 32, 48, 64, 96), alphas=(0.5, 1.0, 1.5), alpha_Ns=(16, 24, 32, 48, 64, 96), seeds=64,
            horizon=((0.0, 3.0), (0.5, 1.0), (1.0, 0.5), (1.5, 0.25)),
            logistic_Ns=(16, 24, 32, 48), ablation_Ns=(16, 32, 64), calibration_N=32,
            calibration_cs=(1.0, 2.0, 4.0, 8.0, 16.0), amp_N=64, amp_width=4, amp_seeds=32, amp_horizon=0.4)
QUICK = Spec(Ns=(16, 24, 32, 40), alphas=(1.0,), alpha_Ns=(24, 40), seeds=64, horizon=((0.0, 2.5), (1.0, 0.5)),
             logistic_Ns=(), ablation_Ns=(), calibration_N=None, calibration_cs=(), amp_N=32, amp_width=4,
             amp_seeds=16, amp_horizon=0.3)


def batch_size(N: int) -> int:
    """n_b(N) = 2^floor(log2(N^3 / 2048)), at least 1."""
    return 1 << max(0, int(math.floor(math.log2(max(1.0, N**3 / 2048)))))


def _horizon(spec: Spec, alpha: float) -> float:
    return dict(spec.horizon)[alpha]


# ----------------------------------------------------------------------------- runs


def _desc(part: str, N: int, *, alpha: float = 0.0, seeds: int, seed: int, horizon: float, loss: str = "square",
          c: float = C_EFF, band: float | None = BAND, sign: bool = True, width: int = 1,
          alpha_neg: float | None = None) -> dict:
    """A run as plain data (also its cache key): law, student, training."""
    nb = batch_size(N)
    lr = c / (A0 * N**2) * (2.0 if loss == "logistic" else 1.0) * width  # mean readout: per-unit step / width
    steps = max(RECORDS, int(round(horizon * N**3 / nb)))
    every = max(1, steps // RECORDS)
    steps = every * RECORDS
    return {"part": part, "N": N, "alpha": alpha, "alpha_neg": alpha if alpha_neg is None else alpha_neg,
            "band": band, "sign": sign, "template": "bump", "amplitudes": "fixed",
            "student": {"width": width, "activation": "bump", "a0": A0, "output_scale": "mean"},
            "train": {"loss": loss, "lr": lr * nb, "batch": nb, "steps": steps, "record_every": every,
                      "spherical": True, "c": c},
            "seeds": seeds, "seed": seed, "engine": "full", "basis": "fourier"}


def _laws(desc: dict) -> tuple[F.Template, F.Noise]:
    N = desc["N"]
    pos = F.Template((N,), alpha=desc["alpha"], band=desc["band"], sign=desc["sign"], template=desc["template"])
    return pos, F.Noise((N,), alpha=desc["alpha_neg"], amplitudes=desc["amplitudes"])


def _student(desc: dict):
    from ..model import Student

    s = desc["student"]
    return Student(width=s["width"], activation=F.bump_activation, a0=s["a0"], output_scale=s["output_scale"])


def _execute(desc: dict) -> Any:
    from ..api import run
    from ..engines import Full
    from ..model import Problem, Training

    pos, neg = _laws(desc)
    tr = desc["train"]
    loss = F.logistic_loss if tr["loss"] == "logistic" else tr["loss"]
    problem = Problem(d=desc["N"], function=F.pm_label, data=F.two_class(pos, neg, basis=desc["basis"]))
    training = Training(loss=loss, lr=tr["lr"], batch=tr["batch"], steps=tr["steps"], record_every=tr["record_every"],
                        spherical=tr["spherical"], escape_threshold=2.0)  # > 1: no escape statistic here
    return run(problem, _student(desc), training, engine=Full(), seeds=desc["seeds"], seed=desc["seed"])


def _key(desc: dict) -> str:
    from ..store import sgdlab_version

    text = json.dumps({"run": desc, "sgdlab": sgdlab_version()}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def run_cached(desc: dict, store: str | Path | None) -> Any:
    """The run's :class:`~sgdlab.Result`, read from ``store/fourier/<key>`` when there (runs of
    Python-function samplers are not expressible as store configurations, so they are cached
    here by the hash of their description)."""
    if store is None:
        return _execute(desc)
    folder = Path(store) / "fourier" / _key(desc)
    if (folder / "summary.json").is_file() and (folder / "trajectory.parquet").is_file():
        return read_result(folder)
    res = _execute(desc)
    tmp = folder.with_name(folder.name + ".tmp")
    write_run(res, desc, tmp)
    if folder.exists():  # a concurrent writer finished first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.rename(folder)
    return res


# ----------------------------------------------------------------------------- statistics


def _test_set(pos: F.SignalLaw, neg: F.SignalLaw, n: int, key: int) -> tuple[np.ndarray, np.ndarray]:
    x, c = jax.jit(F.two_class(pos, neg).fn, static_argnums=(1, 2))(jax.random.key(key), n, 0)
    return np.asarray(x), 2.0 * np.asarray(c, np.float64) - 1.0


def _test_key(desc: dict) -> tuple:
    return (desc["N"], desc["alpha"], desc["alpha_neg"], desc["band"], desc["sign"])


def crossing_samples(acc: np.ndarray, samples: np.ndarray, threshold: float) -> np.ndarray:
    """Per seed (rows of ``acc`` (S, R) at ``samples`` (R,)), the samples at which the accuracy first
    reaches ``threshold``, linearly interpolated between the two records around it; -1 if never."""
    out = np.full(acc.shape[0], -1.0)
    for s, a in enumerate(acc):
        hit = np.nonzero(a >= threshold)[0]
        if hit.size == 0:
            continue
        i = int(hit[0])
        if i == 0:
            out[s] = 0.0
            continue
        a0, a1 = a[i - 1], a[i]
        f = (threshold - a0) / (a1 - a0) if a1 > a0 else 1.0
        out[s] = samples[i - 1] + f * (samples[i] - samples[i - 1])
    return out


def _stats(cross: np.ndarray, horizon: int, seed: int) -> dict:
    """Kaplan-Meier median of the crossing samples (censored at ``horizon``) with its bootstrap 95% CI."""
    steps = np.where(cross >= 0, np.rint(cross), -1).astype(np.int64)
    s = escape_statistics(np.minimum(steps, horizon), horizon, seed=seed)

    def fin(v):
        return float(v) if math.isfinite(v) else None

    return {"n_seeds": s.n, "n_crossed": s.n_escaped, "horizon_samples": horizon, "median": fin(s.median_samples),
            "median_lo": fin(s.median_samples_ci[0]), "median_hi": fin(s.median_samples_ci[1])}


def _fit(Ns, rows: list[dict], divide=None) -> dict:
    """Weighted log-log slope of the medians (divided by ``divide(N)``) against N, with its 95% CI."""
    med = np.array([np.nan if r["median"] is None else r["median"] for r in rows], float)
    lo = np.array([np.nan if r["median_lo"] is None else r["median_lo"] for r in rows], float)
    hi = np.array([np.inf if r["median_hi"] is None else r["median_hi"] for r in rows], float)
    dv = np.ones(len(Ns)) if divide is None else np.array([divide(n) for n in Ns], float)
    try:
        f = fit_scaling(Ns, med / dv, lo / dv, hi / dv)
    except ValueError as e:
        return {"slope": None, "error": str(e)}
    return {"slope": f.slope, "ci": list(f.ci), "stderr": f.stderr, "intercept": f.intercept, "n_points": f.n,
            "chi2_red": f.chi2_red, "dropped": list(f.dropped)}


def local_slope_n3log2(N: float) -> float:
    """d log(N^3 log^2 N) / d log N = 3 + 2 / ln N."""
    return 3.0 + 2.0 / math.log(N)


def band_power_share(N: int, alpha: float) -> float:
    """P_band: the share of E|x|^2 in the template's coherent band 0 < |k| <= BAND (2 BAND / N when flat)."""
    g = F.Grid((N,))
    S = F.power_spectrum(g, alpha)
    band = (g.norms > 0) & (g.norms <= BAND)
    return float(np.sum(np.where(g.self_conjugate, 1.0, 2.0)[band] * S[band]) / N)


def preconditioning_ratio(N: int, alpha: float) -> float:
    """[R] heuristic n*(alpha) / n*(0) = (P_band(0) / P_band(alpha))^2: SGD on w is SGD on the whitened
    weight C^{1/2} w preconditioned by C, so the band directions move P_band N / (2 BAND) times faster
    and start with a share P_band of the field variance instead of 2 BAND / N; the search time of
    the fourth-order problem, ~1 / (rate x initial share), shrinks by both factors."""
    return (band_power_share(N, 0.0) / band_power_share(N, alpha)) ** 2


def heuristic_median(fit0: dict, N: int, alpha: float) -> float:
    """The alpha = 0 power-law fit at N times :func:`preconditioning_ratio`."""
    return math.exp(fit0["intercept"]) * N ** fit0["slope"] * preconditioning_ratio(N, alpha)


def heuristic_exponent(fit0: dict, Ns, alpha: float) -> float:
    """Least-squares log-log slope of :func:`heuristic_median` over ``Ns``."""
    lx = np.log(np.asarray(Ns, float))
    return float(np.polyfit(lx, np.log([heuristic_median(fit0, n, alpha) for n in Ns]), 1)[0])


def _series(descs: list[dict], results: list, tests: dict, seed: int) -> list[dict]:
    rows = []
    for desc, res in zip(descs, results, strict=True):
        x, y = tests[_test_key(desc)]
        acc = F.accuracy(res.M, res.a, _student(desc), x, y)
        samples = res.steps * res.batch
        cross = crossing_samples(acc, samples, THRESHOLD)
        st = _stats(cross, int(samples[-1]), seed)
        rows.append({"N": desc["N"], "alpha": desc["alpha"], "loss": desc["train"]["loss"], "band": desc["band"],
                     "c_eff": desc["train"]["c"], "batch": desc["train"]["batch"], "lr": desc["train"]["lr"], **st,
                     "median_over_N3": None if st["median"] is None else st["median"] / desc["N"] ** 3,
                     "final_accuracy": float(np.median(acc[:, -1])), "wall_time_s": float(res.wall_time),
                     "_acc": acc, "_cross": cross, "_samples": samples})
    return rows


def _public(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]


# ----------------------------------------------------------------------------- figures


def _errorbar(ax, rows, label, color, marker="o"):
    pts = [(r["N"], r["median"], r["median_lo"], r["median_hi"]) for r in rows if r["median"] is not None]
    if not pts:
        return
    N, m, lo, hi = (np.array([np.nan if v is None else v for v in col], float) for col in zip(*pts, strict=True))
    lo = np.where(np.isfinite(lo), lo, m)
    hi = np.where(np.isfinite(hi), hi, 2 * m)  # open upper end: drawn to 2x
    ax.errorbar(N, m, yerr=[m - lo, hi - m], fmt=marker, color=color, label=label, capsize=3)


def _fit_line(ax, Ns, fit, color, **kw):
    if fit.get("slope") is None:
        return
    Nf = np.geomspace(min(Ns), max(Ns), 50)
    ax.plot(Nf, np.exp(fit["intercept"]) * Nf ** fit["slope"], color=color, lw=1, **kw)


def _scaling_figure(series: dict, fits: dict, spec: Spec):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    ax = axes[0]
    base = series["alpha=0"]
    f0 = fits["alpha=0"]["power"]
    ci = f0.get("ci") or [math.nan, math.nan]
    _errorbar(ax, base, f"measured: slope {f0.get('slope') or math.nan:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]", "C0")
    _fit_line(ax, spec.Ns, f0, "C0")
    good = [r for r in base if r["median"] is not None]
    if good:
        ref = good[-1]
        Nf = np.geomspace(min(spec.Ns), max(spec.Ns), 50)
        ax.plot(Nf, ref["median"] * (Nf / ref["N"]) ** 3, "k--", lw=1, label="theory N^3 (through the largest N)")
        ax.plot(Nf, ref["median"] * Nf**3 * np.log(Nf) ** 2 / (ref["N"] ** 3 * math.log(ref["N"]) ** 2), "k:",
                label="theory N^3 log^2 N (through the largest N)")
    for name, color, marker, label in (("logistic", "C3", "s", "logistic loss"),
                                       ("full template", "C2", "^", "ablation: full template (every k coherent)")):
        if series.get(name):
            sl = fits[name]["power"].get("slope")
            _errorbar(ax, series[name], f"{label}: slope {sl if sl is not None else math.nan:.2f}", color, marker)
    ax.set(xscale="log", yscale="log", xlabel="N (pixels)",
           ylabel=f"median samples to test accuracy >= {THRESHOLD}", title="flat spectrum (alpha = 0)")
    ax.legend(fontsize=7, loc="upper left")

    ax = axes[1]
    alphas = [k for k in series if k.startswith("alpha=")]
    for i, name in enumerate(alphas):
        fp = fits[name]["power"]
        _errorbar(ax, series[name], f"{name}: slope {fp.get('slope') or math.nan:.2f}", f"C{i}")
        _fit_line(ax, [r["N"] for r in series[name]], fp, f"C{i}")
        a = float(name.split("=")[1])
        if a > 0 and f0.get("slope") is not None:
            Na = [r["N"] for r in series[name]]
            ax.plot(Na, [heuristic_median(f0, n, a) for n in Na], ls="--", color=f"C{i}", lw=1,
                    label=f"[R] heuristic: alpha=0 fit x (P_band(0)/P_band({a:g}))^2")
    ax.set(xscale="log", yscale="log", xlabel="N (pixels)", ylabel="median samples to above chance",
           title="power-law spectra S_k ~ |k|^-alpha")
    ax.legend(fontsize=6)

    ax = axes[2]
    al = [float(k.split("=")[1]) for k in alphas]
    ok = [(a, fits[f"alpha={a:g}"]["power"]) for a in al if fits[f"alpha={a:g}"]["power"].get("slope") is not None]
    if ok:
        a_ = [a for a, _ in ok]
        sl = np.array([f["slope"] for _, f in ok])
        lo = np.array([f["ci"][0] if math.isfinite(f["ci"][0]) else f["slope"] for _, f in ok])
        hi = np.array([f["ci"][1] if math.isfinite(f["ci"][1]) else f["slope"] for _, f in ok])
        ax.errorbar(a_, sl, yerr=[sl - lo, hi - sl], fmt="o-", color="C0", capsize=3, label="fitted exponent (95% CI)")
        if f0.get("slope") is not None:
            ax.plot(a_, [heuristic_exponent(f0, spec.alpha_Ns if a else spec.Ns, a) for a in a_], "o--", mfc="none",
                    color="C0", lw=0.8, label="[R] heuristic exponent, same N")
    Nmid = math.sqrt(min(spec.Ns) * max(spec.Ns))
    ax.axhline(3.0, color="k", ls="--", lw=1, label="3 (N^3)")
    ax.axhline(local_slope_n3log2(Nmid), color="k", ls=":", lw=1, label=f"local slope of N^3 log^2 N, N = {Nmid:.0f}")
    ax2 = ax.twinx()
    ref_N = max(spec.alpha_Ns)
    pre = []
    for a in al:
        rows = [r for r in series[f"alpha={a:g}"] if r["N"] == ref_N and r["median_over_N3"] is not None]
        pre.append(rows[0]["median_over_N3"] if rows else np.nan)
    ax2.plot(al, pre, "s--", color="C1", label=f"prefactor: median / N^3 at N = {ref_N}")
    ax2.set_yscale("log")
    ax2.set_ylabel("median / N^3", color="C1")
    ax.set(xlabel="alpha (spectral slope)", ylabel="exponent of N", title="exponent and prefactor vs alpha")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7)
    fig.tight_layout()
    return fig


def _amp_figure(amp: dict):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.4))
    x = np.maximum(amp["_samples"], 1)
    for name, color, label in (("accuracy", "k", "test inputs"), ("amplitude_probe", "C0", "amplitude probe"),
                               ("phase_probe", "C3", "phase probe")):
        a = amp["_acc"][name]
        ax.plot(x, np.median(a, axis=0), color=color, label=f"{label} (median over seeds, 10-90%)")
        ax.fill_between(x, np.quantile(a, 0.1, axis=0), np.quantile(a, 0.9, axis=0), color=color, alpha=0.15, lw=0)
        m = amp["stats"][name]["median"]
        if m is not None:
            ax.axvline(max(m, 1), color=color, ls=":", lw=1)
    ax.axhline(0.5, color="gray", lw=0.8, label="chance")
    ax.axhline(THRESHOLD, color="gray", ls="--", lw=0.8, label=f"above-chance threshold {THRESHOLD}")
    ax.set(xscale="log", xlabel="samples", ylabel="accuracy",
           title=f"amplitude before phase (N = {amp['N']}, {amp['width']} units)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _spectra_figure(tracks: dict):
    import matplotlib.pyplot as plt

    names = list(tracks)
    fig, axes = plt.subplots(2, len(names), figsize=(4.4 * len(names), 7.6), squeeze=False)
    for j, name in enumerate(names):
        tk = tracks[name]
        x = np.maximum(tk["samples"], 1)
        ax = axes[0, j]
        im = ax.pcolormesh(x, tk["bins"][1:], np.log10(np.maximum(tk["spectrum"][:, 1:].T, 1e-6)), shading="nearest",
                           cmap="viridis", vmin=-4, vmax=0)
        ax.axhline(BAND + 0.5, color="w", ls="--", lw=0.8)
        ax.set(xscale="log", xlabel="samples", ylabel="|k|", title=f"{name}: log10 weight power per |k|")
        fig.colorbar(im, ax=ax)
        ax = axes[1, j]
        ax.plot(x, tk["alignment"], "C0", label="template alignment (max over shifts)")
        ax.axhline(tk["random_alignment"], color="C0", ls="--", lw=0.8, label="theory, random w: alignment")
        ax.plot(x, tk["low_frequency_fraction"], "C1", label=f"weight power in 0 < |k| <= {BAND}")
        ax.axhline(2 * BAND / tk["N"], color="C1", ls="--", lw=0.8, label=f"theory, random w: {2 * BAND}/N")
        ax.axhline(tk["input_band_share"], color="C1", ls=":", lw=0.8, label="input power in the band (P_band)")
        ax.plot(x, tk["ipr"] * tk["N"] / 3.0, "C2", label="IPR x N/3 (theory, random w: ~1)")
        if tk["crossing"] is not None:
            ax.axvline(tk["crossing"], color="k", ls=":", lw=1, label="accuracy reaches the threshold")
        top = max(1.1, 1.05 * float(np.max(tk["ipr"] * tk["N"] / 3.0)))
        ax.set(xscale="log", xlabel="samples", ylim=(0, top), title=f"{name}, N = {tk['N']}, seed {tk['seed']}")
        ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- the reproduction


def plan(spec: Spec, seeds: int | None = None, seed: int = 0) -> tuple[dict[str, list[dict]], dict]:
    """The runs of every part (name -> descriptions) and the run of part 3."""
    S = seeds or spec.seeds
    runs: dict[str, list[dict]] = {"alpha=0": [_desc("scaling", N, seeds=S, seed=seed, horizon=_horizon(spec, 0.0))
                                               for N in spec.Ns]}
    for a in spec.alphas:
        runs[f"alpha={a:g}"] = [_desc("scaling", N, alpha=a, seeds=S, seed=seed, horizon=_horizon(spec, a))
                                for N in spec.alpha_Ns]
    if spec.logistic_Ns:
        runs["logistic"] = [_desc("scaling", N, seeds=S, seed=seed, horizon=2 * _horizon(spec, 0.0), loss="logistic")
                            for N in spec.logistic_Ns]
    if spec.ablation_Ns:
        # every frequency coherent: per-shift fourth cumulant ~N, learnt in ~1/eta ~ N^2 samples
        runs["full template"] = [_desc("ablation", N, seeds=S, seed=seed, horizon=4.0 / N, band=None)
                                 for N in spec.ablation_Ns]
    if spec.calibration_N is not None:
        runs["calibration"] = [_desc("calibration", spec.calibration_N, seeds=max(16, S // 2), seed=seed + 1,
                                     horizon=2.0, c=c) for c in spec.calibration_cs]
    amp = _desc("amplitude-phase", spec.amp_N, alpha=AMP_ALPHAS[0], alpha_neg=AMP_ALPHAS[1],
                seeds=seeds or spec.amp_seeds, seed=seed, horizon=spec.amp_horizon, width=spec.amp_width)
    return runs, amp


def _cost(d: dict) -> float:
    return float(d["seeds"]) * d["train"]["steps"] * d["train"]["batch"] * d["N"]


def _part3(desc: dict, res: Any, test: tuple, seed: int) -> dict:
    """Amplitude and phase probes of the part-3 run at every record."""
    pos, _ = _laws(desc)
    g = pos.grid
    xt, yt = test
    sets = {"accuracy": xt, "amplitude_probe": F.phase_scramble(jax.random.key(seed + 77), xt, g, basis="fourier"),
            "phase_probe": F.whiten_amplitudes(xt, g, alpha=PROBE_ALPHA, basis="fourier")}
    st = _student(desc)
    samples = res.steps * res.batch
    acc = {k: F.accuracy(res.M, res.a, st, x, yt) for k, x in sets.items()}
    cross = {k: crossing_samples(a, samples, THRESHOLD) for k, a in acc.items()}
    ca, cp = (np.where(cross[k] < 0, np.inf, cross[k]) for k in ("amplitude_probe", "phase_probe"))
    return {"N": desc["N"], "width": desc["student"]["width"], "alpha_structured": AMP_ALPHAS[0],
            "alpha_noise": AMP_ALPHAS[1], "probe_alpha": PROBE_ALPHA,
            "stats": {k: _stats(c, int(samples[-1]), seed) for k, c in cross.items()},
            "fraction_amplitude_first": float(np.mean(ca < cp)),
            "final": {k: float(np.median(a[:, -1])) for k, a in acc.items()},
            "peak_median": {k: float(np.max(np.median(a, axis=0))) for k, a in acc.items()},
            "_acc": acc, "_samples": samples}


def _track(desc: dict, res: Any, row: dict, seed: int) -> dict:
    """Part 4: the Fourier order parameters of the median-crossing seed of a run over time."""
    cr = row["_cross"]
    finite = np.nonzero(cr >= 0)[0]
    s_pick = int(finite[np.argsort(cr[finite])[len(finite) // 2]]) if finite.size else 0
    law, _ = _laws(desc)
    W = res.M[s_pick, :, 0]
    bins, spec_w = F.weight_spectrum(W, law.grid)
    w_rand = np.random.default_rng(seed).standard_normal((256, law.N))
    return {"N": desc["N"], "alpha": desc["alpha"], "seed": s_pick, "samples": res.steps * res.batch, "bins": bins,
            "spectrum": spec_w, "alignment": F.template_alignment(W, law),
            "low_frequency_fraction": F.low_frequency_fraction(W, law.grid, BAND), "ipr": F.ipr(W, law.grid),
            "input_band_share": band_power_share(desc["N"], desc["alpha"]),
            "random_alignment": float(np.median(F.template_alignment(w_rand, law))),
            "crossing": None if cr[s_pick] < 0 else float(cr[s_pick])}


def reproduce(
    *,
    quick: bool = False,
    engine: str = "full",
    store: str | Path | None = "results/store",
    out: str | Path | None = None,
    seeds: int | None = None,
    workers: int | None = None,
    progress: bool = False,
    seed: int = 0,
) -> Outputs:
    """Run (or read back from ``store``) every run and write ``scaling.png``,
    ``amplitude_phase.png``, ``spectra.png``, ``table.md`` and ``results.json`` into ``out``
    (default ``results/reproduce/fourier[-quick]``). ``engine`` must be ``"full"``; ``workers``
    is unused (the seeds of a run are vmapped in this process)."""
    del workers
    require_engine(engine, ("full",), "the fourier inputs are not Gaussian: the chain and the ODE cannot run them")
    started = time.perf_counter()
    spec = QUICK if quick else FULL
    out = Path(out) if out is not None else Path("results/reproduce") / ("fourier" + ("-quick" if quick else ""))
    runs, amp_desc = plan(spec, seeds, seed)

    order = sorted(((name, i) for name, ds in runs.items() for i in range(len(ds))),
                   key=lambda t: _cost(runs[t[0]][t[1]]))  # cheapest first: an interruption keeps the most
    results: dict[str, list] = {name: [None] * len(ds) for name, ds in runs.items()}
    t_runs = time.perf_counter()
    for k, (name, i) in enumerate(order):
        if progress:
            print(f"[fourier] run {k + 1}/{len(order)}: {name}, N = {runs[name][i]['N']}", flush=True)
        results[name][i] = run_cached(runs[name][i], store)
    amp_res = run_cached(amp_desc, store)
    compute_s = time.perf_counter() - t_runs

    tests: dict[tuple, tuple] = {}
    for d in [*(d for ds in runs.values() for d in ds), amp_desc]:
        if _test_key(d) not in tests:
            tests[_test_key(d)] = _test_set(*_laws(d), N_TEST, 10**6 + 7 * d["N"] + int(100 * d["alpha"]))
    series = {name: _series(ds, results[name], tests, seed) for name, ds in runs.items()}
    fits = {name: {"power": _fit([r["N"] for r in rows], rows),
                   "over_N3log2N": _fit([r["N"] for r in rows], rows, lambda n: math.log(n) ** 2),
                   "Ns": [r["N"] for r in rows]} for name, rows in series.items() if name != "calibration"}
    amp = _part3(amp_desc, amp_res, tests[_test_key(amp_desc)], seed)
    tracks = {name: _track(runs[name][-1], results[name][-1], series[name][-1], seed)
              for name in series if name.startswith("alpha=")}

    # ---- summary
    f0 = fits["alpha=0"]
    log_band = [3.0, local_slope_n3log2(min(spec.Ns))]
    part1 = {"series": _public(series["alpha=0"]), "fit_power_law": f0["power"], "fit_over_log2N": f0["over_N3log2N"],
             "local_slope_N3log2N": {str(n): local_slope_n3log2(n) for n in spec.Ns}, "log_factor_band": log_band}
    for extra in ("logistic", "full template"):
        if extra in series:
            part1[extra] = {"series": _public(series[extra]), "fit_power_law": fits[extra]["power"]}
    part2, faster = {}, {}
    N_big = max(set(spec.Ns) & set(spec.alpha_Ns))
    for a in spec.alphas:
        name = f"alpha={a:g}"
        comp = []
        for ra in series[name]:
            r0 = next((r for r in series["alpha=0"] if r["N"] == ra["N"]), None)
            ok = r0 is not None and r0["median"] is not None and ra["median"] is not None
            comp.append({"N": ra["N"], "speedup": r0["median"] / ra["median"] if ok else None,
                         "heuristic_speedup": 1.0 / preconditioning_ratio(ra["N"], a),
                         "P_band": band_power_share(ra["N"], a)})
        part2[name] = {"series": _public(series[name]), "fit_power_law": fits[name]["power"],
                       "heuristic_exponent": (heuristic_exponent(f0["power"], spec.alpha_Ns, a)
                                              if f0["power"].get("slope") is not None else None),
                       "prefactor_median_over_N3": {str(r["N"]): r["median_over_N3"] for r in series[name]},
                       "speedup_over_alpha0": comp}
        r0 = next(r for r in series["alpha=0"] if r["N"] == N_big)
        ra = next(r for r in series[name] if r["N"] == N_big)
        faster[name] = {"N": N_big, "median_alpha0": r0["median"],
                        "median_alpha0_ci": [r0["median_lo"], r0["median_hi"]], "median": ra["median"],
                        "median_ci": [ra["median_lo"], ra["median_hi"]],
                        "faster": bool(ra["median_hi"] is not None and r0["median_lo"] is not None
                                       and ra["median_hi"] < r0["median_lo"])}
    summary = {
        "claim": "phase-only classification needs ~N^3 samples for a flat spectrum (between N^3 and N^3 log^2 N), "
                 "fewer with power-law spectra; amplitudes are used before phases (Ricci, Merger, Goldt 2026)",
        "engine": "full", "quick": quick, "spec": asdict(spec), "choices": CHOICES,
        "parameters": {"band": BAND, "a0": A0, "c_eff": C_EFF, "threshold": THRESHOLD, "n_test": N_TEST,
                       "records": RECORDS, "batch": {str(n): batch_size(n) for n in sorted({*spec.Ns, *spec.alpha_Ns})},
                       "lr_per_sample": "c_eff / (a0 N^2) (logistic: x2)", "activation": "exp(-z^2/2) - 2^-1/2",
                       "activation_hermite": {"c2": -0.25, "c4": 3 / (4 * math.sqrt(48))}},
        "part1_flat": part1, "part2_power_law": part2, "faster_at_largest_N": faster,
        "part3_amplitude_before_phase": {k: v for k, v in amp.items() if not k.startswith("_")},
        "part4_tracks": {k: {"N": v["N"], "seed": v["seed"], "crossing": v["crossing"],
                             "initial_alignment": float(v["alignment"][0]),
                             "final_alignment": float(v["alignment"][-1]),
                             "random_alignment": v["random_alignment"],
                             "initial_band_weight": float(v["low_frequency_fraction"][0]),
                             "final_band_weight": float(v["low_frequency_fraction"][-1]),
                             "final_ipr_times_N": float(v["ipr"][-1] * v["N"]),
                             "input_band_share": v["input_band_share"]} for k, v in tracks.items()},
        "compute_s": compute_s,
        "runs_wall_s": float(sum(r.wall_time for rs in results.values() for r in rs) + amp_res.wall_time),
    }
    if "calibration" in series:
        summary["calibration"] = [{"c_eff": r["c_eff"], **{k: r[k] for k in ("N", "n_seeds", "n_crossed", "median",
                                                                              "median_lo", "median_hi")}}
                                  for r in series["calibration"]]
    table = _table(spec, series, fits, amp, summary)
    figures = {"scaling.png": _scaling_figure(series, fits, spec), "amplitude_phase.png": _amp_figure(amp),
               "spectra.png": _spectra_figure(tracks)}
    return write_outputs(out, name="fourier", summary=summary, table=table, figures=figures, started=started)


def _table(spec: Spec, series: dict, fits: dict, amp: dict, summary: dict) -> str:
    cols = [("N", "N", fmt_g()), ("batch", "n_b", fmt_g()), ("n_crossed", "crossed", fmt_g()),
            ("n_seeds", "seeds", fmt_g()), ("median", "median samples", fmt_g()), ("median_lo", "95% lo", fmt_g()),
            ("median_hi", "95% hi", fmt_g()), ("median_over_N3", "median / N^3", fmt_g()),
            ("final_accuracy", "final acc.", fmt_g(".3f"))]
    text = ("Engine: full. Reconstructed choices [R] are listed in results.json (`choices`, `parameters`).\n\n"
            f"## 1. Flat spectrum (alpha = 0): samples to test accuracy >= {THRESHOLD}\n\n"
            + markdown_table(_public(series["alpha=0"]), cols)
            + "\nTheory: between 3 (N^3) and the local slope of N^3 log^2 N, 3 + 2/ln N = "
            + ", ".join(f"{local_slope_n3log2(n):.2f} (N = {n})" for n in spec.Ns) + ".\n")
    rows = []
    for name, f in fits.items():
        for kind, key in (("power law", "power"), ("median / log^2 N", "over_N3log2N")):
            fr = f[key]
            ci = fr.get("ci") or [None, None]
            theory = 3.0 if name in ("alpha=0", "logistic") else None
            if name in summary["part2_power_law"] and key == "power":
                theory = summary["part2_power_law"][name]["heuristic_exponent"]
            rows.append({"series": name, "fit": kind, "N": f"{min(f['Ns'])}..{max(f['Ns'])}", "slope": fr.get("slope"),
                         "lo": ci[0], "hi": ci[1], "theory": theory})
    text += "\n## Fitted exponents (95% CI)\n\n" + markdown_table(rows, [
        ("series", "series", str), ("fit", "fit", str), ("N", "N", str), ("slope", "exponent", fmt_g(".3f")),
        ("lo", "lo", fmt_g(".3f")), ("hi", "hi", fmt_g(".3f")),
        ("theory", "theory (alpha > 0: [R] heuristic)", fmt_g(".3g"))])
    for name in [k for k in series if k not in ("alpha=0", "calibration")]:
        text += f"\n## {name}\n\n" + markdown_table(_public(series[name]), cols)
        if name in summary["part2_power_law"]:
            text += "\n" + markdown_table(summary["part2_power_law"][name]["speedup_over_alpha0"], [
                ("N", "N", fmt_g()), ("speedup", "speedup over alpha = 0", fmt_g(".3g")),
                ("heuristic_speedup", "[R] heuristic (P_band(alpha)/P_band(0))^2", fmt_g(".3g")),
                ("P_band", "P_band", fmt_g(".3g"))])
    if "calibration" in summary:
        text += (f"\n## Logged step-size scan at N = {spec.calibration_N} (the runs use c_eff = {C_EFF})\n\n"
                 + markdown_table(summary["calibration"], [
                     ("c_eff", "c_eff", fmt_g()), ("n_crossed", "crossed", fmt_g()), ("n_seeds", "seeds", fmt_g()),
                     ("median", "median samples", fmt_g()), ("median_lo", "95% lo", fmt_g()),
                     ("median_hi", "95% hi", fmt_g())]))
    amp_rows = [{"probe": k, **v, "final": amp["final"][k], "peak": amp["peak_median"][k]}
                for k, v in amp["stats"].items()]
    text += (f"\n## 3. Amplitude before phase (N = {amp['N']}, {amp['width']} units; structured alpha = "
             f"{AMP_ALPHAS[0]}, noise alpha = {AMP_ALPHAS[1]}; phase probe at alpha = {PROBE_ALPHA})\n\n"
             + markdown_table(amp_rows, [("probe", "probe", str), ("n_crossed", "crossed", fmt_g()),
                                         ("median", "median samples", fmt_g()), ("median_lo", "95% lo", fmt_g()),
                                         ("median_hi", "95% hi", fmt_g()), ("peak", "peak median acc.", fmt_g(".3f")),
                                         ("final", "final median acc.", fmt_g(".3f"))])
             + "\nSeeds whose amplitude probe crosses before their phase probe: "
             f"{amp['fraction_amplitude_first']:.2f}\n")
    tr = summary["part4_tracks"]
    text += "\n## 4. Weight spectra and template alignment (median seed, largest N)\n\n" + markdown_table(
        [{"series": k, **v} for k, v in tr.items()],
        [("series", "series", str), ("N", "N", fmt_g()), ("crossing", "crossing samples", fmt_g()),
         ("initial_alignment", "alignment t=0", fmt_g(".2f")), ("final_alignment", "alignment end", fmt_g(".2f")),
         ("initial_band_weight", "band weight t=0", fmt_g(".2f")),
         ("final_band_weight", "band weight end", fmt_g(".2f")), ("input_band_share", "P_band", fmt_g(".2f")),
         ("final_ipr_times_N", "IPR x N end", fmt_g(".2f"))])
    return text
