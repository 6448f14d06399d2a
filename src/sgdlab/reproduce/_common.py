"""What every reproduction shares: running its runs through the results store, escape
statistics per run, scaling fits, and writing the figure / table / JSON outputs."""

from __future__ import annotations

import hashlib
import json
import math
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..analysis import EscapeStats, ScalingFit, escape_from_result, fit_scaling
from ..config import Config, ConfigError, load_config
from ..io import SUMMARY, _atomic_write, package_versions
from ..result import Result
from ..store import Store, run_key

__all__ = [
    "STOP_FRACTION",
    "cached_arrays",
    "chain_vs_ode",
    "description_key",
    "require_engine",
    "RUNS_ITSELF",
    "fig_chain_vs_ode",
    "Outputs",
    "Point",
    "default_workers_for_backend",
    "escape_row",
    "fit_row",
    "cost",
    "matched_config",
    "pow2",
    "provenance",
    "run_points",
    "write_outputs",
]


STOP_FRACTION = 0.7  # escape runs end once this fraction of seeds escaped: the KM median is unchanged (> 1/2)


def pow2(a: int, b: int) -> tuple[int, ...]:
    """(2^a, ..., 2^b)."""
    return tuple(2**i for i in range(a, b + 1))


@dataclass(frozen=True)
class Point:
    """One run of a reproduction: ``tags`` say what it is (series, d, ...), ``config`` is a
    configuration dict as read from TOML (validated by :func:`sgdlab.config.load_config`)."""

    tags: Mapping[str, Any]
    config: Mapping[str, Any]


@dataclass
class Outputs:
    """What a reproduction returns: the paths it wrote and the JSON summary."""

    out: Path
    files: list[Path] = field(default_factory=list)
    summary: dict = field(default_factory=dict)


def matched_config(link: str, d: int, *, seeds: int, seed: int, engine: str, width: int = 1, **train: Any) -> dict:
    """Configuration dict of a run on the target ``link`` with the matched student (activation
    ``link``, ``width`` neurons): ``train`` gives the ``[train]`` fields (``steps`` required);
    about 100 records and the escape threshold 0.5 unless given."""
    return {
        "d": d,
        "seeds": seeds,
        "seed": seed,
        "engine": engine,
        "target": {"link": link},
        "student": {"activation": link, "width": width},
        "train": {"record_every": max(1, train["steps"] // 100), "escape_threshold": 0.5, **train},
    }


RUNS_ITSELF = "the reproduction runs full and ode itself where it compares them"


def require_engine(engine: str, allowed: tuple[str, ...], why: str | None = None) -> None:
    """A reproduction's ``--engine`` check: one line naming the value and what is allowed
    (``why`` the reason when only one engine is)."""
    if engine not in allowed:
        text = " or ".join(allowed) if why is None else f"{' or '.join(repr(a) for a in allowed)} ({why})"
        raise ConfigError(f"--engine: got {engine!r}; allowed: {text}")


def description_key(desc: Mapping[str, Any]) -> str:
    """The SHA-256 of a run description (plain data) and the sgdlab version: the cache key of
    runs that are not store configurations (Python-function targets, schedules, given states)."""
    from ..store import sgdlab_version

    text = json.dumps({"run": desc, "sgdlab": sgdlab_version()}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def cached_arrays(folder: str, desc: Mapping[str, Any], store: str | Path | None,
                  execute: Callable[[Mapping[str, Any]], dict]) -> dict:
    """``execute(desc)`` (a dict of arrays), read from ``store/folder/<key>.npz`` when there and
    written there (atomically, with the description beside it as JSON) when not; ``store=None``
    computes without caching."""
    if store is None:
        return execute(desc)
    path = Path(store) / folder / (description_key(desc) + ".npz")
    if path.is_file():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    out = execute(desc)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **out)
    tmp.replace(path)
    path.with_suffix(".json").write_text(json.dumps(desc, indent=1))
    return out


def chain_vs_ode(x_chain, steps_chain, x_ode, steps_ode) -> dict:
    """A quantity on the chain (seeds x records) beside the ODE (its one trajectory): the chain's
    mean and standard error per record, the ODE interpolated at the chain's records, the largest
    |ODE - mean| / SE and |ODE - mean| from record 1 on (record 0 is the common start)."""
    x = np.asarray(x_chain, float)
    m = np.nanmean(x, 0)
    se = np.nanstd(x, 0, ddof=1) / math.sqrt(x.shape[0])
    xo = np.interp(np.asarray(steps_chain, float), np.asarray(steps_ode, float), np.asarray(x_ode, float))
    diff = np.abs(xo - m)[1:]
    return {"chain_mean": m.tolist(), "chain_se": se.tolist(), "ode": xo.tolist(),
            "max_abs_z": float(np.nanmax(diff / np.maximum(se[1:], 1e-300))), "max_abs_diff": float(np.nanmax(diff))}


def fig_chain_vs_ode(curves: Mapping[str, dict], t, *, title: str, ode_label: str = "ODE", z_in_title: bool = False):
    """One panel per quantity of :func:`chain_vs_ode` curves: the chain's mean with a 2 SE band and
    the ODE, against t = samples / d."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(4.5 * len(curves), 3.8))
    t = np.asarray(t)
    for ax, (k, c) in zip(np.atleast_1d(axes), curves.items(), strict=True):
        m, se = np.asarray(c["chain_mean"]), np.asarray(c["chain_se"])
        ax.plot(t, m, "k", label="chain mean")
        ax.fill_between(t, m - 2 * se, m + 2 * se, color="k", alpha=0.2, label="± 2 SE")
        ax.plot(t, c["ode"], color="tab:orange", ls="--", label=ode_label)
        ax.set(xlabel="samples / d", title=f"{k} (max |z| = {c['max_abs_z']:.1f})" if z_in_title else k)
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.suptitle(title)
    return fig


def cost(p: Point) -> float:
    """Seed-samples of a run at its horizon, times its student rows and sequence tokens (the
    order of execution: cheapest first, so an interrupted reproduction keeps the most runs);
    ODE runs cost next to nothing, SDE runs (whose cost grows with neither d nor the steps)
    one per path."""
    c = p.config
    if c.get("engine") == "ode":
        return 1.0
    if c.get("engine") == "sde":
        return float(c["seeds"])
    tr = c["train"]
    width = c.get("student", {}).get("width", 1)
    tokens = (c.get("sequence") or {}).get("length", 1)
    return float(c["seeds"]) * tr["steps"] * tr.get("batch", 1) * width * tokens


def default_workers_for_backend() -> int:
    """One worker process per core on CPU; runs in this process on an accelerator (several
    processes would each claim the device memory)."""
    import jax

    from ..sweep import default_workers

    return default_workers() if jax.default_backend() == "cpu" else 1


def run_points(
    points: Sequence[Point],
    *,
    store: str | Path,
    workers: int | None = None,
    progress: bool = False,
    engine: str | None = None,
    dask: str | None = None,
    order: Callable[[Point], float] | None = None,
) -> tuple[list[Result], list[dict]]:
    """Run every point not yet in ``store`` (cached ones are read back) and return the
    :class:`Result` of each point, in order, with its store index row (wall time, key, ...).
    ``order(point)`` sorts the execution (e.g. cheapest first, so an interrupted
    reproduction keeps the most runs). A failed run raises :class:`ConfigError` with the
    run's error."""
    from ..sweep import run_configs

    configs: list[Config] = [load_config(data=dict(p.config), engine=engine) for p in points]
    execution = sorted(range(len(points)), key=lambda i: order(points[i])) if order else range(len(points))
    report = run_configs(
        [configs[i] for i in execution],
        store=store,
        workers=default_workers_for_backend() if workers is None and dask is None else workers,
        dask=dask,
        progress=progress,
    )
    keys = [run_key(c) for c in configs]
    with Store(store) as st:
        rows = {r["key"]: r for r in st.query(keys=keys)}
        bad = [rows.get(k) for k in keys if (rows.get(k) or {}).get("status") == "failed" or k not in rows]
        if bad:
            first = bad[0] or {}
            raise ConfigError(f"reproduce: a run failed: {first.get('error', 'missing from the store')}")
        results = [st.result(k) for k in keys]
        computed_on = {k: computed_on_of(json.loads((st.run_dir(k) / SUMMARY).read_text())) for k in set(keys)}
    del report
    return results, [{**rows[k], "computed_on": computed_on[k]} for k in keys]


def computed_on_of(summary: Mapping[str, Any]) -> str:
    """Where a stored run was computed, from its ``summary.json``: the worker's device and jax
    version (``"gpu: NVIDIA H200, jax 0.11.2"``); runs stored before devices were recorded say
    ``"device not recorded"`` beside their jax version."""
    v = summary.get("worker_versions") or summary.get("versions") or {}
    return f"{v.get('device') or 'device not recorded'}, jax {v.get('jax') or '?'}"


def provenance(points: Sequence[Point], rows: Sequence[Mapping[str, Any]]) -> list[dict]:
    """Per point of a reproduction: its tags and where it was computed (``computed_on`` of the
    rows :func:`run_points` returns), for ``results.json``."""
    return [{**p.tags, "computed_on": r.get("computed_on")} for p, r in zip(points, rows, strict=True)]


def escape_row(result: Result, *, mask=None, seed: int = 0) -> tuple[EscapeStats, dict]:
    """Escape statistics of one run (exact every-step escape, right-censored at the run's
    last recorded step or a seed's divergence) and a flat JSON-ready row of them."""
    s = escape_from_result(result, mask=mask, seed=seed)
    row = {
        "n_seeds": s.n,
        "n_escaped": s.n_escaped,
        "fraction_escaped": s.fraction_escaped,
        "horizon_samples": s.horizon * s.batch,
        "median_samples": _finite(s.median_samples),
        "median_samples_lo": _finite(s.median_samples_ci[0]),
        "median_samples_hi": _finite(s.median_samples_ci[1]),
    }
    return s, row


def fit_row(
    ds, stats: Sequence[EscapeStats], theory: float, *, log_correction: bool = False
) -> tuple[ScalingFit | None, dict]:
    """Weighted log-log fit of median escape samples against d, with its confidence
    interval, next to the theory exponent. ``None`` (and a row saying why) when fewer than
    two points have a finite median."""
    med = [s.median_samples for s in stats]
    lo = [s.median_samples_ci[0] for s in stats]
    hi = [s.median_samples_ci[1] for s in stats]
    try:
        fit = fit_scaling(ds, med, lo, hi, log_correction=log_correction)
    except ValueError as e:
        return None, {"theory": theory, "slope": None, "error": str(e)}
    lo_ci, hi_ci = fit.ci
    return fit, {
        "theory": theory,
        "slope": fit.slope,
        "stderr": fit.stderr,
        "ci": [lo_ci, hi_ci],
        "ci_boot": None if fit.ci_boot is None else list(fit.ci_boot),
        "chi2_red": fit.chi2_red,
        "intercept": fit.intercept,
        "log_correction": log_correction,
        "n_points": fit.n,
        "theory_in_ci": bool(lo_ci <= theory <= hi_ci),
    }


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def device_description() -> str:
    import jax

    dev = jax.devices()[0]
    kind = getattr(dev, "device_kind", dev.platform)
    return f"{dev.platform}: {kind} x{len(jax.devices())}; host {platform.machine()} ({_cpu_count()} cores)"


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str, Callable[[Any], str]]]) -> str:
    """A Markdown table of ``rows``; ``columns`` = (key, header, formatter)."""
    head = "| " + " | ".join(h for _, h, _ in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(fmt(r.get(k)) for k, _, fmt in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body]) + "\n"


def fmt_g(spec: str = ".3g") -> Callable[[Any], str]:
    def f(x: Any) -> str:
        if x is None:
            return "-"
        if isinstance(x, float | np.floating):
            return "inf" if math.isinf(x) else format(float(x), spec)
        return str(x)

    return f


def write_outputs(
    out: Path, *, name: str, summary: dict, table: str, figures: Mapping[str, Any], started: float,
    points: Sequence[Mapping[str, Any]] | None = None,
) -> Outputs:
    """Write ``figures`` (name -> matplotlib figure) as PNG, ``table.md`` and
    ``results.json`` into ``out``: ``summary`` plus the wall time, ``device`` (where the runs
    were computed: the distinct ``computed_on`` of ``points``, else this process's device),
    ``runs_computed_on`` (each run's tags and ``computed_on``, from :func:`provenance`), and
    ``assembled_on`` / ``versions``: the machine and packages of the process that wrote
    these outputs (read back runs computed elsewhere, fitted, drew)."""
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    files = []
    for fname, fig in figures.items():
        path = out / fname
        fig.savefig(path, dpi=130, bbox_inches="tight")
        plt.close(fig)
        files.append(path)
    summary = {
        "reproduction": name,
        **summary,
        "wall_time_s": time.perf_counter() - started,
        "device": "; ".join(sorted({p["computed_on"] for p in points})) if points else device_description(),
        "assembled_on": device_description(),
        "versions": package_versions(),
    }
    if points:
        summary["runs_computed_on"] = list(points)
    text = json.dumps(summary, indent=2, default=_json_default) + "\n"
    _atomic_write(out / "table.md", lambda tmp: Path(tmp).write_text(table))
    _atomic_write(out / "results.json", lambda tmp: Path(tmp).write_text(text))
    files += [out / "table.md", out / "results.json"]
    return Outputs(out=out, files=files, summary=summary)


def _json_default(x: Any) -> Any:
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return _finite(float(x))
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")
