r"""``sgdlab reproduce w2s``: weak-to-strong generalisation by feature elicitation in two-layer
reward models (Awano & Suzuki 2026).

The claim checked (their abstract): a strong pre-trained two-layer reward model whose
representations sit in low-dimensional task subspaces V_k, fine-tuned by online SGD on the
labels of a weak model specialised on task kappa (W2S), learns task kappa and acquires its target
direction beta_kappa, which it was not given, while keeping its off-target features; supervised
fine-tuning on ground truth (SFT) forgets them when the off-target directions are correlated with
beta_kappa. The paper's model section is not public: the family of :mod:`sgdlab.w2s` is a
reconstruction, and every reconstructed choice is listed in ``results.json`` (``reconstructed``)
and in the docs page.

Runs are on the exact ``chain`` (cost per step independent of d). Every pipeline starts from the
same pre-trained state per seed and uses the same SGD seeds, so W2S and SFT are paired seed by
seed. Two weak models of one kind, a noisy direction beta_hat (beta_hat . beta_kappa = q_W): its
noise inside V_kappa (the weak model depends on x only through V_kappa, as the issue asks) and
outside every V_k (a spurious feature the strong model has no pre-trained feature for); and a
small random-features network on V_kappa fitted to few noisy samples.

Parts:

1. alignment of the kappa-neurons with beta_kappa and the task-kappa error vs time for SFT and
   the W2S pipelines, beside the weak models' errors;
2. off-target retention: share of the off-target neurons' energy in their subspace and the
   off-target error (frozen heads) vs time;
3. final off-target error and retention vs rho for SFT and W2S (rho = 0: the first-order leakage
   through E[sigma'] times the He1 part of the residual, measured); PGR vs rho and vs q_W;
4. chain vs ODE for one small configuration (one pre-trained state, p = 2).

The PGR ceiling is the issue's: the strong model fine-tuned from the same pre-trained state on the
ground truth of *all* tasks (the multi-task loss, every head on its own reward; off-target heads
trained from their fit, ``Spec.ceiling_heads``), same rates and SGD seeds. PGR with SFT at the same
time in place of the ceiling is kept as a reference (``pgr_sft_reference``).

Controls: W2S whose labels come from the weak model's own label function of the frame coordinates
(``Direction(1.0, path='function')``: beta_hat = beta_kappa exactly, evaluated through the weak
model's code, no rotation) must be SFT, whose labels come from the problem's committee target, bit
for bit; chain = full in law (KS) for one small W2S run.

Pairwise (Bradley-Terry) reward labels are not built: see the docs page.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import w2s as W
from ..config import ConfigError
from ._common import (
    RUNS_ITSELF,
    Outputs,
    cached_arrays,
    chain_vs_ode,
    fig_chain_vs_ode,
    fmt_g,
    markdown_table,
    require_engine,
    write_outputs,
)

__all__ = ["FULL", "QUICK", "Spec", "law_check", "reproduce", "run_cached"]

SERIES = ("sft", "w2s_in", "w2s_out")
LABELS = {"sft": "SFT (ground truth of task kappa)", "w2s_in": "W2S, weak noise inside V_kappa",
          "w2s_out": "W2S, weak noise outside", "w2s_net": "W2S, small network weak model",
          "w2s_fn_gt": "W2S with ground-truth labels through the weak model's label function (control)",
          "ceiling": "ceiling (ground truth of all tasks)"}
COLORS = {"sft": "k", "w2s_in": "tab:blue", "w2s_out": "tab:red", "w2s_net": "tab:green", "ceiling": "tab:purple"}


@dataclass(frozen=True)
class Spec:
    d: int
    seeds: int
    K: int
    r: int
    per_task: int
    eta: float
    eta_second: float
    t: float
    records: int
    rho: float  # parts 1-2
    rhos: tuple[float, ...]  # part 3
    q: float  # parts 1-3
    qs: tuple[float, ...]  # part 3, PGR vs q_W at rho
    net: tuple[int, int, float]  # small network weak model: width, samples, noise
    law: tuple[int, int, float]  # chain vs full: d, seeds, t
    ode: tuple[int, int, float] | None  # chain vs ODE: d, chain seeds, t
    ceiling_heads: str = "trained"  # the all-tasks ceiling's off-target heads: 'trained' or 'frozen'
    ceiling_weight: float | str = "stable"  # weight of its off-target losses: a number, or w2s.stable_off_weight


FULL = Spec(d=1000, seeds=256, K=2, r=3, per_task=3, eta=8.0, eta_second=2.0, t=6.0, records=30, rho=0.8,
            rhos=(0.0, 0.2, 0.4, 0.6, 0.8, 0.95), q=0.7, qs=(0.3, 0.5, 0.7, 0.9), net=(3, 24, 0.5),
            law=(40, 400, 2.0), ode=(2000, 400, 6.0))
QUICK = Spec(d=200, seeds=48, K=2, r=3, per_task=3, eta=8.0, eta_second=2.0, t=6.0, records=12, rho=0.8,
             rhos=(0.0, 0.8), q=0.7, qs=(0.4, 0.7), net=(3, 24, 0.5), law=(40, 256, 2.0), ode=(400, 256, 6.0))


# ----------------------------------------------------------------------------- runs


def _desc(spec: Spec, series: str, *, rho: float, q: float, seed: int, d: int | None = None,
          seeds: int | None = None, t: float | None = None, engine: str = "chain", per_task: int | None = None,
          pre_seeds: int | None = None, pre_seed: int | None = None) -> dict:
    """A run as plain data (its cache key)."""
    return {"series": series, "rho": rho, "q": q, "seed": seed, "d": d or spec.d, "seeds": seeds or spec.seeds,
            "t": t or spec.t, "engine": engine, "K": spec.K, "r": spec.r, "per_task": per_task or spec.per_task,
            "eta": spec.eta, "eta_second": spec.eta_second, "records": spec.records, "net": list(spec.net),
            "pre_seeds": pre_seeds or seeds or spec.seeds, "pre_seed": seed if pre_seed is None else pre_seed,
            "activation": "erf", "link": "erf", "output_scale": "sum", "spare": 1}


def label_of(desc: dict):
    s, q = desc["series"], desc["q"]
    if s == "sft":
        return W.Direction(1.0)
    if s == "w2s_in":
        return W.Direction(q, "inside")
    if s == "w2s_out":
        return W.Direction(q, "outside")
    if s == "w2s_fn_gt":
        return W.Direction(1.0, "inside", path="function")
    if s == "ceiling":
        return W.AllTasks(desc["off_heads"], desc["off_weight"])
    if s == "w2s_net":
        w, n, noise = desc["net"]
        return W.SmallNet(width=int(w), samples=int(n), noise=float(noise), seed=desc["seed"])
    raise ConfigError(f"series: got {s!r}; allowed: sft, w2s_in, w2s_out, w2s_fn_gt, w2s_net, ceiling")


def objects(desc: dict):
    """(pre-trained state, label, fine-tuning) of a run description."""
    tasks = W.Tasks(K=desc["K"], r=desc["r"], rho=desc["rho"], spare=desc["spare"], link=desc["link"])
    strong = W.Strong(per_task=desc["per_task"], activation=desc["activation"], output_scale=desc["output_scale"])
    pre = W.pretrain(tasks, strong, desc["pre_seeds"], desc["pre_seed"])
    ft = W.FineTune(eta=desc["eta"], eta_second=desc["eta_second"], t=desc["t"], records=desc["records"])
    return pre, label_of(desc), ft


def _execute(desc: dict) -> dict:
    from ..engines import ODE, Chain, Full

    pre, label, ft = objects(desc)
    engine = {"chain": Chain(), "full": Full(dtype="float64"), "ode": ODE()}[desc["engine"]]
    run = W.finetune(pre, label, ft, desc["d"], engine=engine, seed=desc["seed"],
                     seeds=None if desc["engine"] == "ode" else desc["seeds"])
    out = {"steps": run.steps, "M": run.M, "Q": run.Q, "a": run.a, "diverged_step": run.diverged_step,
           "wall_s": np.asarray(run.wall_s)}
    if run.heads is not None:
        out["heads"] = run.heads
    return {k: np.asarray(v) for k, v in out.items()}


def run_cached(desc: dict, store: str | Path | None) -> dict:
    """The run's trajectory arrays, read from ``store/w2s/<key>.npz`` when there."""
    return cached_arrays("w2s", desc, store, _execute)


def _as_run(desc: dict, out: dict) -> W.Run:
    return W.Run(out["steps"], out["M"], out["Q"], out["a"], out["diverged_step"], desc["d"], 1,
                 float(out["wall_s"]), heads=out.get("heads"))


# ----------------------------------------------------------------------------- statistics


def _ms(x: np.ndarray) -> tuple[float, float]:
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size)) if x.size > 1 else math.nan


def _share(pre: W.PreTrained, run: W.Run) -> np.ndarray:
    """Share of the off-target neurons' squared norm inside their own subspace (S, R): mean over
    k != kappa of sum_{j in k} |P_Vk w_j|^2 / sum_{j in k} |w_j|^2."""
    tasks, m = pre.tasks, pre.strong.per_task
    qd = np.einsum("...jj->...j", run.Q)
    out = []
    for k in range(1, tasks.K):
        J = slice(k * m, (k + 1) * m)
        e = np.sum((run.M[..., J, :] @ tasks.basis(k).T) ** 2, axis=(-1, -2))
        out.append(e / qd[..., J].sum(-1))
    return np.mean(out, axis=0)


def _summary(desc: dict, out: dict) -> dict:
    pre, label, _ = objects(desc)
    run = _as_run(desc, out)
    mt = W.metrics(pre, run)
    share = _share(pre, run)
    m = pre.strong.per_task
    overlap_off = np.mean((run.M[..., m:, :] @ pre.tasks.beta(0)) ** 2
                          / np.einsum("...jj->...j", run.Q)[..., m:], -1)  # off-target cos^2 with beta_kappa
    err_off = mt["err"][..., 1:].mean(-1)
    ds = np.asarray(out["diverged_step"])
    row = {"series": desc["series"], "rho": desc["rho"], "q": desc["q"], "seeds": int(run.M.shape[0]),
           "n_diverged": int(np.sum(ds >= 0)), "diverged_steps": [int(v) for v in ds[ds >= 0]]}
    # a stopped seed keeps its last healthy state: its records from the stop on are NaN (left out of
    # every mean, interval and paired difference)
    stopped = (ds[:, None] >= 0) & (np.asarray(out["steps"])[None, :] >= ds[:, None])
    for name, x in (("align", mt["align"]), ("err_kappa", mt["err"][..., 0]), ("err_off", err_off),
                    ("share_off", share), ("overlap_off", overlap_off), ("mass_off", mt["mass"][..., 1:].sum(-1))):
        x = np.where(stopped, np.nan, x)
        row[name], row[name + "_se"] = _ms(x[:, -1])
        row[name + "_0"] = float(np.nanmean(x[:, 0]))
        row["_" + name] = x
    if desc["series"] not in ("sft", "ceiling"):
        row["err_weak"] = W.weak_error(pre.tasks, label)
    row["_t"] = run.t
    row["_pre"], row["_run"], row["_label"] = pre, run, label
    return row


def _forgot(row: dict) -> float:
    """Increase of the off-target error over the run (mean over seeds)."""
    return row["err_off"] - row["err_off_0"]


def _public(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith("_")}


def _pgr(row_w: dict, row_c: dict, *, boot: int = 2000, seed: int = 0) -> dict:
    """Final PGR = (err_weak - mean err_W2S) / (err_weak - mean err_ceiling), the ceiling's run
    (``row_c``: the all-tasks ceiling, or SFT for the SFT-referenced PGR) from the same pre-trained
    states and SGD seeds; 95% interval by a paired bootstrap over seeds."""
    w = row_w["err_weak"]
    x, y = row_w["_err_kappa"][:, -1], row_c["_err_kappa"][:, -1]
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    val = float(W.pgr(w, x.mean(), y.mean()))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(boot, x.size))
    bs = W.pgr(w, x[idx].mean(1), y[idx].mean(1))
    lo, hi = np.percentile(bs, [2.5, 97.5])
    curve = _pgr_curve(row_w, row_c)
    ok_t = np.isfinite(curve)
    best = int(np.nanargmax(np.where(ok_t, curve, -np.inf))) if ok_t.any() else 0
    return {"pgr": val, "ci": [float(lo), float(hi)], "err_weak": w, "err_w2s": float(x.mean()),
            "err_ceiling": float(y.mean()), "best_pgr_over_time": float(curve[best]) if ok_t.any() else None,
            "best_t": float(row_w["_t"][best])}


def _pgr_curve(row_w: dict, row_c: dict) -> np.ndarray:
    """PGR(t) with the ceiling's run at the same t, NaN at the records where the gap err_weak -
    err_ceiling(t) is below half its final value (early on the ceiling is still worse than the weak
    model: PGR means nothing there)."""
    w = row_w["err_weak"]
    ew, ec = np.nanmean(row_w["_err_kappa"], 0), np.nanmean(row_c["_err_kappa"], 0)
    gap = w - ec
    return np.where(gap >= 0.5 * gap[-1], W.pgr(w, ew, ec), np.nan)


def _retention(row_w: dict, row_s: dict) -> dict:
    """W2S vs SFT retention at one rho: the two means with their 95% intervals (disjoint: W2S's
    lower bound above SFT's upper bound) and the paired difference."""
    out = {}
    for name in ("share_off", "err_off"):
        mw, sw = row_w[name], row_w[name + "_se"]
        ms, ss = row_s[name], row_s[name + "_se"]
        diff = row_w["_" + name][:, -1] - row_s["_" + name][:, -1]
        md, sd = _ms(diff)
        better = (mw - 1.96 * sw > ms + 1.96 * ss) if name == "share_off" else (mw + 1.96 * sw < ms - 1.96 * ss)
        out[name] = {"w2s": [mw, mw - 1.96 * sw, mw + 1.96 * sw], "sft": [ms, ms - 1.96 * ss, ms + 1.96 * ss],
                     "paired_diff": [md, md - 1.96 * sd, md + 1.96 * sd], "w2s_better_disjoint": bool(better)}
    return out


def _leakage(row: dict) -> dict:
    """rho = 0: the first-order pull of the off-target neurons along beta_kappa (w2s.leakage, mean
    over seeds and off-target neurons, its largest magnitude over time) and what it did: the
    off-target neurons' squared cosine with beta_kappa and the share of their energy that left V_k
    at the end."""
    pre, run = row["_pre"], row["_run"]
    m = pre.strong.per_task
    pull = W.leakage(pre, run.M, run.Q, run.a, row["_label"])[..., m:]  # (S, R, p_off)
    curve = np.nanmean(np.abs(pull), axis=(0, 2))
    lost = 1.0 - row["_share_off"][:, -1]
    return {"series": row["series"], "pull_max_per_lr": float(curve.max()), "pull_t": float(run.t[np.argmax(curve)]),
            "overlap_off_final": [row["overlap_off"], row["overlap_off_se"]],
            "share_lost_final": list(_ms(lost)), "err_off_change": row["err_off"] - row["err_off_0"]}


# ----------------------------------------------------------------------------- the law check, the ODE


def law_check(spec: Spec, store, seed: int) -> dict:
    """Chain vs full in law for one small W2S run (K = 2, one neuron per task, the 'outside' weak
    model at rho = spec.rho): two-sample KS tests of final order parameters over the seeds, one
    pre-trained state per seed; Bonferroni at 1%."""
    from scipy.stats import ks_2samp

    d, seeds, t = spec.law
    ch = _desc(spec, "w2s_out", rho=spec.rho, q=spec.q, seed=seed + 7, d=d, seeds=seeds, t=t, per_task=1)
    oc, of = run_cached(ch, store), run_cached({**ch, "engine": "full"}, store)
    tests = {}
    stats = {"M_0_0": lambda o: o["M"][:, -1, 0, 0], "M_0_spare": lambda o: o["M"][:, -1, 0, -1],
             "M_1_0": lambda o: o["M"][:, -1, 1, 0], "Q_0_0": lambda o: o["Q"][:, -1, 0, 0],
             "Q_0_1": lambda o: o["Q"][:, -1, 0, 1], "a_0": lambda o: o["a"][:, -1, 0],
             "a_1": lambda o: o["a"][:, -1, 1]}
    for name, fn in stats.items():
        x, y = fn(oc), fn(of)
        r = ks_2samp(x, y)
        tests[name] = {"ks": float(r.statistic), "p": float(r.pvalue), "mean_chain": float(x.mean()),
                       "mean_full": float(y.mean())}
    ps = [v["p"] for v in tests.values()]
    pmin = float(np.min(ps))  # NaN when a statistic is NaN: then the check fails
    stopped = {k: int(np.sum(o["diverged_step"] >= 0)) for k, o in (("chain", oc), ("full", of))}
    return {"d": d, "seeds": seeds, "t": t, "per_task": 1, "weak": "outside", "q": spec.q, "rho": spec.rho,
            "tests": tests, "min_p": pmin, "n_diverged": stopped,
            "bonferroni_ok": bool(pmin > 0.01 / len(tests) and not any(stopped.values()))}


def _ode_part(spec: Spec, store, seed: int) -> dict | None:
    """Part 4: one pre-trained state (K = 2, one neuron per task, rho = spec.rho), SFT, on the
    chain (its mean over seeds: SGD noise only) and on the ODE (erf closed forms)."""
    if spec.ode is None:
        return None
    d, seeds, t = spec.ode
    ch = _desc(spec, "sft", rho=spec.rho, q=spec.q, seed=seed + 11, d=d, seeds=seeds, t=t, per_task=1,
               pre_seeds=1, pre_seed=seed + 2)
    od = {**ch, "engine": "ode", "seeds": 1}
    t0 = time.perf_counter()
    o_ode = run_cached(od, store)
    wall_ode = time.perf_counter() - t0
    o_ch = run_cached(ch, store)
    pre, _, _ = objects(ch)
    r_ch, r_od = _as_run(ch, o_ch), _as_run(od, o_ode)
    m_ch, m_od = W.metrics(pre, r_ch), W.metrics(pre, r_od)
    out = {"d": d, "seeds": seeds, "t_horizon": t, "t": r_ch.t.tolist(), "wall_ode_s": float(o_ode["wall_s"]),
           "wall_ode_total_s": wall_ode}
    for name, x_ch, x_od in (("align", m_ch["align"], m_od["align"]),
                             ("err_kappa", m_ch["err"][..., 0], m_od["err"][..., 0]),
                             ("err_off", m_ch["err"][..., 1], m_od["err"][..., 1]),
                             ("a_kappa_neuron", r_ch.a[..., 0], r_od.a[..., 0])):
        out[name] = chain_vs_ode(x_ch, r_ch.steps, x_od[0], r_od.steps)
    return out


# ----------------------------------------------------------------------------- figures


def _fig_part1(spec: Spec, rows: dict):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 4.2))
    for s in (*SERIES, "w2s_net", "ceiling"):
        r = rows[(s, spec.rho, spec.q)]
        for ax, key in ((axes[0], "_align"), (axes[1], "_err_kappa")):
            m = np.nanmean(r[key], 0)
            se = np.nanstd(r[key], 0) / math.sqrt(r[key].shape[0])
            ax.plot(r["_t"], m, color=COLORS[s], label=LABELS[s])
            ax.fill_between(r["_t"], m - 2 * se, m + 2 * se, color=COLORS[s], alpha=0.2)
        if s not in ("sft", "ceiling"):
            axes[1].axhline(r["err_weak"], color=COLORS[s], ls=":", lw=1.2,
                            label=f"weak model ({f'q_W = {spec.q:g}' if s != 'w2s_net' else 'small network'}"
                                  f"): {r['err_weak']:.3f}")
    axes[0].set(xlabel="samples / d", ylabel="mean |cos(w_j, beta_kappa)|, kappa-neurons (± 2 SE)",
                title="Part 1: alignment with beta_kappa")
    axes[1].set(xlabel="samples / d", ylabel="task-kappa error E[(f - r_kappa)^2]/2 (± 2 SE)",
                title="Part 1: task-kappa error", yscale="log")
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=7)
    ax = axes[2]
    for s in ("w2s_in", "w2s_out", "w2s_net"):
        r, c, c2 = rows[(s, spec.rho, spec.q)], rows[("ceiling", spec.rho, spec.q)], rows[("sft", spec.rho, spec.q)]
        ax.plot(r["_t"], _pgr_curve(r, c), color=COLORS[s], label=f"{LABELS[s]}: ceiling = all tasks")
        ax.plot(r["_t"], _pgr_curve(r, c2), color=COLORS[s], ls="--", lw=1,
                label="  dashed: SFT in place of the ceiling (under the solid line where equal)")
    ax.axhline(0, color="0.5", lw=1)
    ax.axhline(1, color="0.5", lw=1, ls="--", label="PGR = 1 (the ceiling)")
    ax.set(xlabel="samples / d", ylabel="PGR(t) (reference run at the same t)",
           title="Part 1: PGR over time (where err_weak - err_ref(t) >= half its final value)")
    ax.legend(fontsize=7)
    fig.suptitle(f"chain, d = {spec.d}, {spec.seeds} seeds, K = {spec.K}, r = {spec.r}, {spec.per_task} neurons "
                 f"per task, rho = {spec.rho}, q_W = {spec.q}")
    return fig


def _fig_part2(spec: Spec, rows: dict):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 4.2))
    for s in (*SERIES, "w2s_net", "ceiling"):
        r = rows[(s, spec.rho, spec.q)]
        for ax, key in ((axes[0], "_share_off"), (axes[1], "_err_off"), (axes[2], "_mass_off")):
            m = np.nanmean(r[key], 0)
            se = np.nanstd(r[key], 0) / math.sqrt(r[key].shape[0])
            ax.plot(r["_t"], m, color=COLORS[s], label=LABELS[s])
            ax.fill_between(r["_t"], m - 2 * se, m + 2 * se, color=COLORS[s], alpha=0.2)
    axes[0].set(xlabel="samples / d", ylabel="share of off-target neurons' |w|^2 in their V_k (± 2 SE)",
                title="Part 2: off-target energy retained")
    axes[1].set(xlabel="samples / d", ylabel="off-target error (pre-trained head; ceiling: its own) (± 2 SE)",
                title="Part 2: off-target error")
    axes[2].set(xlabel="samples / d", ylabel="head-kappa mass on off-target neurons, sum a_j^2",
                title="Part 2: second-layer mass off target")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"rho = {spec.rho}, q_W = {spec.q} (chain, d = {spec.d}, {spec.seeds} seeds)")
    return fig


def _fig_part3(spec: Spec, rows: dict, pgr_rho: dict, pgr_q: dict):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(21, 4.2))
    for s in (*SERIES, "ceiling"):
        for ax, key in ((axes[0], "err_off"), (axes[1], "share_off")):
            y = [rows[(s, rho, spec.q)][key] for rho in spec.rhos]
            e = [1.96 * rows[(s, rho, spec.q)][key + "_se"] for rho in spec.rhos]
            ax.errorbar(spec.rhos, y, yerr=e, fmt="o-", color=COLORS[s], capsize=3, label=LABELS[s])
    y0 = [rows[("sft", rho, spec.q)]["err_off_0"] for rho in spec.rhos]
    axes[0].plot(spec.rhos, y0, "k:", label="off-target error before fine-tuning")
    axes[0].set(xlabel="rho = beta_k . beta_kappa", ylabel="final off-target error (95% CI)",
                title="Part 3: forgetting vs rho")
    axes[1].set(xlabel="rho", ylabel="final off-target energy share in V_k (95% CI)", title="Part 3: retention vs rho")
    axes[0].legend(fontsize=7)
    for ax, grid, res, xl in ((axes[2], spec.rhos, pgr_rho, "rho"), (axes[3], spec.qs, pgr_q, "q_W")):
        for s in ("w2s_in", "w2s_out"):
            v = [res[s][x] for x in grid]
            y = np.array([x["pgr"] for x in v])
            lo, hi = np.array([x["ci"][0] for x in v]), np.array([x["ci"][1] for x in v])
            ax.errorbar(grid, y, yerr=np.maximum([y - lo, hi - y], 0), fmt="o-", color=COLORS[s], capsize=3,
                        label=f"{LABELS[s]}, final")
            ax.plot(grid, [np.nan if x["best_pgr_over_time"] is None else x["best_pgr_over_time"] for x in v], "x--",
                    color=COLORS[s],
                    label=f"{LABELS[s]}, best over time")
        ax.axhline(0, color="0.5", lw=1)
        ax.axhline(1, color="0.5", lw=1, ls="--")
        ax.set(xlabel=xl, ylabel="PGR, ceiling = all tasks' ground truth (95% paired bootstrap)",
               title=f"Part 3: PGR vs {xl}" + (f" (q_W = {spec.q})" if xl == "rho" else f" (rho = {spec.rho})"))
        ax.legend(fontsize=7)
    return fig


def _fig_ode(ode: dict):
    curves = {k: ode[k] for k in ("align", "err_kappa", "err_off", "a_kappa_neuron")}
    return fig_chain_vs_ode(curves, ode["t"], ode_label="ODE (erf closed forms)", z_in_title=True,
                            title=f"Part 4: chain vs ODE, SFT from one pre-trained state (d = {ode['d']}, "
                                  f"{ode['seeds']} chain seeds)")


# ----------------------------------------------------------------------------- main


def plan(spec: Spec, seeds: int | None = None, seed: int = 0) -> dict:
    """(series, rho, q) -> run description: parts 1-3 and the ground-truth control."""
    S = seeds or spec.seeds
    runs = {}
    for rho in spec.rhos:
        for s in SERIES:
            runs[(s, rho, spec.q)] = _desc(spec, s, rho=rho, q=spec.q, seed=seed, seeds=S)
    for q in spec.qs:
        for s in ("w2s_in", "w2s_out"):
            runs.setdefault((s, spec.rho, q), _desc(spec, s, rho=spec.rho, q=q, seed=seed, seeds=S))
    runs[("w2s_net", spec.rho, spec.q)] = _desc(spec, "w2s_net", rho=spec.rho, q=spec.q, seed=seed, seeds=S)
    runs[("w2s_fn_gt", spec.rho, 1.0)] = _desc(spec, "w2s_fn_gt", rho=spec.rho, q=1.0, seed=seed, seeds=S)
    for rho in spec.rhos:
        desc = {**_desc(spec, "ceiling", rho=rho, q=spec.q, seed=seed, seeds=S), "off_heads": spec.ceiling_heads,
                "off_weight": 1.0}
        if spec.ceiling_weight == "stable":  # from this run's own pre-trained heads
            tasks = W.Tasks(K=desc["K"], r=desc["r"], rho=rho, spare=desc["spare"], link=desc["link"])
            strong = W.Strong(per_task=desc["per_task"], activation=desc["activation"],
                              output_scale=desc["output_scale"])
            desc["off_weight"] = W.stable_off_weight(W.pretrain(tasks, strong, desc["pre_seeds"], desc["pre_seed"]),
                                                     spec.eta)
        else:
            desc["off_weight"] = float(spec.ceiling_weight)
        runs[("ceiling", rho, spec.q)] = desc
    return runs


def reproduce(*, quick: bool = False, engine: str = "chain", store: str | Path | None = "results/store",
              out: str | Path | None = None, seeds: int | None = None, workers: int | None = None,
              progress: bool = False, seed: int = 0) -> Outputs:
    """Run (or read back from ``store``) every run and write ``alignment.png``, ``retention.png``,
    ``rho.png``, ``ode.png``, ``table.md`` and ``results.json`` into ``out`` (default
    ``results/reproduce/w2s[-quick]``). ``engine`` must be ``"chain"`` (the law check and part 4
    run ``full`` and ``ode`` themselves); ``workers`` is unused (the seeds are vmapped)."""
    del workers
    require_engine(engine, ("chain",), RUNS_ITSELF)
    started = time.perf_counter()
    spec = QUICK if quick else FULL
    out = Path(out) if out is not None else Path("results/reproduce") / ("w2s" + ("-quick" if quick else ""))
    runs = plan(spec, seeds, seed)
    rows, wall = {}, 0.0
    t_runs = time.perf_counter()
    for i, (key, desc) in enumerate(runs.items()):
        if progress:
            print(f"[w2s] run {i + 1}/{len(runs)}: {key}", flush=True)
        o = run_cached(desc, store)
        wall += float(o["wall_s"])
        rows[key] = _summary(desc, o)
    law = law_check(spec, store, seed)
    ode = _ode_part(spec, store, seed)
    compute_s = time.perf_counter() - t_runs

    sft, gt = rows[("sft", spec.rho, spec.q)], rows[("w2s_fn_gt", spec.rho, 1.0)]
    identical = bool(all(np.array_equal(sft["_run"].__dict__[k], gt["_run"].__dict__[k]) for k in ("M", "Q", "a")))
    pgr_rho, pgr_q, pgr_net = {}, {}, {}
    for ref in ("ceiling", "sft"):  # the all-tasks ceiling (the default), SFT at the same time (a reference)
        pgr_rho[ref] = {s: {rho: _pgr(rows[(s, rho, spec.q)], rows[(ref, rho, spec.q)], seed=seed)
                            for rho in spec.rhos} for s in ("w2s_in", "w2s_out")}
        pgr_q[ref] = {s: {q: _pgr(rows[(s, spec.rho, q)], rows[(ref, spec.rho, spec.q)], seed=seed) for q in spec.qs}
                      for s in ("w2s_in", "w2s_out")}
        pgr_net[ref] = _pgr(rows[("w2s_net", spec.rho, spec.q)], rows[(ref, spec.rho, spec.q)], seed=seed)
    cl = rows[("ceiling", spec.rho, spec.q)]
    retention = {s: {rho: _retention(rows[(s, rho, spec.q)], rows[("sft", rho, spec.q)]) for rho in spec.rhos}
                 for s in ("w2s_in", "w2s_out", "ceiling")}
    leak = [_leakage(rows[(s, 0.0, spec.q)]) for s in SERIES] if 0.0 in spec.rhos else []
    rmax = max(spec.rhos)
    main = {s: rows[(s, spec.rho, spec.q)] for s in (*SERIES, "w2s_net")}
    checks = {
        "w2s_ground_truth_is_sft_bit_for_bit": identical,
        "chain_equals_full_in_law": law["bonferroni_ok"],
        "w2s_in_retains_at_least_as_well_as_sft_at_largest_rho_disjoint":
            retention["w2s_in"][rmax]["share_off"]["w2s_better_disjoint"],
        "w2s_out_retains_at_least_as_well_as_sft_at_largest_rho_disjoint":
            retention["w2s_out"][rmax]["share_off"]["w2s_better_disjoint"],
        "sft_forgets_more_at_largest_rho_than_at_0":
            bool(_forgot(rows[("sft", rmax, spec.q)]) > _forgot(rows[("sft", min(spec.rhos), spec.q)])),
        "w2s_error_below_weak": {s: bool(main[s]["err_kappa"] + 1.96 * main[s]["err_kappa_se"] < main[s]["err_weak"])
                                 for s in ("w2s_in", "w2s_out", "w2s_net")},
        "w2s_alignment_gain": {s: main[s]["align"] - main[s]["align_0"] for s in (*SERIES, "w2s_net")},
        "ceiling_task_kappa_error_below_sft": bool(cl["err_kappa"] < sft["err_kappa"]),
    }
    summary = {
        "claim": "W2S fine-tuning of a strong pre-trained two-layer reward model on a weak model's labels "
                 "acquires the target direction and keeps the off-target features; SFT forgets them when "
                 "the off-target directions are correlated with the target's (Awano & Suzuki 2026)",
        "engine": "chain", "quick": quick, "spec": asdict(spec), "reconstructed": W.RECONSTRUCTED + [
            f"time and rates: lr = eta / d (first layer, eta = {spec.eta:g}) and eta_second / d (head kappa, "
            f"{spec.eta_second:g}), horizon {spec.t:g} d samples",
            "activation and link erf(z / sqrt 2); output scale 1 (sum); ridge 1e-3 for the head fits",
            "small network weak model: {} erf units uniform in V_kappa, readout ridge-fitted to {} samples with "
            "label noise {:g}".format(*spec.net),
        ],
        "runs": [_public(r) for r in rows.values()],
        "pgr_ceiling": f"the strong model fine-tuned on the ground truth of all {spec.K} tasks (multi-task loss, "
                       f"off-target heads {spec.ceiling_heads}, off-target losses weighted "
                       f"{runs[('ceiling', spec.rho, spec.q)]['off_weight']:.4g} "
                       f"({spec.ceiling_weight}: half the batch-1 stability bound of the pre-trained off-target "
                       "heads)), same rates, states and SGD seeds",
        "pgr_vs_rho": {s: {str(k): v for k, v in d.items()} for s, d in pgr_rho["ceiling"].items()},
        "pgr_vs_q": {s: {str(k): v for k, v in d.items()} for s, d in pgr_q["ceiling"].items()},
        "pgr_small_network": pgr_net["ceiling"],
        "pgr_sft_reference": {"what": "PGR with SFT at the same time in place of the ceiling (a reference, not "
                                      "the issue's ceiling)",
                              "vs_rho": {s: {str(k): v for k, v in d.items()} for s, d in pgr_rho["sft"].items()},
                              "vs_q": {s: {str(k): v for k, v in d.items()} for s, d in pgr_q["sft"].items()},
                              "small_network": pgr_net["sft"]},
        "retention_vs_rho": {s: {str(k): v for k, v in d.items()} for s, d in retention.items()},
        "leakage_rho0": leak, "law_check": law, "checks": checks,
        "ode": None if ode is None else {k: v for k, v in ode.items() if not isinstance(v, dict)}
        | {k: {"max_abs_z": v["max_abs_z"], "max_abs_diff": v["max_abs_diff"]} for k, v in ode.items()
           if isinstance(v, dict)},
        "ode_curves": None if ode is None else {k: v for k, v in ode.items() if isinstance(v, dict)},
        "compute_s": compute_s, "runs_wall_s": wall,
    }
    figures = {"alignment.png": _fig_part1(spec, rows), "retention.png": _fig_part2(spec, rows),
               "rho.png": _fig_part3(spec, rows, pgr_rho["ceiling"], pgr_q["ceiling"])}
    if ode is not None:
        figures["ode.png"] = _fig_ode(ode)
    return write_outputs(out, name="w2s", summary=summary, table=_table(spec, rows, summary), figures=figures,
                         started=started)


def _table(spec: Spec, rows: dict, summary: dict) -> str:
    f3, f4 = fmt_g(".3f"), fmt_g(".4f")
    cols = [("series", "series", str), ("rho", "rho", fmt_g()), ("q", "q_W", fmt_g()),
            ("align_0", "align t=0", f3), ("align", "align end", f3), ("align_se", "SE", f3),
            ("err_kappa", "err kappa", f4), ("err_kappa_se", "SE", f4), ("err_weak", "err weak", f4),
            ("err_off_0", "err off t=0", f4), ("err_off", "err off end", f4), ("err_off_se", "SE", f4),
            ("share_off", "share off end", f4), ("share_off_se", "SE", f4), ("n_diverged", "diverged", fmt_g())]
    text = (f"Engine: chain, d = {spec.d}, horizon {spec.t:g} d samples, {spec.seeds} seeds per run (paired: same "
            "pre-trained states and SGD seeds). Reconstructed choices: results.json `reconstructed`.\n\n"
            "## Final values (mean, SE over seeds)\n\n" + markdown_table([_public(r) for r in rows.values()], cols))
    prow = []
    for s, dd in summary["pgr_vs_rho"].items():
        for k, v in dd.items():
            prow.append({"series": s, "grid": f"rho = {k}", **v, "lo": v["ci"][0], "hi": v["ci"][1]})
    for s, dd in summary["pgr_vs_q"].items():
        for k, v in dd.items():
            prow.append({"series": s, "grid": f"q_W = {k} (rho = {spec.rho})", **v, "lo": v["ci"][0], "hi": v["ci"][1]})
    v = summary["pgr_small_network"]
    prow.append({"series": "w2s_net", "grid": f"rho = {spec.rho}", **v, "lo": v["ci"][0], "hi": v["ci"][1]})
    pcols = [("series", "series", str), ("grid", "point", str), ("err_weak", "err weak", f4),
             ("err_w2s", "err W2S", f4), ("err_ceiling", "err ref", f4), ("pgr", "PGR", f3), ("lo", "lo", f3),
             ("hi", "hi", f3), ("best_pgr_over_time", "best PGR(t)", f3), ("best_t", "at t", fmt_g(".3g"))]
    text += ("\n## PGR = (err_weak - err_W2S) / (err_weak - err_ceiling) at the horizon (95% paired bootstrap) and "
             "its best value over time (records where err_weak - err_ceiling(t) is at least half its final value); "
             f"ceiling: {summary['pgr_ceiling']}\n\n" + markdown_table(prow, pcols))
    ref = summary["pgr_sft_reference"]
    srow = [{"series": s, "grid": f"rho = {k}", **v, "lo": v["ci"][0], "hi": v["ci"][1]}
            for s, dd in ref["vs_rho"].items() for k, v in dd.items()]
    srow += [{"series": s, "grid": f"q_W = {k} (rho = {spec.rho})", **v, "lo": v["ci"][0], "hi": v["ci"][1]}
             for s, dd in ref["vs_q"].items() for k, v in dd.items()]
    v = ref["small_network"]
    srow.append({"series": "w2s_net", "grid": f"rho = {spec.rho}", **v, "lo": v["ci"][0], "hi": v["ci"][1]})
    text += ("\n## Reference: the same PGR with SFT at the same time in place of the ceiling (err ref = err SFT)\n\n"
             + markdown_table(srow, pcols))
    rrow = []
    for s, dd in summary["retention_vs_rho"].items():
        for k, v in dd.items():
            sh = v["share_off"]
            rrow.append({"series": s, "rho": k, "w": "{:.4f} [{:.4f}, {:.4f}]".format(*sh["w2s"]),
                         "s": "{:.4f} [{:.4f}, {:.4f}]".format(*sh["sft"]),
                         "p": "{:.4f} [{:.4f}, {:.4f}]".format(*sh["paired_diff"]), "ok": sh["w2s_better_disjoint"]})
    text += ("\n## Off-target energy share retained, W2S (and the ceiling) vs SFT (95% intervals)\n\n"
             + markdown_table(rrow, [("series", "W2S series", str), ("rho", "rho", str), ("w", "W2S", str),
                                     ("s", "SFT", str), ("p", "paired W2S - SFT", str),
                                     ("ok", "W2S higher, disjoint", str)]))
    if summary["leakage_rho0"]:
        text += ("\n## rho = 0: first-order leakage (not a clean control)\n\n" + markdown_table(
            [{**x, "ov": "{:.2e} ± {:.1e}".format(*x["overlap_off_final"]),
              "lost": "{:.2e} ± {:.1e}".format(*x["share_lost_final"])} for x in summary["leakage_rho0"]],
            [("series", "series", str), ("pull_max_per_lr", "max |s a_j E[sigma'] c_1| (per unit lr)", fmt_g(".3g")),
             ("pull_t", "at t", fmt_g(".3g")), ("ov", "off-target cos^2 with beta_kappa, end", str),
             ("lost", "energy share lost, end", str), ("err_off_change", "off-target error change", fmt_g(".2e"))]))
    ch, lc = summary["checks"], summary["law_check"]
    text += ("\n## Checks\n\n"
             "- W2S with ground-truth labels through the weak model's own label function is SFT (committee "
             f"target) bit for bit: {ch['w2s_ground_truth_is_sft_bit_for_bit']}\n"
             "- the all-tasks ceiling's task-kappa error is below SFT's: "
             f"{ch['ceiling_task_kappa_error_below_sft']}\n"
             f"- chain = full in law (d = {lc['d']}, {lc['seeds']} seeds, KS on {len(lc['tests'])} statistics, min p = "
             f"{lc['min_p']:.3g}): {lc['bonferroni_ok']}\n"
             f"- W2S (inside) retains more than SFT at rho = {max(spec.rhos)}, disjoint intervals: "
             f"{ch['w2s_in_retains_at_least_as_well_as_sft_at_largest_rho_disjoint']}; (outside): "
             f"{ch['w2s_out_retains_at_least_as_well_as_sft_at_largest_rho_disjoint']}\n"
             "- SFT forgets more at the largest rho than at the smallest: "
             f"{ch['sft_forgets_more_at_largest_rho_than_at_0']}\n"
             f"- W2S error below the weak model's (95%): {ch['w2s_error_below_weak']}\n"
             "- alignment gain of the kappa-neurons: "
             f"{ {k: round(v, 3) for k, v in ch['w2s_alignment_gain'].items()} }\n")
    ode = summary["ode"]
    if ode is None:
        text += "- part 4 (chain vs ODE): not in this mode\n"
    else:
        z = {k: round(v["max_abs_z"], 2) for k, v in summary["ode_curves"].items()}
        diff = {k: float(format(v["max_abs_diff"], ".3g")) for k, v in summary["ode_curves"].items()}
        text += f"- part 4 (chain vs ODE, d = {ode['d']}): max |ODE - chain mean| / SE: {z}; max |difference|: {diff}\n"
    return text
