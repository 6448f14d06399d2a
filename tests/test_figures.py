"""Reproduction figures redrawn from their committed results.json: legends hide no data point.

The figures are drawn from the numbers in ``docs/reproductions/NAME/results.json`` (no runs),
then every legend's box is compared with the display position of every data marker.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from matplotlib.collections import PathCollection

DOCS = Path(__file__).resolve().parents[1] / "docs" / "reproductions"


def hidden_points(fig) -> list[tuple[str, float, float]]:
    """Data markers (lines drawn with a marker, scatter collections) that some legend box
    covers, even in part (the box grown by the marker's radius), as (axes title, x, y); drawn
    at the 130 dpi of the written PNGs (a "best" legend place depends on it)."""
    fig.set_dpi(130)
    fig.canvas.draw()
    legends = [leg for leg in [*(ax.get_legend() for ax in fig.axes), *fig.legends] if leg is not None]
    boxes = [leg.get_window_extent() for leg in legends]
    px = fig.dpi / 72.0  # pixels per point
    out = []
    for ax in fig.axes:
        sets = [(ln.get_xydata(), ln.get_markersize() * px / 2)
                for ln in ax.get_lines() if ln.get_marker() not in (None, "None", "", " ")]
        sets += [(c.get_offsets(), np.sqrt(np.max(c.get_sizes(), initial=36.0)) * px / 2)
                 for c in ax.collections if isinstance(c, PathCollection) and len(c.get_offsets())]
        for xy, r in sets:
            xy = np.asarray(xy, dtype=float)
            xy = xy[np.isfinite(xy).all(axis=1)]
            if not len(xy):
                continue
            disp = ax.transData.transform(xy)
            for b in boxes:
                inside = ((disp[:, 0] > b.x0 - r) & (disp[:, 0] < b.x1 + r)
                          & (disp[:, 1] > b.y0 - r) & (disp[:, 1] < b.y1 + r))
                out += [(ax.get_title(), float(x), float(y)) for x, y in xy[inside]]
    return out


def test_smoothing_legends_hide_no_data():
    """The smoothing scaling figure from its committed numbers: no legend box covers a median.
    Catches the legend drawn inside the axes ("best"), which covered h3 vanilla at d = 2^10 and
    h4 smoothed at 2^6."""
    import matplotlib.pyplot as plt

    from sgdlab.reproduce.smoothing import figure

    data = json.loads((DOCS / "smoothing" / "results.json").read_text())
    fig = figure(data["series"])
    try:
        assert hidden_points(fig) == []
        assert sum(len(ax.get_lines()) for ax in fig.axes) >= 8  # points and theory lines drawn
    finally:
        plt.close(fig)


def test_ssi_positional_panel_legend_hides_no_data():
    """The "where SGD ends" panel of ssi's positional.png, from the committed numbers (the
    landscapes replaced by a small stand-in grid, which has no markers): no legend covers a
    fraction. Catches the legend inside the panel, over the omega = 0.6-0.7 points."""
    import matplotlib.pyplot as plt

    from sgdlab.reproduce.ssi import _positional_figure

    data = json.loads((DOCS / "ssi" / "results.json").read_text())
    axis = np.linspace(-1, 1, 5)
    fig = _positional_figure({0.0: np.add.outer(axis, axis) ** 2}, axis, data["positional"], data["transitions"])
    try:
        assert hidden_points(fig) == []
        assert len(fig.axes[1].get_lines()) >= 3  # the fractions and the two transitions
    finally:
        plt.close(fig)


def _committee_result(seeds: int, records: int = 4):
    from sgdlab.result import Result

    rng = np.random.default_rng(1)
    Q = np.broadcast_to(np.eye(2), (seeds, records, 2, 2)).copy()
    M = rng.uniform(size=(seeds, records, 2, 2))
    return Result(engine="chain", d=64, batch=1, steps=np.arange(records) * 8, M=M,
                  Q=Q, a=np.ones((seeds, records, 2)), risk=rng.uniform(0.1, 1, size=(seeds, records)),
                  escape_step=np.full(seeds, -1), diverged_step=np.full(seeds, -1), seeds=np.arange(seeds))


def test_batch_size_committee_figure_labels_both_curves():
    """batch-size's committee figure (two curves per M and Q panel): every panel has a y label,
    and its legend names both components for the chain and the ODE. Catches the panels without
    y labels and a legend for only the first curve."""
    import matplotlib.pyplot as plt

    from sgdlab.reproduce._common import Point
    from sgdlab.reproduce.batch_size import Committee, _committee_figure

    c = Committee(64, (("saad-solla", 1, 1 / 64),), t_end=1.0, seeds=8)
    pts = [Point({"part": "committee", "regime": "saad-solla", "engine": e}, {}) for e in ("chain", "ode")]
    fig = _committee_figure(c, pts, [_committee_result(8), _committee_result(1)])
    try:
        risk, m, q = fig.axes
        assert [ax.get_ylabel() for ax in fig.axes] == ["population risk", "M_00, M_01", "Q_00, Q_01"]
        for ax, names in ((m, ("M_00", "M_01")), (q, ("Q_00", "Q_01"))):
            texts = [t.get_text() for t in ax.get_legend().get_texts()]
            assert len(texts) == 4 and all(sum(n in t for t in texts) == 2 for n in names), texts
    finally:
        plt.close(fig)


def test_batch_size_not_learned_marker_sits_at_the_horizon():
    """A batch whose median is undefined (fewer than half the seeds escaped by the horizon) is
    drawn as a lower limit at its run's horizon, not at an arbitrary height. Catches the
    marker at 3x the largest median of the curve."""
    import matplotlib.pyplot as plt
    from matplotlib.collections import PathCollection

    from sgdlab.analysis import escape_statistics
    from sgdlab.reproduce.batch_size import QUICK, _batch_figure

    s = QUICK.series[0]
    spec = type(QUICK)(**{**QUICK.__dict__, "series": (s,)})
    d = s.ds[0]
    learned = escape_statistics([5, 6, 7, 8], 40)
    never = escape_statistics([-1, -1, -1, 9], 1234)
    fig = _batch_figure(spec, [(s, d, "square", "line", [2, 4], [learned, never])])
    try:
        marks = [c for c in fig.axes[0].collections if isinstance(c, PathCollection)]
        assert len(marks) == 1
        np.testing.assert_array_equal(marks[0].get_offsets(), [[4, 1234]])
    finally:
        plt.close(fig)
