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
