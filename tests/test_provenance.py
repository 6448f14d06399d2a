"""results.json says where each run of a reproduction was computed, from the run's own
summary, not the machine that assembled the outputs (runs are often computed on a GPU and
read back on a laptop)."""

from __future__ import annotations

import json

import numpy as np

from sgdlab.config import load_config
from sgdlab.io import package_versions
from sgdlab.reproduce._common import Point, device_description, matched_config, provenance, run_points, write_outputs
from sgdlab.result import Result
from sgdlab.store import Store, run_key


def _stored(seeds: int = 2, records: int = 3) -> Result:
    steps = np.arange(records, dtype=np.int64) * 10
    return Result(engine="chain", d=64, batch=1, steps=steps, M=np.full((seeds, records, 1, 1), 0.1),
                  Q=np.ones((seeds, records, 1, 1)), a=np.ones((seeds, records, 1)), risk=np.ones((seeds, records)),
                  escape_step=np.full(seeds, -1), diverged_step=np.full(seeds, -1), seeds=np.arange(seeds))


def test_results_json_records_where_each_run_was_computed(tmp_path):
    """Two runs in a store, one computed on a GPU with jax 0.11.2 (its worker's versions), one
    stored before devices were recorded; the reproduction that reads them back on this CPU
    writes, per run and in ``device``, the GPU and 'device not recorded' with their jax
    versions, and its own device only as ``assembled_on``. Catches results.json reporting the
    assembling machine ("cpu, jax 0.10.2") for points computed elsewhere."""
    pts = [Point({"d": d}, matched_config("h2", d, seeds=2, seed=0, engine="chain", steps=20, record_every=10))
           for d in (64, 128)]
    gpu = {"sgdlab": package_versions()["sgdlab"], "jax": "0.11.2", "device": "gpu: NVIDIA H200"}
    old = {"sgdlab": package_versions()["sgdlab"], "jax": "0.10.2"}  # no "device": an old run
    with Store(tmp_path / "store") as st:
        for p, versions in zip(pts, (gpu, old), strict=True):
            cfg = load_config(data=dict(p.config))
            st.put(run_key(cfg), cfg, _stored(), worker_versions=versions)
    _, rows = run_points(pts, store=tmp_path / "store", workers=1)  # both cached: nothing computed
    out = write_outputs(tmp_path / "out", name="test", summary={}, table="", figures={}, started=0.0,
                        points=provenance(pts, rows))
    data = json.loads((out.out / "results.json").read_text())
    assert [r["computed_on"] for r in data["runs_computed_on"]] == [
        "gpu: NVIDIA H200, jax 0.11.2", "device not recorded, jax 0.10.2"]
    assert [r["d"] for r in data["runs_computed_on"]] == [64, 128]
    assert data["device"] == "device not recorded, jax 0.10.2; gpu: NVIDIA H200, jax 0.11.2"
    assert data["assembled_on"] == device_description()
