"""A results store: one folder per run, keyed by a content hash, and a queryable SQLite index.

Layout of a store folder ``STORE`` (default ``results/``)::

    STORE/
      index.sqlite                  one row per run (plus index.sqlite-wal / -shm while open)
      runs/<key>/trajectory.parquet the run's order parameters (see :mod:`sgdlab.io`)
      runs/<key>/summary.json       configuration, versions, escape and divergence statistics
      tmp/                          run folders being written; stale ones are removed on open

``<key>`` is the SHA-256 of the canonical JSON (sorted keys, no spaces) of the resolved
configuration, the engine, the sgdlab version and the seed range ``[seed, seed + seeds)``
(:func:`run_key`): the same run always gets the same key, and a run that is in the index
never needs to be computed again.

A run is written into a fresh folder under ``tmp/``, moved into ``runs/`` with one
``os.rename`` and only then given its index row, in one SQLite transaction. The index row
is what marks a run as finished: a reader that selects rows never sees a half-written run,
and a writer killed at any moment leaves either nothing, a temporary folder (removed the
next time the store is opened) or a complete folder without a row (adopted the next time
the store is opened, since its content is final).

The table ``runs`` of ``index.sqlite`` has the columns ``key``, ``status`` (``done``,
``diverged`` or ``failed``), ``n_seeds``, ``frac_escaped``, ``median_escape_step``
(the Kaplan-Meier median over seeds, censored at ``horizon``, the last step run, or at a
seed's divergence; NULL when fewer than half escaped), ``horizon``, ``n_diverged``,
``wall_time``, ``created_at``, ``error`` (failed runs), ``version``, ``config`` (the
resolved configuration as JSON) and one column per configuration field under its dotted
name (``"train.lr"``, ``"student.width"``, ...; lists as JSON text, booleans as 0/1).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from .config import Config, ConfigError
from .io import SUMMARY, TRAJECTORY, read_result, read_run, write_run
from .result import Result

__all__ = [
    "META_COLUMNS",
    "Store",
    "canonical_json",
    "flatten",
    "load_result",
    "load_trajectory",
    "parse_where",
    "run_key",
    "sgdlab_version",
]

INDEX = "index.sqlite"
RUNS = "runs"
TMP = "tmp"
SCHEMA_VERSION = 1

#: Index columns that are not configuration fields, in display order.
META_COLUMNS = (
    "key",
    "status",
    "n_seeds",
    "frac_escaped",
    "median_escape_step",
    "horizon",
    "n_diverged",
    "wall_time",
    "created_at",
    "error",
    "version",
    "config",
)
_META_TYPES = {
    "key": "TEXT PRIMARY KEY",
    "status": "TEXT NOT NULL",
    "n_seeds": "INTEGER",
    "frac_escaped": "REAL",
    "median_escape_step": "REAL",
    "horizon": "INTEGER",
    "n_diverged": "INTEGER",
    "wall_time": "REAL",
    "created_at": "TEXT",
    "error": "TEXT",
    "version": "TEXT",
    "config": "TEXT NOT NULL",
}
STATUSES = ("done", "diverged", "failed")

#: Temporary folders older than this (seconds) are stale whoever made them.
STALE_AGE = 24 * 3600


# --------------------------------------------------------------------------------------
# Keys and flattening
# --------------------------------------------------------------------------------------


def sgdlab_version() -> str:
    from . import __version__

    return __version__


def canonical_json(data: Any) -> str:
    """JSON with sorted keys and no whitespace: equal data give equal text."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _config_dict(config: Config | Mapping[str, Any]) -> dict[str, Any]:
    return config.to_dict() if isinstance(config, Config) else json.loads(json.dumps(dict(config)))


def run_key(config: Config | Mapping[str, Any], version: str | None = None) -> str:
    """The store key of a resolved configuration: sha256 of the canonical JSON of the
    configuration, its engine, the sgdlab version and the seed range."""
    cfg = _config_dict(config)
    seed, seeds = int(cfg.get("seed", 0)), int(cfg.get("seeds", 1))
    material = {
        "config": cfg,
        "engine": cfg.get("engine"),
        "sgdlab": sgdlab_version() if version is None else version,
        "seed_range": [seed, seed + seeds],
    }
    return hashlib.sha256(canonical_json(material).encode()).hexdigest()


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested tables as one level with dotted names: ``{"train": {"lr": 0.1}}`` -> ``{"train.lr": 0.1}``."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, name + "."))
        else:
            out[name] = v
    return out


def _sql_value(v: Any) -> Any:
    """A configuration value as stored in an index column."""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, list | tuple | dict):
        return json.dumps(v)
    return v


def _config_columns() -> list[str]:
    """Every configuration field, the ``[sequence]`` table's included (NULL for other runs)."""
    from .config import SequenceConfig

    return list(flatten(Config(d=1, sequence=SequenceConfig()).to_dict()))


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# --------------------------------------------------------------------------------------
# Queries
# --------------------------------------------------------------------------------------

_WHERE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(==|!=|<=|>=|=|<|>)\s*(.*?)\s*$")


def parse_where(text: str) -> tuple[str, str, Any]:
    """Parse ``column=value`` (also ``!=``, ``<``, ``<=``, ``>``, ``>=``); the value is read
    like a ``--set`` value (TOML number, true/false, text, list; bare words as text)."""
    from .config import parse_override

    m = _WHERE.match(text)
    if m is None or m.group(3) == "":
        raise ConfigError(f"--where: got {text!r}; allowed: column=value (or !=, <, <=, >, >=), e.g. train.lr=0.01")
    name, op, raw = m.groups()
    op = "=" if op == "==" else op
    if name in ("key", "status", "error", "created_at", "version"):
        value: Any = raw.strip("\"'")
    else:
        _, value = parse_override(f"{name}={raw}")
    return name, op, value


# --------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------


def host_tag() -> str:
    """This machine's name as used in temporary folder names (no dots)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def km_median_escape(escape: Iterable[Any], horizon: int, diverged: Iterable[Any] | None = None) -> float:
    """Kaplan-Meier median escape step of a run's seeds (``None`` / NaN: did not escape, censored
    at ``horizon`` or at its divergence step); ``inf`` when fewer than half escaped."""
    from .analysis import km_median

    def step(v: Any) -> float | None:
        return None if v is None or (isinstance(v, float) and not np.isfinite(v)) or v < 0 else float(v)

    esc = [step(e) for e in escape]
    div = [step(v) for v in diverged] if diverged is not None else [None] * len(esc)
    if not esc:
        return float("inf")
    times = [e if e is not None else min(horizon, v if v is not None else horizon)
             for e, v in zip(esc, div, strict=True)]
    return km_median(times, [e is not None for e in esc])


def _escape_stats(summary: Mapping[str, Any]) -> dict[str, Any]:
    n = int(summary.get("n_seeds") or 0)
    escape = summary.get("escape_step") or []
    hit = [e for e in escape if e is not None]
    horizon = int(summary.get("steps") or 0)
    median = km_median_escape(escape, horizon, summary.get("diverged")) if n else float("inf")
    return {
        "n_seeds": n,
        "frac_escaped": (len(hit) / n) if n else None,
        "median_escape_step": median if np.isfinite(median) else None,  # None: fewer than half escaped
        "horizon": horizon,
        "n_diverged": int(summary.get("n_diverged") or 0),
    }


class Store:
    """A results store folder (created on first use). See the module documentation for the layout.

    Opening a store removes stale temporary folders (left by a killed writer on this host,
    or older than a day) and adopts complete run folders that lack an index row.
    """

    def __init__(self, root: str | Path = "results", *, readonly: bool = False) -> None:
        self.root = Path(root)
        self.readonly = readonly
        if readonly:
            if not (self.root / INDEX).is_file():
                raise ConfigError(f"--store: got {str(self.root)!r}; allowed: a results store (a folder with {INDEX})")
        else:
            try:
                (self.root / RUNS).mkdir(parents=True, exist_ok=True)
                (self.root / TMP).mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise ConfigError(
                    f"--store: got {str(self.root)!r} ({e.strerror}); allowed: a writable folder"
                ) from None
        self._con = self._connect()
        if not readonly:
            self._init_schema()
            self.clean_tmp()
            self.adopt_orphans()

    # ---- connection and schema ----

    @property
    def index_path(self) -> Path:
        return self.root / INDEX

    def _connect(self) -> sqlite3.Connection:
        if self.readonly:
            uri = f"file:{self.index_path.resolve()}?mode=ro"
            con = sqlite3.connect(uri, uri=True, timeout=60.0, isolation_level=None)
        else:
            con = sqlite3.connect(str(self.index_path), timeout=60.0, isolation_level=None)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
        con.execute("PRAGMA busy_timeout=60000")
        return con

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _init_schema(self) -> None:
        con = self._con
        con.execute("BEGIN IMMEDIATE")
        try:
            cols = [f"{_quote(c)} {_META_TYPES[c]}" for c in META_COLUMNS]
            cols += [_quote(c) for c in _config_columns()]  # no declared type: values kept as given
            con.execute(f"CREATE TABLE IF NOT EXISTS runs ({', '.join(cols)})")
            con.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT)")
            con.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            have = {r[1] for r in con.execute("PRAGMA table_info(runs)")}
            for c in META_COLUMNS:
                if c not in have:  # a store from before the column: filled in below
                    con.execute(f"ALTER TABLE runs ADD COLUMN {_quote(c)} {_META_TYPES[c].replace(' NOT NULL', '')}")
            for c in _config_columns():
                if c not in have:  # a configuration field added since the store was made
                    con.execute(f"ALTER TABLE runs ADD COLUMN {_quote(c)}")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        if "horizon" not in have:
            self._recompute_escape_stats()

    def _recompute_escape_stats(self) -> None:
        """Escape columns of a store written before the Kaplan-Meier median: read back from
        each finished run's summary.json."""
        for (key,) in self._con.execute("SELECT key FROM runs WHERE status != 'failed'").fetchall():
            try:
                _, summary = read_run(self.run_dir(key))
            except (FileNotFoundError, ValueError, OSError):
                continue
            stats = _escape_stats(summary)
            sets = ", ".join(f"{_quote(k)} = ?" for k in stats)
            with self._con:
                self._con.execute(f"UPDATE runs SET {sets} WHERE key = ?", [*stats.values(), key])

    def columns(self) -> list[str]:
        return [r[1] for r in self._con.execute("PRAGMA table_info(runs)")]

    # ---- paths ----

    def run_dir(self, key: str) -> Path:
        return self.root / RUNS / key

    def _tmp_name(self, key: str) -> Path:
        return self.root / TMP / f"{key[:16]}.{host_tag()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"

    def clean_tmp(self) -> list[Path]:
        """Remove temporary folders whose writer is gone (same host, process not alive) or
        that are older than a day; return them."""
        host = host_tag()
        removed = []
        tmp = self.root / TMP
        if not tmp.is_dir():
            return removed
        now = time.time()
        for p in tmp.iterdir():
            parts = p.name.split(".")
            stale = False
            if len(parts) == 4 and parts[1] == host and parts[2].isdigit():
                stale = not _pid_alive(int(parts[2]))
            try:
                stale = stale or (now - p.stat().st_mtime > STALE_AGE)
            except FileNotFoundError:
                continue
            if stale:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                removed.append(p)
        return removed

    # ---- index rows ----

    def _insert(self, row: Mapping[str, Any]) -> None:
        names = list(row)
        sql = (
            f"INSERT OR REPLACE INTO runs ({', '.join(_quote(n) for n in names)}) "
            f"VALUES ({', '.join('?' for _ in names)})"
        )
        con = self._con
        con.execute("BEGIN IMMEDIATE")
        try:
            # optional configuration keys (a [data] table's fields, the PCA start's keys,
            # train.norm) are columns only once some run has them
            have = {r[1] for r in con.execute("PRAGMA table_info(runs)")}
            for n in names:
                if n not in have:
                    con.execute(f"ALTER TABLE runs ADD COLUMN {_quote(n)}")
            con.execute(sql, [row[n] for n in names])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    @staticmethod
    def _row(key: str, status: str, config: Mapping[str, Any], **meta: Any) -> dict[str, Any]:
        row: dict[str, Any] = {"key": key, "status": status, "config": canonical_json(config)}
        row.update(meta)
        for name, v in flatten(config).items():
            row[name] = _sql_value(v)
        return row

    def _row_from_summary(self, key: str, summary: Mapping[str, Any]) -> dict[str, Any]:
        stats = _escape_stats(summary)
        status = "diverged" if stats["n_diverged"] > 0 else "done"
        return self._row(
            key,
            status,
            summary.get("config") or {},
            **stats,
            wall_time=summary.get("wall_time"),
            created_at=summary.get("created"),
            error=None,
            version=(summary.get("versions") or {}).get("sgdlab"),
        )

    def status(self, keys: Iterable[str] | None = None) -> dict[str, str]:
        """``{key: status}`` of the runs in the index (all, or those of ``keys``)."""
        if keys is None:
            return dict(self._con.execute("SELECT key, status FROM runs").fetchall())
        out: dict[str, str] = {}
        keys = list(keys)
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            q = f"SELECT key, status FROM runs WHERE key IN ({', '.join('?' for _ in chunk)})"
            out.update(self._con.execute(q, chunk).fetchall())
        return out

    def finished(self, keys: Iterable[str], *, retry_failed: bool = False) -> dict[str, str]:
        """The runs among ``keys`` that need not be computed: done or diverged with their
        folder in place, and failed unless ``retry_failed``."""
        out = {}
        for k, s in self.status(keys).items():
            if s == "failed":
                if not retry_failed:
                    out[k] = s
            elif self.run_dir(k).joinpath(SUMMARY).is_file() and self.run_dir(k).joinpath(TRAJECTORY).is_file():
                out[k] = s
        return out

    # ---- writing ----

    def adopt_orphans(self) -> list[str]:
        """Give an index row to every complete run folder that has none (its writer was
        stopped between moving the folder into place and writing the row)."""
        runs = self.root / RUNS
        have = self.status()
        adopted = []
        for p in sorted(runs.iterdir()) if runs.is_dir() else []:
            if p.name in have and have[p.name] != "failed":
                continue
            try:
                _, summary = read_run(p)
            except (FileNotFoundError, ValueError, OSError):
                summary = None
            if summary is None or summary.get("run_key") != p.name:
                continue  # not a folder this store wrote; leave it alone
            self._insert(self._row_from_summary(p.name, summary))
            adopted.append(p.name)
        return adopted

    def put(self, key: str, config: Config | Mapping[str, Any], result: Result, **extra: Any) -> str:
        """Store a finished run atomically; return its status (``done`` or ``diverged``).
        ``extra`` keys are added to its ``summary.json``."""
        cfg = _config_dict(config)
        dest = self.run_dir(key)
        tmp = self._tmp_name(key)
        try:
            write_run(result, cfg, tmp, run_key=key, **extra)
            try:
                os.rename(tmp, dest)
            except OSError:
                if not dest.is_dir():
                    raise
                # The folder is already there: a concurrent writer of the same run, or a
                # complete folder from a writer stopped before its index row. Keep it if it
                # is complete, else replace it.
                try:
                    _, old = read_run(dest)
                    keep = old.get("run_key") == key
                except (FileNotFoundError, ValueError, OSError):
                    keep = False
                if not keep:
                    trash = self._tmp_name(key)
                    os.rename(dest, trash)
                    os.rename(tmp, dest)
                    shutil.rmtree(trash, ignore_errors=True)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        _, summary = read_run(dest)
        row = self._row_from_summary(key, summary)
        self._insert(row)
        return row["status"]

    def put_failed(
        self, key: str, config: Config | Mapping[str, Any], error: str, wall_time: float | None = None
    ) -> None:
        """Record a run that raised: an index row with status ``failed`` and the error, no folder."""
        from datetime import UTC, datetime

        cfg = _config_dict(config)
        if self.status([key]).get(key) in ("done", "diverged") and self.run_dir(key).is_dir():
            return  # finished meanwhile by another writer
        row = self._row(
            key,
            "failed",
            cfg,
            n_seeds=None,
            frac_escaped=None,
            median_escape_step=None,
            horizon=None,
            n_diverged=None,
            wall_time=wall_time,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            error=" ".join(str(error).split())[:2000],
            version=sgdlab_version(),
        )
        self._insert(row)

    # ---- reading ----

    def query(
        self, where: Iterable[str | tuple[str, str, Any]] = (), *, keys: Iterable[str] | None = None
    ) -> list[dict]:
        """Index rows (dicts) matching every condition of ``where`` (``"train.lr=0.01"`` or
        ``(column, op, value)``), ordered by creation time. Configuration values come from
        the stored configuration (lists as lists); ``path`` is the run folder."""
        cols = self.columns()
        clauses, args = [], []
        for w in where:
            name, op, value = parse_where(w) if isinstance(w, str) else w
            if name not in cols:
                shown = ", ".join(c for c in cols if c != "config")
                raise ConfigError(f"--where: got column {name!r}; allowed: {shown}")
            clauses.append(f"{_quote(name)} {op} ?")
            args.append(_sql_value(value))
        if keys is not None:
            keys = list(keys)
            if not keys:
                return []
            clauses.append(f"key IN ({', '.join('?' for _ in keys)})")
            args.extend(keys)
        meta = [c for c in META_COLUMNS if c in cols]  # a read-only store from before a column lacks it
        sql = f"SELECT {', '.join(_quote(c) for c in meta)} FROM runs"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY created_at, key"
        rows = []
        for rec in self._con.execute(sql, args).fetchall():
            r = dict(zip(meta, rec, strict=True))
            config = json.loads(r.pop("config"))
            out = {k: r[k] for k in ("key", "status")}
            out.update(flatten(config))
            out.update({k: r.get(k) for k in META_COLUMNS if k not in ("key", "status", "config")})
            out["path"] = str(self.run_dir(r["key"])) if r["status"] != "failed" else None
            rows.append(out)
        return rows

    def table(self, where: Iterable[str] = ()) -> pa.Table:
        """:meth:`query` as a ``pyarrow.Table``."""
        return rows_to_table(self.query(where))

    def trajectory(self, key: str) -> pa.Table:
        return load_trajectory(self, key)

    def result(self, key: str) -> Result:
        return load_result(self, key)


def rows_to_table(rows: list[dict]) -> pa.Table:
    """Rows as a ``pyarrow.Table``; a column with mixed types (``train.init`` = "random" or
    a number, a list-valued field) is stored as JSON text."""
    names: list[str] = []
    for r in rows:
        for k in r:
            if k not in names:
                names.append(k)
    cols = {}
    for n in names:
        vals = [r.get(n) for r in rows]
        try:
            cols[n] = pa.array(vals)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
            cols[n] = pa.array([None if v is None else (v if isinstance(v, str) else json.dumps(v)) for v in vals])
    return pa.table(cols) if names else pa.table({})


def _resolve(store: Store | str | Path, key: str) -> Path:
    root = store.root if isinstance(store, Store) else Path(store)
    d = root / RUNS / key
    if not d.is_dir():
        matches = sorted(p for p in (root / RUNS).glob(f"{key}*") if p.is_dir()) if key else []
        if len(matches) != 1:
            raise ConfigError(f"key: got {key!r}; allowed: the key (or a unique prefix) of a run in {str(root)!r}")
        d = matches[0]
    return d


def load_trajectory(store: Store | str | Path, key: str) -> pa.Table:
    """The trajectory table of run ``key`` (a full key or a unique prefix)."""
    return read_run(_resolve(store, key))[0]


def load_result(store: Store | str | Path, key: str) -> Result:
    """Rebuild the :class:`~sgdlab.Result` of run ``key`` from its folder."""
    return read_result(_resolve(store, key))
