"""The one result type that every engine returns."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Result"]


def _optional(module: str, what: str):
    """Import an optional dependency, or stop with one line saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"{what} needs {module}; install it with: pip install 'sgdlab[frames]'") from None


def _missing_as_nan(steps: Any) -> np.ndarray:
    """Per-seed step counts as float64 with NaN for "never" (engines hand -1 to the Result)."""
    e = np.asarray(steps, dtype=np.float64).reshape(-1)
    return np.where(e >= 0, e, np.nan)


@dataclass(repr=False)
class Result:
    """Recorded order parameters of a run, per seed and recorded step.

    Arrays are indexed ``[seed, record, ...]``: ``M[s, k, i, j]`` is the overlap of student
    row i with teacher direction j, ``Q[s, k, i, j]`` the student Gram matrix, ``a`` the
    second layer, ``risk`` the population loss computed from the order parameters.
    ``escape_step[s]`` is the first step at which some row's normalised overlap with
    teacher direction 0 reached the threshold (0: already at the start);
    ``diverged_step[s]`` the step at which the seed's state stopped being finite or its
    Gram matrix stopped being positive semi-definite. Both are float64 arrays with **NaN for
    "never"** (exact integers below 2^53), the same missing value as ``null`` in
    ``summary.json``, pandas and xarray; a negative value given at construction (the engines'
    -1) is read as "never". Records after a divergence are NaN. The ODE reports its single
    deterministic trajectory as seed 0. ``config`` is the resolved configuration the run was
    made from (kept by :meth:`save` and :meth:`load`).
    """

    engine: str
    d: int
    batch: int
    steps: np.ndarray  # (R,) int64
    M: np.ndarray  # (S, R, p, r)
    Q: np.ndarray  # (S, R, p, p)
    a: np.ndarray  # (S, R, p)
    risk: np.ndarray  # (S, R)
    escape_step: np.ndarray  # (S,) float64, NaN: never
    diverged_step: np.ndarray  # (S,) float64, NaN: never
    seeds: np.ndarray  # (S,) seed labels
    trained_second_layer: bool = False
    wall_time: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.escape_step = _missing_as_nan(self.escape_step)
        self.diverged_step = ds = _missing_as_nan(self.diverged_step)
        if np.any(ds >= 0):
            bad = (ds[:, None] >= 0) & (self.steps[None, :] >= ds[:, None])
            for name in ("M", "Q", "a"):
                arr = np.array(getattr(self, name), dtype=np.float64)
                arr[bad] = np.nan
                setattr(self, name, arr)
            self.risk = np.where(bad, np.nan, self.risk)

    @property
    def n_seeds(self) -> int:
        return self.M.shape[0]

    @property
    def p(self) -> int:
        return self.M.shape[2]

    @property
    def r(self) -> int:
        return self.M.shape[3]

    @property
    def samples(self) -> np.ndarray:
        return self.steps * self.batch

    @property
    def t(self) -> np.ndarray:
        """Time in units of d samples."""
        return self.samples / self.d

    def overlap(self) -> np.ndarray:
        """Normalised overlaps M_ij / sqrt(Q_ii), shape (S, R, p, r)."""
        qd = np.sqrt(np.einsum("skii->ski", self.Q))
        return self.M / qd[..., None]

    def escape(self) -> list[int | None]:
        """``escape_step`` as a list of ints, ``None`` for "never" (as in ``summary.json``)."""
        return [None if np.isnan(e) else int(e) for e in self.escape_step]

    def diverged(self) -> list[int | None]:
        """``diverged_step`` as a list of ints, ``None`` for "never" (as in ``summary.json``)."""
        return [None if np.isnan(e) else int(e) for e in self.diverged_step]

    def __repr__(self) -> str:
        steps = int(self.steps[-1]) if len(self.steps) else 0
        escaped = int(np.sum(~np.isnan(self.escape_step)))
        diverged = int(np.sum(~np.isnan(self.diverged_step)))
        return (
            f"Result(engine={self.engine!r}, d={self.d}, batch={self.batch}, seeds={self.n_seeds}, "
            f"steps={steps}, records={len(self.steps)}, width={self.p}, directions={self.r}, "
            f"escaped={escaped}/{self.n_seeds}, diverged={diverged}, wall_time={self.wall_time:.3g} s)"
        )

    def columns(self) -> dict[str, np.ndarray]:
        """One row per (seed, recorded step), in the column names of ``trajectory.parquet``."""
        S, R = self.n_seeds, len(self.steps)
        cols: dict[str, np.ndarray] = {
            "seed": np.repeat(self.seeds.astype(np.int64), R),
            "step": np.tile(self.steps.astype(np.int64), S),
        }
        cols["samples"] = cols["step"] * self.batch
        cols["t"] = cols["samples"] / self.d
        for i in range(self.p):
            for j in range(self.r):
                cols[f"M_{i}_{j}"] = self.M[:, :, i, j].reshape(-1)
        for i in range(self.p):
            for j in range(i, self.p):
                cols[f"Q_{i}_{j}"] = self.Q[:, :, i, j].reshape(-1)
        if self.trained_second_layer:
            for i in range(self.p):
                cols[f"a_{i}"] = self.a[:, :, i].reshape(-1)
        cols["risk"] = self.risk.reshape(-1)
        return cols

    def to_pandas(self):
        """The long table of ``trajectory.parquet`` as a ``pandas.DataFrame``: one row per
        (seed, recorded step), the columns of :meth:`columns` (needs pandas: ``sgdlab[frames]``)."""
        pd = _optional("pandas", "Result.to_pandas()")
        return pd.DataFrame(self.columns())

    def to_xarray(self):
        """The order parameters as an ``xarray.Dataset`` (needs xarray: ``sgdlab[frames]``).

        Variables ``M`` (seed, step, row, direction), ``Q`` (seed, step, row, row2), ``a``
        (seed, step, row), ``risk`` (seed, step), ``escape_step`` and ``diverged_step`` (seed;
        NaN: never); coordinates ``seed``, ``step``, ``samples`` and ``t`` (along step), ``row``,
        ``row2``, ``direction``; attributes ``engine``, ``d``, ``batch``, ``wall_time``.
        """
        xr = _optional("xarray", "Result.to_xarray()")
        steps = np.asarray(self.steps, dtype=np.int64)
        coords = {
            "seed": np.asarray(self.seeds, dtype=np.int64),
            "step": steps,
            "samples": ("step", steps * self.batch),
            "t": ("step", steps * self.batch / self.d),
            "row": np.arange(self.p),
            "row2": np.arange(self.p),
            "direction": np.arange(self.r),
        }
        data = {
            "M": (("seed", "step", "row", "direction"), np.asarray(self.M)),
            "Q": (("seed", "step", "row", "row2"), np.asarray(self.Q)),
            "a": (("seed", "step", "row"), np.asarray(self.a)),
            "risk": (("seed", "step"), np.asarray(self.risk)),
            "escape_step": (("seed",), self.escape_step),
            "diverged_step": (("seed",), self.diverged_step),
        }
        attrs = {"engine": self.engine, "d": int(self.d), "batch": int(self.batch), "wall_time": float(self.wall_time)}
        return xr.Dataset(data, coords=coords, attrs=attrs)

    def save(self, path: str | Path, **extra: Any) -> Path:
        """Write the run folder ``path`` (``trajectory.parquet`` and ``summary.json``, as
        ``sgdlab run`` does), with :attr:`config` as its resolved configuration."""
        from .io import write_run

        return write_run(self, self.config, path, **extra)

    @classmethod
    def load(cls, path: str | Path) -> Result:
        """Read a run folder written by :meth:`save`, ``sgdlab run`` or the results store."""
        from .io import read_result

        return read_result(path)

    def plot(self, out: str | Path | None = None, *, label: str | None = None, title: str | None = None):
        """Overlap and population risk against t = samples / d (median and 10-90% band over
        seeds), as ``sgdlab plot`` draws a run folder; returns the matplotlib ``Figure`` and
        also writes it to ``out`` when given (format from its extension)."""
        from .plot import curves_of_result, figure_of

        fig = figure_of([curves_of_result(self, label)], title=title)
        if out is not None:
            fig.savefig(out, dpi=120)
        return fig
