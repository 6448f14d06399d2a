"""Run folders on disk: ``trajectory.parquet`` and ``summary.json``.

``trajectory.parquet`` holds one row per (seed, recorded step) with exactly the columns of
:meth:`sgdlab.Result.columns`: ``seed``, ``step``, ``samples`` (= step * batch), ``t``
(= samples / d), ``M_i_j`` (overlap of student row i with teacher direction j),
``Q_i_j`` for i <= j (student Gram matrix), ``a_i`` when the second layer is trained, and
``risk`` (population loss from the order parameters).

``summary.json`` holds the resolved configuration, the engine, package versions, the wall
time, per-seed escape and divergence steps (``null``: never) and the number of seeds.
Both files are written atomically (a temporary file in the same folder, then
``os.replace``), so a reader never sees a half-written file.
"""

from __future__ import annotations

import json
import math
import os
import platform
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .result import Result

__all__ = ["TRAJECTORY", "SUMMARY", "package_versions", "read_run", "summarise", "trajectory_by_seed", "write_run"]

TRAJECTORY = "trajectory.parquet"
SUMMARY = "summary.json"


def device_name() -> str:
    """The device JAX computes on in this process, e.g. ``"cpu: cpu"`` or ``"gpu: NVIDIA H200"``."""
    import jax

    dev = jax.devices()[0]
    return f"{dev.platform}: {getattr(dev, 'device_kind', dev.platform)}"


def package_versions() -> dict[str, str | None]:
    """Versions of the packages a run depends on (``None`` when not installed), and under
    ``"device"`` the device JAX computes on in this process (:func:`device_name`)."""
    from . import __version__

    out: dict[str, str | None] = {"sgdlab": __version__}  # also when run from a source tree
    for name in ("jax", "jaxlib", "numpy", "diffrax"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    out["python"] = platform.python_version()
    out["device"] = device_name()
    return out


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _jsonable(x: Any) -> Any:
    """Plain JSON data: numpy scalars and arrays converted, non-finite floats as null."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.bool_ | bool):
        return bool(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating | float):
        v = float(x)
        return v if math.isfinite(v) else None
    if x is None or isinstance(x, int | str):
        return x
    return repr(x)


def summarise(result: Result, config: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """The ``summary.json`` content of a result."""
    escape = result.escape()
    diverged = result.diverged()
    overlap = result.overlap()[:, -1, 0, 0] if result.M.shape[1] else np.array([])
    summary: dict[str, Any] = {
        "engine": result.engine,
        "d": int(result.d),
        "batch": int(result.batch),
        "steps": int(result.steps[-1]) if len(result.steps) else 0,
        "n_records": int(len(result.steps)),
        "n_seeds": int(result.n_seeds),
        "wall_time": float(result.wall_time),
        "escape_step": escape,
        "n_escaped": int(sum(e is not None for e in escape)),
        "diverged": diverged,
        "n_diverged": int(sum(e is not None for e in diverged)),
        "final_overlap": overlap,
        "columns": list(result.columns()),
        "config": config,
        "versions": package_versions(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if result.info:
        summary["info"] = result.info
    summary.update(extra)
    return _jsonable(summary)


def write_run(result: Result, config: dict[str, Any] | None, out_dir: str | Path, **extra: Any) -> Path:
    """Write ``trajectory.parquet`` and ``summary.json`` of ``result`` into ``out_dir``.

    ``config`` is the resolved configuration (stored under ``"config"``); ``extra`` keys are
    added to the summary. Returns the folder.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = pa.table({k: np.asarray(v) for k, v in result.columns().items()})
    _atomic_write(out / TRAJECTORY, lambda p: pq.write_table(table, p))
    text = json.dumps(summarise(result, config, **extra), indent=2, allow_nan=False) + "\n"
    _atomic_write(out / SUMMARY, lambda p: Path(p).write_text(text))
    return out


def read_run(run_dir: str | Path) -> tuple[pa.Table, dict[str, Any]]:
    """Read a run folder: (the trajectory as a ``pyarrow.Table``, the summary dict)."""
    d = Path(run_dir)
    traj, summ = d / TRAJECTORY, d / SUMMARY
    for f in (traj, summ):
        if not f.is_file():
            raise FileNotFoundError(f"run: got {str(d)!r} without {f.name}; allowed: a folder written by 'sgdlab run'")
    return pq.read_table(traj), json.loads(summ.read_text())


def trajectory_by_seed(table: pa.Table, columns: list[str]) -> dict[str, np.ndarray]:
    """Columns as arrays of shape (seeds, records), plus ``seed`` (seeds,) and ``step`` (records,).

    Rows are grouped by ``seed`` and sorted by ``step``; every seed has the same records.
    """
    seed = table.column("seed").to_numpy()
    step = table.column("step").to_numpy()
    order = np.lexsort((step, seed))
    seeds = np.unique(seed)
    S = len(seeds)
    R = len(seed) // S if S else 0
    out: dict[str, np.ndarray] = {"seed": seeds, "step": step[order][:R]}
    for c in columns:
        out[c] = np.asarray(table.column(c).to_numpy(zero_copy_only=False), dtype=np.float64)[order].reshape(S, R)
    return out


def read_result(run_dir: str | Path) -> Result:
    """Rebuild the :class:`~sgdlab.Result` written to ``run_dir`` by :func:`write_run`."""
    table, summary = read_run(run_dir)
    names = table.column_names
    p = 1 + max(int(n.split("_")[1]) for n in names if n.startswith("M_"))
    r = 1 + max(int(n.split("_")[2]) for n in names if n.startswith("M_"))
    trained = "a_0" in names
    cols = [f"M_{i}_{j}" for i in range(p) for j in range(r)]
    cols += [f"Q_{i}_{j}" for i in range(p) for j in range(i, p)]
    cols += [f"a_{i}" for i in range(p)] if trained else []
    by = trajectory_by_seed(table, [*cols, "risk"])
    S, R = by["risk"].shape
    M = np.zeros((S, R, p, r))
    Q = np.zeros((S, R, p, p))
    for i in range(p):
        for j in range(r):
            M[:, :, i, j] = by[f"M_{i}_{j}"]
        for j in range(i, p):
            Q[:, :, i, j] = Q[:, :, j, i] = by[f"Q_{i}_{j}"]
    if trained:
        a = np.stack([by[f"a_{i}"] for i in range(p)], axis=-1)
    else:
        a0 = ((summary.get("config") or {}).get("student") or {}).get("a0", 1.0)
        a = np.broadcast_to(np.asarray(a0, dtype=np.float64), (S, R, p)).copy()

    def steps_of(values: list) -> np.ndarray:
        return np.array([-1 if v is None else int(v) for v in values], dtype=np.int64)

    return Result(
        engine=summary.get("engine", "?"),
        d=int(summary["d"]),
        batch=int(summary["batch"]),
        steps=by["step"].astype(np.int64),
        M=M,
        Q=Q,
        a=a,
        risk=by["risk"],
        escape_step=steps_of(summary.get("escape_step") or [None] * S),
        diverged_step=steps_of(summary.get("diverged") or [None] * S),
        seeds=by["seed"].astype(np.int64),
        trained_second_layer=trained,
        wall_time=float(summary.get("wall_time") or 0.0),
        info=summary.get("info") or {},
        config=summary.get("config"),
    )
