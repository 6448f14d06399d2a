"""Sweeps into a results store: grids, caching, failures, kill-and-resume, Dask equals local.

All runs share one model structure (d = 50, 4 seeds, 3000 chain steps) and differ only in
the base PRNG seed, so each process compiles the engine once and every further run takes
a fraction of a second.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from sgdlab import sweep as sweep_mod
from sgdlab.cli import app
from sgdlab.config import ConfigError, validate_config
from sgdlab.store import Store, host_tag, load_result, load_trajectory, run_key
from sgdlab.sweep import expand_grid, parse_grid, run_sweep, sweep

runner = CliRunner()

BASE = {
    "d": 50,
    "seeds": 4,
    "seed": 0,
    "engine": "chain",
    "target": {"link": "h3"},
    "student": {"activation": "h3"},
    "train": {"lr": 0.01, "batch": 4, "steps": 3000, "record_every": 50, "spherical": True, "init": 0.2},
}
TOML = """
d = 50
seeds = 4
seed = 0
engine = "chain"
[target]
link = "h3"
[student]
activation = "h3"
[train]
lr = 0.01
batch = 4
steps = 3000
record_every = 50
spherical = true
init = 0.2
"""


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    f = tmp_path_factory.mktemp("cfg") / "base.toml"
    f.write_text(TOML)
    return f


@pytest.fixture(scope="module")
def local_store(tmp_path_factory) -> Path:
    """Seeds 0, 1, 2 computed in this process (the reference for the other tests)."""
    root = tmp_path_factory.mktemp("local") / "store"
    table = sweep(BASE, {"seed": [0, 1, 2]}, store=root, workers=1)
    assert table.column("status").to_pylist() == ["done"] * 3
    return root


def _files(root: Path, keys) -> dict[str, tuple[int, str]]:
    out = {}
    for k in keys:
        for f in sorted((root / "runs" / k).iterdir()):
            out[f"{k}/{f.name}"] = (f.stat().st_mtime_ns, hashlib.sha256(f.read_bytes()).hexdigest())
    return out


def _index(root: Path) -> dict[str, str]:
    con = sqlite3.connect(f"file:{root / 'index.sqlite'}?mode=ro", uri=True, timeout=30)
    try:
        return dict(con.execute("SELECT key, status FROM runs").fetchall())
    finally:
        con.close()


# --------------------------------------------------------------------------------------
# Grids and keys (no runs)
# --------------------------------------------------------------------------------------


def test_parse_grid_values():
    g = parse_grid(
        ["train.lr=0.001,0.01", "target.link=h2,h3", "target.hermite=[0,0,1],[0,1]", "train.init=random,0.2"]
    )
    assert g == {
        "train.lr": [0.001, 0.01],
        "target.link": ["h2", "h3"],
        "target.hermite": [[0, 0, 1], [0, 1]],
        "train.init": ["random", 0.2],
    }


@pytest.mark.parametrize(
    "grid, start",
    [
        (["train.lr="], "error: --grid: got 'train.lr='"),
        (["train.lr=0.1,,0.2"], "error: --grid: got 'train.lr=0.1,,0.2'"),
        (["nokey=1"], "error: nokey: got unknown key"),
        (["train.lr=0.01,-1"], "error: train.lr: got -1"),
        (["train.lr=0.1", "train.lr=0.2"], "error: --grid: got 'train.lr' twice"),
        (["train.lr"], "error: --grid: got 'train.lr'"),
        (["train.batch=1,0"], "error: train.batch: got 0"),
    ],
)
def test_bad_grid_is_one_line_before_any_run(config_file, tmp_path, grid, start):
    store = tmp_path / "store"
    args = ["sweep", str(config_file), "--store", str(store)]
    for g in grid:
        args += ["--grid", g]
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(start), res.stderr
    assert "Traceback" not in res.output
    assert not store.exists()  # validated up front: nothing started, no store made


def test_bad_options(config_file, tmp_path):
    for extra, start in [
        (["--workers", "0"], "error: --workers: got '0'"),
        (["--workers", "x"], "error: --workers: got 'x'"),
        (["--workers", "2", "--dask", "tcp://127.0.0.1:1"], "error: --workers:"),
    ]:
        res = runner.invoke(app, ["sweep", str(config_file), "--store", str(tmp_path / "s"), *extra])
        assert res.exit_code == 2 and res.stderr.startswith(start), res.stderr
        assert len(res.stderr.strip().splitlines()) == 1


def test_workers_from_the_environment(config_file, tmp_path, monkeypatch):
    """Planted bug caught: SGDLAB_WORKERS ignored (a shared machine's suite starts a worker per
    core in every module) or a bad value that ends in a traceback or silently in one worker."""
    from sgdlab.sweep import default_workers

    monkeypatch.setenv("SGDLAB_WORKERS", "3")
    assert default_workers() == 3
    monkeypatch.delenv("SGDLAB_WORKERS")
    assert default_workers() == max(1, os.cpu_count() or 1)
    for bad in ["0", "x", "-2"]:
        monkeypatch.setenv("SGDLAB_WORKERS", bad)
        res = runner.invoke(app, ["sweep", str(config_file), "--store", str(tmp_path / "s")])
        assert res.exit_code == 2 and res.stderr.startswith(f"error: SGDLAB_WORKERS: got '{bad}'"), res.stderr
        assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.output
        assert not (tmp_path / "s").exists()  # validated up front


def test_expand_grid_product_order_and_dedup():
    cfgs = expand_grid(BASE, {"train.lr": [0.01, 0.02], "seed": [0, 1, 0]}, engine="full")
    assert [(c.train.lr, c.seed) for c in cfgs] == [(0.01, 0), (0.01, 1), (0.02, 0), (0.02, 1)]
    assert all(c.engine == "full" for c in cfgs)
    with pytest.raises(ConfigError, match="got no values"):
        expand_grid(BASE, {"train.lr": []})


def test_run_key_is_a_content_hash():
    cfg = validate_config(BASE)
    k = run_key(cfg)
    assert len(k) == 64 and k == run_key(cfg.to_dict()) == run_key(validate_config(json.loads(json.dumps(BASE))))
    assert k == run_key(validate_config({**BASE, "train": {**BASE["train"], "lr": 1e-2}}))
    assert k != run_key(validate_config({**BASE, "train": {**BASE["train"], "lr": 0.02}}))
    assert k != run_key(validate_config({**BASE, "seed": 1}))
    assert k != run_key(validate_config({**BASE, "seeds": 5}))
    assert k != run_key(cfg, version="0.0.0")


# --------------------------------------------------------------------------------------
# Store, cache, failures
# --------------------------------------------------------------------------------------


def test_store_layout_and_index(local_store):
    idx = _index(local_store)
    assert len(idx) == 3 and set(idx.values()) == {"done"}
    assert sorted(p.name for p in (local_store / "runs").iterdir()) == sorted(idx)
    for k in idx:
        summary = json.loads((local_store / "runs" / k / "summary.json").read_text())
        assert summary["run_key"] == k and summary["config"]["d"] == 50
    con = sqlite3.connect(local_store / "index.sqlite")
    cols = [r[1] for r in con.execute("PRAGMA table_info(runs)")]
    for c in ("key", "status", "train.lr", "student.width", "n_seeds", "frac_escaped", "median_escape_step",
              "wall_time", "created_at", "error"):  # fmt: skip
        assert c in cols
    rows = con.execute('SELECT seed, "train.lr", "train.spherical", n_seeds FROM runs ORDER BY seed').fetchall()
    assert rows == [(0, 0.01, 1, 4), (1, 0.01, 1, 4), (2, 0.01, 1, 4)]
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()


def test_load_result_round_trip(local_store):
    key = run_key(validate_config({**BASE, "seed": 1}))
    res = load_result(local_store, key[:10])
    traj = load_trajectory(local_store, key)
    cols = res.columns()
    assert list(cols) == traj.column_names
    for name, v in cols.items():
        np.testing.assert_array_equal(v, traj.column(name).to_numpy())
    assert res.n_seeds == 4 and res.d == 50
    with pytest.raises(ConfigError):
        load_result(local_store, "nothere")


def test_cache_computes_only_what_is_missing(local_store, config_file):
    keys = list(_index(local_store))
    before = _files(local_store, keys)
    rep = run_sweep(BASE, {"seed": [0, 1, 2]}, store=local_store, workers=1)
    assert (rep.total, rep.cached, rep.computed) == (3, 3, 0)
    assert rep.table.column("cached").to_pylist() == [True] * 3
    rep = run_sweep(BASE, {"seed": [0, 1, 2, 3]}, store=local_store, workers=1)
    assert (rep.total, rep.cached, rep.computed) == (4, 3, 1)
    assert _files(local_store, keys) == before  # cached runs untouched
    res = runner.invoke(app, ["sweep", str(config_file), "--grid", "seed=0,1,2,3", "--store", str(local_store)])
    assert res.exit_code == 0, res.output
    assert "4 runs, 4 cached, 0 to compute" in res.stdout
    assert "4 runs: 4 cached, 0 computed" in res.stdout
    assert _files(local_store, keys) == before


def test_failed_and_diverged_runs(tmp_path, monkeypatch):
    real = sweep_mod.compute

    def fake(config):
        if config["seed"] == 7:
            return {"error": "RuntimeError: boom", "wall_time": 0.1}
        out = real(config)
        if config["seed"] == 8:
            res = out["result"]
            div = np.array(res.diverged_step)
            div[1] = 100
            out["result"] = dataclasses.replace(res, diverged_step=div)  # seed 1 diverged at step 100
        return out

    monkeypatch.setattr(sweep_mod, "compute", fake)
    store = tmp_path / "store"
    rep = run_sweep(BASE, {"seed": [0, 7, 8]}, store=store, workers=1)
    assert (rep.computed, rep.failed, rep.diverged) == (3, 1, 1)
    assert rep.table.column("status").to_pylist() == ["done", "failed", "diverged"]
    failed = [r for r in rep.table.to_pylist() if r["status"] == "failed"][0]
    assert failed["error"] == "RuntimeError: boom" and failed["path"] is None
    assert not (store / "runs" / failed["key"]).exists()
    # failed and diverged runs are kept: not computed again ...
    rep = run_sweep(BASE, {"seed": [0, 7, 8]}, store=store, workers=1)
    assert (rep.cached, rep.computed) == (3, 0)
    # ... until --retry-failed, which reruns failed runs only (diverged runs are deterministic)
    monkeypatch.setattr(sweep_mod, "compute", real)
    rep = run_sweep(BASE, {"seed": [0, 7, 8]}, store=store, workers=1, retry_failed=True)
    assert (rep.cached, rep.computed) == (2, 1)
    assert rep.table.column("status").to_pylist() == ["done", "done", "diverged"]
    assert rep.table.column("error").to_pylist() == [None, None, None]
    with Store(store) as st:
        assert [r["seed"] for r in st.query(["status=diverged"])] == [8]
        assert sorted(r["seed"] for r in st.query(["seed>=7"])) == [7, 8]


def test_orphan_folder_is_adopted_and_stale_tmp_removed(tmp_path, local_store):
    import shutil

    store = tmp_path / "copy"
    shutil.copytree(local_store, store)
    key = run_key(validate_config({**BASE, "seed": 2}))
    con = sqlite3.connect(store / "index.sqlite")
    con.execute("DELETE FROM runs WHERE key = ?", (key,))
    con.commit()
    con.close()
    stale = store / "tmp" / f"{key[:16]}.{host_tag()}.999999999.deadbeef"
    stale.mkdir(parents=True)
    (stale / "trajectory.parquet").write_bytes(b"partial")
    before = _files(store, [key])
    with Store(store) as st:  # opening a store reconciles it
        assert st.status()[key] == "done"
    assert not stale.exists()
    assert _files(store, [key]) == before


# --------------------------------------------------------------------------------------
# CLI: results and plot from a store
# --------------------------------------------------------------------------------------


def test_results_and_plot_queries(local_store, tmp_path):
    res = runner.invoke(app, ["results", "--store", str(local_store), "--where", "seed=1"])
    assert res.exit_code == 0, res.output
    assert "1 run in" in res.stdout and "done" in res.stdout
    res = runner.invoke(app, ["results", "--store", str(local_store), "--where", "train.lr=0.01"])
    assert res.exit_code == 0 and "runs in" in res.stdout
    res = runner.invoke(app, ["results", "--store", str(local_store), "--where", "nocolumn=1"])
    assert res.exit_code == 2 and res.stderr.startswith("error: --where: got column 'nocolumn'")
    res = runner.invoke(app, ["results", "--store", str(tmp_path / "none")])
    assert res.exit_code == 2 and res.stderr.startswith("error: --store:")
    out = tmp_path / "fig.png"
    res = runner.invoke(
        app, ["plot", "--store", str(local_store), "--where", "train.lr=0.01", "--where", "seed<=1", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert out.stat().st_size > 1000 and "(2 runs)" in res.stdout
    res = runner.invoke(app, ["plot", "--store", str(local_store), "--where", "train.lr=0.5"])
    assert res.exit_code == 2 and res.stderr.startswith("error: --where:")


# --------------------------------------------------------------------------------------
# Kill and resume; local processes and Dask give the same bits
# --------------------------------------------------------------------------------------

N_KILL = 12


def test_kill_and_resume(tmp_path, config_file, local_store):
    store = tmp_path / "store"
    seeds = ",".join(str(s) for s in range(N_KILL))
    cmd = [sys.executable, "-m", "sgdlab.cli", "sweep", str(config_file), "--grid", f"seed={seeds}",
           "--store", str(store), "--workers", "2"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 240
    n = 0
    try:
        while time.time() < deadline and proc.poll() is None:
            if (store / "index.sqlite").exists():
                try:
                    n = len(_index(store))
                except sqlite3.OperationalError:
                    n = 0
                if n >= 1:
                    break
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its worker processes
        proc.wait()
    assert n >= 1, proc.stderr.read().decode()[-2000:]
    done = _index(store)
    assert len(done) < N_KILL, "the sweep finished before it could be killed"
    before = _files(store, done)
    # a temporary folder of the killed writer, as if it had been stopped mid-write
    (store / "tmp" / f"0123456789abcdef.{host_tag()}.{proc.pid}.0badcafe").mkdir(parents=True, exist_ok=True)

    # start it again (in this process, which has compiled the model already)
    args = ["sweep", str(config_file), "--grid", f"seed={seeds}", "--store", str(store), "--workers", "1"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    m = re.search(rf"{N_KILL} runs: (\d+) cached, (\d+) computed; 0 failed", res.stdout)
    assert m is not None, res.stdout
    n_cached, n_computed = int(m.group(1)), int(m.group(2))
    assert n_cached >= len(done) and n_cached + n_computed == N_KILL  # finished runs reused, only the rest computed
    assert _files(store, done) == before  # finished runs' files unchanged
    idx = _index(store)
    assert len(idx) == N_KILL and set(idx.values()) == {"done"}
    assert sorted(p.name for p in (store / "runs").iterdir()) == sorted(idx)  # no partial run folders
    assert list((store / "tmp").iterdir()) == []  # stale temporary folders removed
    # runs computed by spawned worker processes equal those computed in this process
    for s in (0, 1, 2):
        key = run_key(validate_config({**BASE, "seed": s}))
        a = pq.read_table(local_store / "runs" / key / "trajectory.parquet")
        b = pq.read_table(store / "runs" / key / "trajectory.parquet")
        assert a.equals(b)


def test_dask_equals_local(tmp_path, local_store):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        table = sweep(BASE, {"seed": [0, 1, 2]}, store=tmp_path / "dask", dask=cluster.scheduler_address)
    assert table.column("status").to_pylist() == ["done"] * 3
    with Store(local_store, readonly=True) as st:
        local = {r["key"]: r for r in st.query()}
    for r in table.to_pylist():
        assert r["key"] in local
        a = pq.read_table(Path(local[r["key"]]["path"]) / "trajectory.parquet")
        b = pq.read_table(Path(r["path"]) / "trajectory.parquet")
        assert a.column_names == b.column_names
        for name in a.column_names:  # bit for bit
            x, y = a.column(name).to_numpy(), b.column(name).to_numpy()
            assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), name
        for col in ("frac_escaped", "median_escape_step", "n_diverged"):
            assert r[col] == local[r["key"]][col]
