"""Every configuration in examples/ loads, builds and runs (a few steps, two seeds), so that
none goes stale as the configuration schema changes; together they cover every data law."""

from __future__ import annotations

import typing
from pathlib import Path

import numpy as np
import pytest

from sgdlab import run
from sgdlab.config import DataConfig, build, load_config

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.toml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(path):
    """Two recording intervals of the example on its own engine, two seeds: finite order
    parameters, no divergence, the records asked for. Catches an example with a key the
    schema no longer has, a value a constructor now refuses, or a model no engine can run."""
    raw = load_config(path)
    every = raw.train.record_every
    cfg = load_config(path, [f"train.steps={2 * every}"], seeds=None if raw.engine == "ode" else 2)
    b = build(cfg, engine=True)
    res = run(b.problem, b.student, b.training, engine=b.engine, seeds=cfg.seeds, seed=cfg.seed)
    np.testing.assert_array_equal(res.steps, [0, every, 2 * every])
    assert np.isnan(res.diverged_step).all()
    assert np.isfinite(res.M).all() and np.isfinite(res.Q).all()


def test_examples_cover_every_data_law_and_model_kind():
    """One example per data law of the configuration schema ([data] kind, isotropic when
    absent), plus a committee, a minibatch, a sequence and an attention example. Catches a new
    data law without an example, or a deleted example."""
    configs = [load_config(p) for p in EXAMPLES]
    kinds = {"isotropic" if c.data is None else c.data.kind for c in configs}
    assert kinds == set(typing.get_args(DataConfig.model_fields["kind"].annotation))
    assert any(c.student.width > 1 and c.target.directions > 1 for c in configs)  # committee
    assert any(c.train.batch > 1 for c in configs)
    students = {c.sequence.student for c in configs if c.sequence is not None}
    assert {"tied", "attention"} <= students
