"""Parameter sweeps: the cartesian product of grids over a base configuration, run into a store.

>>> from sgdlab.sweep import sweep
>>> table = sweep({"d": 200, "seeds": 64, "train": {"steps": 800, "spherical": True, "init": 0.2}},
...               {"train.lr": [0.002, 0.004], "train.batch": [64, 128]}, engine="chain", store="results")

Every grid point is validated before any run starts. Runs already in the store (same key:
see :func:`sgdlab.store.run_key`) are not computed again, so a sweep that was stopped, at
any moment, continues where it stopped when started again. Runs are the unit of
distribution: the seeds of one run are vmapped on one worker; runs go to local worker
processes (``workers``, 'spawn' start method) or to a Dask cluster (``dask="tcp://..."``).
Workers only compute; the calling process writes every run into the store.

A run that raises is recorded as ``failed`` with its error; a run in which some seed
diverged is recorded as ``diverged``. Neither stops the sweep. Failed runs are computed
again with ``retry_failed=True``; diverged runs are not, since a run is deterministic
given its key and would diverge again.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from . import _interrupt as interrupt
from .config import (
    Config,
    ConfigError,
    _deepcopy,
    _one_line,
    apply_override,
    build,
    load_config,
    parse_override,
)
from .store import Store, rows_to_table, run_key, sgdlab_version

__all__ = ["SweepReport", "expand_grid", "parse_grid", "plot_query", "run_configs", "run_sweep", "sweep"]


# --------------------------------------------------------------------------------------
# Grids
# --------------------------------------------------------------------------------------


_STOPPED = "sweep stopped"


def _split_top(text: str) -> list[str]:
    """Split at commas outside brackets and quotes: ``[1,2],[3]`` -> ``["[1,2]", "[3]"]``."""
    items, depth, quote, cur = [], 0, "", []
    for ch in text:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = ""
            continue
        if ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    items.append("".join(cur).strip())
    return items


def parse_grid(items: Iterable[str]) -> dict[str, list[Any]]:
    """Parse ``--grid dotted.key=v1,v2,...`` options into ``{dotted.key: [values]}``.

    Values are read like ``--set`` values (TOML numbers, true/false, "text", [lists]; bare
    words such as ``h3`` as text); commas inside brackets belong to a list value.
    """
    grid: dict[str, list[Any]] = {}
    for text in items:
        if "=" not in text:
            raise ConfigError(f"--grid: got {text!r}; allowed: dotted.key=v1,v2,... e.g. train.lr=0.001,0.01")
        key, raw = (s.strip() for s in text.split("=", 1))
        if key in grid:
            raise ConfigError(f"--grid: got {key!r} twice; allowed: each key in one --grid with all its values")
        values = _split_top(raw)
        if raw == "" or any(v == "" for v in values):
            raise ConfigError(
                f"--grid: got {text!r} (an empty value); allowed: dotted.key=v1,v2,... with no empty value"
            )
        parsed = []
        for v in values:
            parts, value = parse_override(f"{key}={v}")
            parsed.append(value)
        grid[".".join(parts)] = parsed
    return grid


def expand_grid(
    base: Config | Mapping[str, Any],
    grid: Mapping[str, Sequence[Any]] | None = None,
    *,
    engine: str | None = None,
    seeds: int | None = None,
) -> list[Config]:
    """The validated configurations of the cartesian product of ``grid`` over ``base``
    (the last key varies fastest), duplicates removed. Raises :class:`ConfigError` for the
    first invalid grid point, before anything runs."""
    data = base.to_dict() if isinstance(base, Config) else _deepcopy(dict(base))
    grid = dict(grid or {})
    keys = list(grid)
    for k in keys:
        vals = grid[k]
        if isinstance(vals, str | bytes) or not isinstance(vals, Sequence):
            raise ConfigError(f"grid: {k}: got {vals!r}; allowed: a list of values")
        if len(vals) == 0:
            raise ConfigError(f"grid: {k}: got no values; allowed: a non-empty list of values")
    out: list[Config] = []
    seen: set[str] = set()
    for combo in itertools.product(*(grid[k] for k in keys)):
        point = _deepcopy(data)
        for k, v in zip(keys, combo, strict=True):
            if not isinstance(k, str) or not k:
                raise ConfigError(f"grid: got key {k!r}; allowed: a dotted key such as train.lr")
            apply_override(point, k.split("."), _deepcopy(v))
        cfg = load_config(data=point, engine=engine, seeds=seeds)
        key = run_key(cfg)
        if key not in seen:
            seen.add(key)
            out.append(cfg)
    return out


# --------------------------------------------------------------------------------------
# Computing one run (in a worker)
# --------------------------------------------------------------------------------------


def compute(config: Mapping[str, Any]) -> dict[str, Any]:
    """Run one resolved configuration; never raises. Returns ``{"result": Result, "versions":
    {package: version}}`` (the worker's packages) or
    ``{"error": "Type: message", "wall_time": seconds}``. This is what a worker executes."""
    t0 = time.perf_counter()
    try:
        from . import run as run_sgd
        from .config import validate_config
        from .io import package_versions

        cfg = validate_config(config)
        built = build(cfg, engine=True)
        result = run_sgd(
            built.problem, built.student, built.training, engine=built.engine, seeds=cfg.seeds, seed=cfg.seed
        )
        return {"result": result, "versions": package_versions()}
    except Exception as e:  # noqa: BLE001 - every failure is recorded, none stops the sweep
        tb = traceback.extract_tb(e.__traceback__)
        where = f" (at {Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
        return {"error": _one_line(f"{type(e).__name__}: {e}{where}"), "wall_time": time.perf_counter() - t0}


def _worker_init() -> None:
    # Several worker processes may share one accelerator: allocate on demand.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    # Ctrl-C reaches the whole process group: the parent stops the workers (no tracebacks)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from ._cache import enable_compilation_cache

    enable_compilation_cache()


# --------------------------------------------------------------------------------------
# Running a sweep
# --------------------------------------------------------------------------------------


@dataclass
class SweepReport:
    """What a sweep did: ``total`` runs, ``cached`` (already in the store), ``computed``,
    and over all its runs how many are ``failed`` and ``diverged``; ``table`` has one row
    per run (grid order) with the store's index columns and ``cached``."""

    store: Path
    keys: list[str]
    total: int = 0
    cached: int = 0
    computed: int = 0
    failed: int = 0
    diverged: int = 0
    wall_time: float = 0.0
    table: pa.Table = field(default_factory=lambda: pa.table({}))


class _Bar:
    """One rich progress bar on stderr for the whole sweep (shown on a terminal)."""

    def __init__(self, total: int, cached: int, enabled: bool) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.enabled = enabled and self.console.is_terminal
        self.progress = None
        self.cached, self.failed = cached, 0
        if not self.enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("sweep"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("runs ({task.fields[cached]} cached, {task.fields[failed]} failed), ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task("sweep", total=total, completed=cached, cached=cached, failed=0)

    def advance(self, failed: bool) -> None:
        self.failed += int(failed)
        if self.progress is not None:
            self.progress.update(self.task, advance=1, failed=self.failed)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def default_workers() -> int:
    """Local worker processes of a sweep (and of a reproduction on CPU) when none is asked for:
    ``$SGDLAB_WORKERS`` if set (a positive integer; e.g. 1 where other jobs share the cores:
    every worker compiles the programs of its own runs, so on a busy machine more workers
    repeat compilations instead of adding speed), else the number of CPUs."""
    raw = os.environ.get("SGDLAB_WORKERS", "").strip()
    if raw:
        try:
            n = int(raw)
        except ValueError:
            n = 0
        if n < 1:
            raise ConfigError(f"SGDLAB_WORKERS: got {raw!r}; allowed: a positive integer (or unset: the CPU count)")
        return n
    return max(1, os.cpu_count() or 1)


def _iter_local(configs: list[dict], workers: int) -> Iterable[tuple[int, dict]]:
    """(index, outcome) as runs finish, on ``workers`` spawned processes (or in this
    process when ``workers`` is 1)."""
    if workers <= 1:
        for i, c in enumerate(configs):
            yield i, compute(c)
        return
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    ex = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"), initializer=_worker_init)
    finished = False
    try:
        futures = {ex.submit(compute, c): i for i, c in enumerate(configs)}
        pending = set(futures)
        while pending:
            interrupt.check(_STOPPED)
            done, pending = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
            for f in done:
                try:
                    out = f.result()
                except Exception as e:  # noqa: BLE001 - e.g. a worker process that died
                    time.sleep(0.25)  # killed by the signal that also reaches this process?
                    interrupt.check(_STOPPED)
                    out = {"error": _one_line(f"{type(e).__name__}: {e}")}
                yield futures[f], out
        finished = True
    finally:
        # interrupted: drop the queued runs and stop the running ones (they are not stored)
        if not finished:
            for proc in list(getattr(ex, "_processes", {}).values()):
                proc.terminate()
        ex.shutdown(wait=finished, cancel_futures=True)


def _iter_dask(configs: list[dict], address: str) -> Iterable[tuple[int, dict]]:
    """(index, outcome) as runs finish on the Dask cluster whose scheduler is at ``address``."""
    try:
        from distributed import Client, as_completed
    except ImportError:  # pragma: no cover - a declared dependency
        raise ConfigError(
            "--dask: got an address but dask.distributed is not installed; allowed: pip install 'dask[distributed]'"
        ) from None
    try:
        client = Client(address, timeout="30s", set_as_default=False)
    except (OSError, TimeoutError, ValueError) as e:
        raise ConfigError(
            _one_line(f"--dask: got {address!r} ({e}); allowed: the address of a running dask scheduler")
        ) from None
    try:
        futures = {client.submit(compute, c, pure=False): i for i, c in enumerate(configs)}
        for f in as_completed(list(futures), loop=client.loop):
            try:
                out = f.result()
            except Exception as e:  # noqa: BLE001 - a worker lost, a task killed
                out = {"error": _one_line(f"{type(e).__name__}: {e}")}
            i = futures.pop(f)
            f.release()
            interrupt.check(_STOPPED)
            yield i, out
    finally:
        for f in futures:
            f.cancel()
        client.close()


def run_sweep(
    base: Config | Mapping[str, Any],
    grid: Mapping[str, Sequence[Any]] | None = None,
    *,
    engine: str | None = None,
    seeds: int | None = None,
    store: Store | str | Path = "results",
    workers: int | None = None,
    dask: str | None = None,
    retry_failed: bool = False,
    progress: bool = False,
    on_start: Callable[[SweepReport], None] | None = None,
) -> SweepReport:
    """Run the sweep ``grid`` over ``base`` into ``store``; see :func:`sweep`. Returns a
    :class:`SweepReport`. ``on_start(report)`` is called once the cached runs are known."""
    configs = expand_grid(base, grid, engine=engine, seeds=seeds)
    return run_configs(
        configs, store=store, workers=workers, dask=dask, retry_failed=retry_failed, progress=progress,
        on_start=on_start,
    )


def run_configs(
    configs: Sequence[Config],
    *,
    store: Store | str | Path = "results",
    workers: int | None = None,
    dask: str | None = None,
    retry_failed: bool = False,
    progress: bool = False,
    on_start: Callable[[SweepReport], None] | None = None,
) -> SweepReport:
    """Run a list of validated configurations (any mix, not only a grid) into ``store``,
    computing only those not yet there; the engine of :func:`run_sweep`."""
    t0 = time.perf_counter()
    unique: dict[str, Config] = {}
    for c in configs:
        unique.setdefault(run_key(c), c)
    configs = list(unique.values())
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ConfigError(f"--workers: got {workers!r}; allowed: a positive integer")
    st = store if isinstance(store, Store) else Store(store)
    try:
        keys = [run_key(c) for c in configs]
        done = st.finished(keys, retry_failed=retry_failed)
        todo = [i for i, k in enumerate(keys) if k not in done]
        report = SweepReport(store=st.root, keys=keys, total=len(keys), cached=len(keys) - len(todo))
        if on_start is not None:
            on_start(report)
        bar = _Bar(report.total, report.cached, progress)
        try:
            payload = [configs[i].to_dict() for i in todo]
            mine = sgdlab_version()
            if dask:
                outcomes = _iter_dask(payload, dask)
            else:
                n = workers if workers is not None else default_workers()
                outcomes = _iter_local(payload, min(n, max(1, len(todo))))
            for j, out in outcomes:
                interrupt.check(_STOPPED)
                i = todo[j]
                theirs = (out.get("versions") or {}).get("sgdlab", mine)
                if "result" in out and theirs != mine:
                    out = {"error": f"VersionMismatch: the worker runs sgdlab {theirs}, this process sgdlab {mine}"}
                if "result" in out:
                    st.put(keys[i], configs[i], out["result"], worker_versions=out.get("versions"))
                else:
                    st.put_failed(keys[i], configs[i], out["error"], out.get("wall_time"))
                report.computed += 1
                bar.advance("result" not in out)
        except interrupt.Interrupted as e:
            e.args = (f"sweep stopped: {report.computed} of {len(todo)} runs computed and stored, "
                      f"{report.cached} cached; run it again to resume",)
            raise
        finally:
            bar.close()
        rows = {r["key"]: r for r in st.query(keys=keys)}
        table_rows = []
        for k in keys:
            r = dict(rows.get(k) or {"key": k, "status": "missing"})
            r["cached"] = k in done
            table_rows.append(r)
        report.failed = sum(r["status"] == "failed" for r in table_rows)
        report.diverged = sum(r["status"] == "diverged" for r in table_rows)
        report.table = rows_to_table(table_rows)
        report.wall_time = time.perf_counter() - t0
        return report
    finally:
        if not isinstance(store, Store):
            st.close()


def sweep(
    base: Config | Mapping[str, Any],
    grid: Mapping[str, Sequence[Any]] | None = None,
    *,
    engine: str | None = None,
    seeds: int | None = None,
    store: Store | str | Path = "results",
    workers: int | None = None,
    dask: str | None = None,
    retry_failed: bool = False,
    progress: bool = False,
) -> pa.Table:
    """Run every point of the cartesian product of ``grid`` over ``base`` that is not yet
    in ``store``; return a ``pyarrow.Table`` with one row per grid point.

    ``base`` is a configuration dict (as read from TOML) or a validated :class:`Config`;
    ``grid`` maps dotted keys to lists of values, e.g. ``{"train.lr": [1e-3, 1e-2]}``;
    ``engine`` and ``seeds`` override the base. Runs go to ``workers`` local processes
    (default: one per core; 1 runs them in this process) or, with ``dask`` a scheduler
    address, to a Dask cluster. Columns: ``key``, ``status``, the configuration fields by
    dotted name, ``n_seeds``, ``frac_escaped``, ``median_escape_step``, ``n_diverged``,
    ``wall_time``, ``created_at``, ``error``, ``version``, ``path`` and ``cached``. Load a
    run with :func:`sgdlab.store.load_result` or :func:`sgdlab.store.load_trajectory`.
    """
    return run_sweep(
        base,
        grid,
        engine=engine,
        seeds=seeds,
        store=store,
        workers=workers,
        dask=dask,
        retry_failed=retry_failed,
        progress=progress,
    ).table


# --------------------------------------------------------------------------------------
# Figures of store queries
# --------------------------------------------------------------------------------------


def varying_columns(rows: list[dict], candidates: Iterable[str] | None = None) -> list[str]:
    """Configuration columns whose value differs between ``rows``."""
    from .store import META_COLUMNS

    skip = set(META_COLUMNS) | {"path", "cached"}
    names = list(candidates) if candidates is not None else [k for k in (rows[0] if rows else {}) if k not in skip]
    out = []
    for n in names:
        vals = {repr(r.get(n)) for r in rows}
        if len(vals) > 1:
            out.append(n)
    return out


def plot_query(store: Store | str | Path, where: Iterable[str] = (), out: str | Path | None = None, *,
               style: str = "default") -> tuple[Path, int]:
    """Overlay the finished runs of ``store`` matching ``where`` (labelled by the
    configuration fields that differ between them); return (the figure's path: PNG, PDF or
    SVG by its extension, and the number of runs)."""
    from .plot import figure_format, figure_of, load_curves, save_figure

    st = store if isinstance(store, Store) else Store(store, readonly=True)
    try:
        rows = [r for r in st.query(list(where)) if r["status"] != "failed"]
    finally:
        if not isinstance(store, Store):
            st.close()
    where = list(where)
    if not rows:
        raise ConfigError(
            f"--where: got {' '.join(where) or 'no condition'}; "
            f"allowed: a query matching finished runs in {str(st.root)!r}"
        )
    vary = varying_columns(rows)
    out_path = Path(out) if out is not None else st.root / "figure.png"
    figure_format(out_path)
    curves = [load_curves(r["path"]) for r in rows]
    for r, c in zip(rows, curves, strict=True):
        c["label"] = ", ".join(f"{k}={r[k]}" for k in vary) or c["label"]
    fixed = {k: rows[0][k] for k in ("engine", "d") if k not in vary}
    title = ", ".join(f"{k}={v}" for k, v in fixed.items()) + (f" ({'; '.join(where)})" if where else "")
    return save_figure(lambda: figure_of(curves, title=title, style=style), out_path, style), len(rows)
