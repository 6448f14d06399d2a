"""The results store on its own (synthetic results, no engine): layout, index, queries, recovery."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading

import numpy as np
import pytest

from sgdlab.config import ConfigError, validate_config
from sgdlab.result import Result
from sgdlab.store import Store, canonical_json, flatten, host_tag, load_result, parse_where, run_key


def fake_result(seeds: int = 3, records: int = 5, *, diverge: bool = False, escape: bool = True) -> Result:
    rng = np.random.default_rng(seeds)
    steps = np.arange(records, dtype=np.int64) * 10
    M = rng.normal(size=(seeds, records, 1, 1))
    Q = 1.0 + rng.random(size=(seeds, records, 1, 1))
    return Result(
        engine="chain",
        d=50,
        batch=4,
        steps=steps,
        M=M,
        Q=Q,
        a=np.ones((seeds, records, 1)),
        risk=rng.random(size=(seeds, records)),
        escape_step=np.array([10 * (i + 1) if escape and i < 2 else -1 for i in range(seeds)], dtype=np.int64),
        diverged_step=np.array([20 if diverge and i == 0 else -1 for i in range(seeds)], dtype=np.int64),
        seeds=np.arange(seeds, dtype=np.int64),
        wall_time=0.5,
    )


def cfg(**train):
    return validate_config({"d": 50, "seeds": 3, "train": {"lr": 0.01, **train}})


def test_keys_and_flatten():
    c = cfg()
    assert run_key(c) == run_key(c.to_dict()) == run_key(cfg(lr=1e-2))
    assert run_key(c) != run_key(cfg(lr=0.02))
    assert canonical_json({"b": 1, "a": [1.0, 2]}) == '{"a":[1.0,2],"b":1}'
    assert flatten({"a": {"b": {"c": 1}}, "d": [1, 2]}) == {"a.b.c": 1, "d": [1, 2]}


def test_put_layout_index_and_load(tmp_path):
    with Store(tmp_path / "s") as st:
        c = cfg(spherical=True)
        k = run_key(c)
        assert st.put(k, c, fake_result()) == "done"
        kd = run_key(cfg(lr=0.5))
        assert st.put(kd, cfg(lr=0.5), fake_result(diverge=True)) == "diverged"
        kf = run_key(cfg(lr=0.7))
        st.put_failed(kf, cfg(lr=0.7), "ValueError: bad\nthing")
        assert st.status() == {k: "done", kd: "diverged", kf: "failed"}
        assert sorted(p.name for p in (tmp_path / "s" / "runs").iterdir()) == sorted([k, kd])
        assert list((tmp_path / "s" / "tmp").iterdir()) == []
        (row,) = st.query([f"key={k}"])
        assert row["train.lr"] == 0.01 and row["train.spherical"] is True and row["n_seeds"] == 3
        assert row["frac_escaped"] == pytest.approx(2 / 3)
        # Kaplan-Meier median of escapes (10, 20, censored): 20, not 15 (the median of the escaped)
        assert row["median_escape_step"] == 20.0 and row["horizon"] == 40
        (fail,) = st.query(["status=failed"])
        assert fail["error"] == "ValueError: bad thing" and fail["path"] is None
        assert {r["key"] for r in st.query(["train.lr>0.1"])} == {kd, kf}
        assert {r["key"] for r in st.query(["train.spherical=true"])} == {k}
        assert {r["key"] for r in st.query(["train.init=random", "train.lr!=0.01"])} == {kd, kf}
        res = load_result(st, k)
        np.testing.assert_array_equal(res.M, fake_result().M)
        assert res.escape() == fake_result().escape()
        with pytest.raises(ConfigError, match="--where: got column 'nope'"):
            st.query(["nope=1"])
    con = sqlite3.connect(tmp_path / "s" / "index.sqlite")
    got = con.execute('SELECT "train.lr", "train.spherical", "train.init" FROM runs WHERE key = ?', (k,)).fetchone()
    assert got == (0.01, 1, "random")
    con.close()


def test_parse_where():
    assert parse_where("train.lr=0.01") == ("train.lr", "=", 0.01)
    assert parse_where("train.lr <= 1e-3") == ("train.lr", "<=", 1e-3)
    assert parse_where("status==failed") == ("status", "=", "failed")
    assert parse_where("target.link=h3") == ("target.link", "=", "h3")
    for bad in ("train.lr", "train.lr=", "=3"):
        with pytest.raises(ConfigError, match="--where"):
            parse_where(bad)


def test_a_run_is_stored_once(tmp_path):
    with Store(tmp_path / "s") as st:
        c = cfg()
        k = run_key(c)
        st.put(k, c, fake_result())
        before = (tmp_path / "s" / "runs" / k / "trajectory.parquet").stat().st_mtime_ns
        st.put(k, c, fake_result())  # the same run finished by a second writer: the first folder is kept
        assert (tmp_path / "s" / "runs" / k / "trajectory.parquet").stat().st_mtime_ns == before
        assert len(st.status()) == 1 and list((tmp_path / "s" / "tmp").iterdir()) == []


def test_recovery_on_open(tmp_path):
    root = tmp_path / "s"
    with Store(root) as st:
        c = cfg()
        k = run_key(c)
        st.put(k, c, fake_result())
    con = sqlite3.connect(root / "index.sqlite")
    con.execute("DELETE FROM runs")  # a writer stopped between moving the folder and the row
    con.commit()
    con.close()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = root / "tmp" / f"0123456789abcdef.{host_tag()}.{dead.pid}.00000000"
    live = root / "tmp" / f"0123456789abcdef.{host_tag()}.{os.getpid()}.11111111"
    other = root / "tmp" / "0123456789abcdef.otherhost.1.22222222"
    foreign = root / "runs" / "not-a-run"
    for p in (stale, live, other, foreign):
        p.mkdir(parents=True)
    with Store(root) as st:
        assert st.status() == {k: "done"}  # adopted from its summary.json
    assert not stale.exists() and live.exists() and other.exists() and foreign.exists()


def test_schema_gains_new_config_columns(tmp_path):
    root = tmp_path / "s"
    with Store(root):
        pass
    con = sqlite3.connect(root / "index.sqlite")
    con.execute('ALTER TABLE runs DROP COLUMN "full.dtype"')
    con.commit()
    con.close()
    with Store(root) as st:
        assert "full.dtype" in st.columns()


def test_concurrent_writers(tmp_path):
    root = tmp_path / "s"
    Store(root).close()
    errors = []

    def writer(offset: int) -> None:
        try:
            with Store(root) as st:
                for i in range(10):
                    c = cfg(lr=0.001 * (1 + offset + 2 * i))
                    st.put(run_key(c), c, fake_result())
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(j,)) for j in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with Store(root) as st:
        assert len(st.status()) == 20 and set(st.status().values()) == {"done"}


def test_readonly_store_must_exist(tmp_path):
    with pytest.raises(ConfigError, match="--store"):
        Store(tmp_path / "none", readonly=True)


def test_summary_records_key(tmp_path):
    with Store(tmp_path / "s") as st:
        c = cfg()
        k = run_key(c)
        st.put(k, c, fake_result(), worker_versions={"sgdlab": "x"})
        s = json.loads((tmp_path / "s" / "runs" / k / "summary.json").read_text())
        assert s["run_key"] == k and s["worker_versions"] == {"sgdlab": "x"} and s["config"] == c.to_dict()


def test_store_from_before_the_kaplan_meier_median_is_migrated(tmp_path):
    """A store written when median_escape_step was the median over escaped seeds (no horizon
    column) gets the Kaplan-Meier median and the horizon when opened for writing, read back
    from each run's summary.json. Planted bug caught: no migration (the old 15 stays)."""
    import sqlite3

    c = cfg()
    with Store(tmp_path / "s") as st:
        st.put(run_key(c), c, fake_result())
    with sqlite3.connect(tmp_path / "s" / "index.sqlite") as con:
        con.execute("ALTER TABLE runs DROP COLUMN horizon")
        con.execute("UPDATE runs SET median_escape_step = 15.0")
    with Store(tmp_path / "s", readonly=True) as st:  # read-only: shown as it is, no horizon
        (row,) = st.query()
        assert row["median_escape_step"] == 15.0 and row["horizon"] is None
    with Store(tmp_path / "s") as st:
        (row,) = st.query()
        assert row["median_escape_step"] == 20.0 and row["horizon"] == 40


def test_optional_config_keys_become_columns(tmp_path):
    """Keys that a default configuration does not write (the PCA start's, train.norm, a [data]
    table's fields) are added as columns when a run first has them, and can be queried.
    Planted bug (found by a sweep): the index had only the default configuration's columns, so
    storing such a run raised 'table runs has no column named train.pca_samples'."""
    data = {"kind": "spiked", "strength": 1.0, "overlap": 0.45}
    pca = validate_config({"d": 50, "seeds": 3, "data": data,
                           "train": {"lr": 0.01, "spherical": True, "init": "pca", "pca_samples": 80}})
    cov = validate_config({"d": 50, "seeds": 3, "data": data, "train": {"lr": 0.01, "spherical": True,
                                                                      "norm": "covariance"}})
    with Store(tmp_path / "s") as st:
        st.put(run_key(cfg()), cfg(), fake_result())
        for c in (pca, cov):
            st.put(run_key(c), c, fake_result())
        assert {"train.pca_samples", "train.norm", "data.strength"} <= set(st.columns())
        assert len(st.status()) == 3
