"""The one result type that every engine returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Result"]


@dataclass
class Result:
    """Recorded order parameters of a run, per seed and recorded step.

    Arrays are indexed ``[seed, record, ...]``: ``M[s, k, i, j]`` is the overlap of student
    row i with teacher direction j, ``Q[s, k, i, j]`` the student Gram matrix, ``a`` the
    second layer, ``risk`` the population loss computed from the order parameters.
    ``escape_step[s]`` is the first step at which some row's normalised overlap with
    teacher direction 0 reached the threshold (-1: never, 0: already at the start);
    ``diverged_step[s]`` the step at which the seed's state stopped being finite or its
    Gram matrix stopped being positive semi-definite (-1: never). Records after a
    divergence are NaN. The ODE reports its single deterministic trajectory as seed 0.
    """

    engine: str
    d: int
    batch: int
    steps: np.ndarray  # (R,) int64
    M: np.ndarray  # (S, R, p, r)
    Q: np.ndarray  # (S, R, p, p)
    a: np.ndarray  # (S, R, p)
    risk: np.ndarray  # (S, R)
    escape_step: np.ndarray  # (S,) int64
    diverged_step: np.ndarray  # (S,) int64
    seeds: np.ndarray  # (S,) seed labels
    trained_second_layer: bool = False
    wall_time: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ds = self.diverged_step
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
        return [None if e < 0 else int(e) for e in self.escape_step]

    def diverged(self) -> list[int | None]:
        return [None if e < 0 else int(e) for e in self.diverged_step]

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
