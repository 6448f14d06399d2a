"""Overlay figures of run folders: normalised overlap and population risk against t = samples / d.

For every run folder the top panel shows the normalised overlap m = M_00 / sqrt(Q_00) of
student row 0 with teacher direction 0 and the bottom panel the population risk. Runs with
several seeds are drawn as the median over seeds with a 10-90% quantile band; a
single-seed run (the deterministic ODE) as a line. With a random start of an odd link the
sign of m is arbitrary, so |m| is shown instead.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .io import _atomic_write, read_run, trajectory_by_seed

__all__ = ["curves_of_result", "figure_of", "load_curves", "plot_runs"]


def load_curves(run_dir: str | Path) -> dict:
    """Per-seed curves of a run folder: t (records,), overlap and risk (seeds, records), label."""
    table, summary = read_run(run_dir)
    cols = trajectory_by_seed(table, ["t", "M_0_0", "Q_0_0", "risk"])
    engine = summary.get("engine", "?")
    n = int(summary.get("n_seeds", cols["t"].shape[0]))
    label = f"{engine}, d={summary.get('d', '?')}" + (f" ({n} seeds)" if n > 1 else "")
    return _curves(cols["t"][0], cols["M_0_0"] / np.sqrt(cols["Q_0_0"]), cols["risk"], label, summary)


def curves_of_result(result, label: str | None = None) -> dict:
    """The curves of :func:`load_curves` from a :class:`~sgdlab.Result` in memory."""
    n = result.n_seeds
    label = label or f"{result.engine}, d={result.d}" + (f" ({n} seeds)" if n > 1 else "")
    summary = {"config": result.config or {}}
    return _curves(np.asarray(result.t), result.overlap()[:, :, 0, 0], np.asarray(result.risk), label, summary)


def _curves(t, overlap, risk, label: str, summary: dict) -> dict:
    config = summary.get("config") or {}
    train = config.get("train") or config.get("training") or {}
    absolute = train.get("init", "random") == "random"  # "random_positive" keeps its sign
    return {
        "t": t,
        "overlap": np.abs(overlap) if absolute else overlap,
        "risk": risk,
        "label": label,
        "absolute": absolute,
        "summary": summary,
    }


def _band(ax, t, y, color, label) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN records after divergence
        if y.shape[0] == 1:
            ax.plot(t, y[0], color=color, lw=2.0, label=label)
            return
        med = np.nanmedian(y, axis=0)
        lo, hi = np.nanquantile(y, [0.1, 0.9], axis=0)
    ax.fill_between(t, lo, hi, color=color, alpha=0.25, lw=0)
    ax.plot(t, med, color=color, lw=1.8, label=f"{label}: median, 10-90%")


FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg"}

#: ``style="paper"``: a single-column figure (3.4 in wide), serif text at 8-9 pt, thin lines,
#: no top or right spines, 300 dpi for PNG.
PAPER = {
    "figure.figsize": (3.4, 4.2),
    "font.family": "serif",
    "font.size": 8,
    "axes.labelsize": 9,
    "legend.fontsize": 6.5,
    "lines.linewidth": 1.2,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "savefig.dpi": 300,
}
STYLES = ("default", "paper")


def figure_format(out: str | Path) -> str:
    """The matplotlib format of ``out`` from its extension (.png, .pdf, .svg), else ValueError."""
    fmt = FORMATS.get(Path(out).suffix.lower())
    if fmt is None:
        raise ValueError(f"--out: got {str(out)!r}; allowed: a file ending in {', '.join(FORMATS)}")
    return fmt


def save_figure(draw, out: str | Path, style: str = "default") -> Path:
    """Draw a figure with ``draw()`` in ``style`` and write it to ``out`` atomically, in the
    format of its extension; return the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    fmt = figure_format(out)
    if style not in STYLES:
        raise ValueError(f"--style: got {style!r}; allowed: {', '.join(STYLES)}")
    with plt.rc_context(PAPER if style == "paper" else {}):
        fig = draw()
        dpi = plt.rcParams["savefig.dpi"] if style == "paper" else 120
        _atomic_write(out, lambda p: fig.savefig(p, dpi=dpi, format=fmt))
    plt.close(fig)
    return out


def differing_labels(summaries: Sequence[dict]) -> list[str] | None:
    """Labels of overlaid runs by the settings that differ between them (engine, d, seeds and
    configuration fields), e.g. ``engine=full, train.lr=0.002``; ``None`` for a single run or
    runs whose settings all agree."""
    from .store import flatten

    flat = [{"engine": s.get("engine"), "d": s.get("d"), "seeds": s.get("n_seeds"),
             **flatten({k: v for k, v in (s.get("config") or {}).items() if k not in ("engine", "d", "seeds")})}
            for s in summaries]
    keys = list(dict.fromkeys(k for f in flat for k in f))
    vary = [k for k in keys if len({repr(f.get(k)) for f in flat}) > 1]
    if len(summaries) < 2 or not vary:
        return None
    return [", ".join(f"{k}={f.get(k)}" for k in vary) for f in flat]


def plot_runs(run_dirs: Sequence[str | Path], out: str | Path | None = None, *, title: str | None = None,
              style: str = "default") -> Path:
    """Overlay the run folders ``run_dirs`` in one figure, each labelled by the settings that
    differ between them; write it (default ``<first folder>/figure.png``; PNG, PDF or SVG by
    the extension; ``style`` ``"default"`` or ``"paper"``) and return its path."""
    dirs = [Path(d) for d in run_dirs]
    if not dirs:
        raise ValueError("plot: got no run folders; allowed: one or more folders written by 'sgdlab run'")
    out_path = Path(out) if out is not None else dirs[0] / "figure.png"
    figure_format(out_path)
    curves = [load_curves(d) for d in dirs]
    labels = differing_labels([c["summary"] for c in curves])
    for c, label in zip(curves, labels or [], strict=False):
        c["label"] = label
    return save_figure(lambda: figure_of(curves, title=title, style=style), out_path, style)


def figure_of(curves: Sequence[dict], *, title: str | None = None, style: str = "default"):
    """The overlay figure (overlap above, risk below) of curves from :func:`load_curves`
    (drawn with pyplot's current backend: inline in a notebook, Agg in ``sgdlab plot``);
    ``style="paper"`` takes the size of :data:`PAPER`."""
    import matplotlib.pyplot as plt

    size = PAPER["figure.figsize"] if style == "paper" else (7.0, 6.5)
    fig, (ax_m, ax_r) = plt.subplots(2, 1, figsize=size, sharex=True, constrained_layout=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, c in enumerate(curves):
        color = colors[i % len(colors)]
        _band(ax_m, c["t"], c["overlap"], color, c["label"])
        _band(ax_r, c["t"], c["risk"], color, c["label"])
    absolute = any(c["absolute"] for c in curves)
    ax_m.set_ylabel(r"$|M_{00}|/\sqrt{Q_{00}}$" if absolute else r"overlap $M_{00}/\sqrt{Q_{00}}$")
    ax_m.axhline(0.0, color="0.7", lw=0.6)
    thresholds = {((c["summary"].get("config") or {}).get("train") or {}).get("escape_threshold") for c in curves}
    thresholds.discard(None)
    for th in thresholds:
        ax_m.axhline(th, color="0.5", lw=0.8, ls=":")
    ax_m.legend(loc="best", fontsize=None if style == "paper" else 8)
    risks = np.concatenate([c["risk"].ravel() for c in curves])
    risks = risks[np.isfinite(risks)]
    if risks.size and risks.min() > 0 and risks.max() / max(risks.min(), 1e-300) > 20:
        ax_r.set_yscale("log")
    ax_r.set_ylabel("population risk")
    ax_r.set_xlabel(r"$t$ = samples / $d$")
    if title:
        ax_m.set_title(title)
    return fig
