"""The conditioned random start (``init = "random_positive"``) and early stopping
(``stop_fraction``) that the reproductions rely on."""

import numpy as np
import pytest
import scipy.stats

from sgdlab import Chain, Full, Problem, Student, Training, run
from sgdlab.analysis import escape_from_result
from sgdlab.config import ConfigError, build, load_config
from sgdlab.model import Training as T


def _start(engine, init, seeds=2000, d=30, p=1, seed=0):
    tr = Training(lr=1e-9, steps=1, spherical=True, init=init, record_every=1)
    res = run(Problem(d=d, link="h3"), Student(width=p, activation="h3"), tr, engine=engine, seeds=seeds, seed=seed)
    return res.overlap()[:, 0, :, 0]  # (seeds, p)


@pytest.mark.parametrize("engine", [Chain(), Full(dtype="float64")], ids=["chain", "full"])
def test_random_positive_is_the_law_of_abs_m0(engine):
    """Every row starts with m >= 0, and m is distributed as |m| of the plain random start
    (KS over 2000 seeds, p > 1e-3; both are exact draws, so the test fails only for a wrong law)."""
    pos = _start(engine, "random_positive", p=2)
    plain = _start(engine, "random", p=2, seed=1)
    assert np.all(pos >= 0)
    assert np.mean(plain < 0) > 0.4  # the plain start does take both signs
    for j in range(2):
        assert scipy.stats.ks_2samp(pos[:, j], np.abs(plain[:, j])).pvalue > 1e-3


def test_random_positive_chain_matches_full_in_law():
    """The chain's conditioned start (a sign flip of a row of its Gram matrix) against the full
    simulation's: the overlap of each row and the row-row overlap Q_01 agree in law."""
    kw = dict(lr=1e-9, steps=1, spherical=True, init="random_positive", record_every=1)
    args = (Problem(d=20, link="h3"), Student(width=2, activation="h3"), Training(**kw))
    c = run(*args, engine=Chain(), seeds=2000, seed=0)
    f = run(*args, engine=Full(dtype="float64"), seeds=2000, seed=1)
    for a, b in ((c.M[:, 0, 0, 0], f.M[:, 0, 0, 0]), (c.Q[:, 0, 0, 1], f.Q[:, 0, 0, 1])):
        assert scipy.stats.ks_2samp(a, b).pvalue > 1e-3


def _escape_runs(stop, engine=Chain()):
    tr = Training(lr=0.01, batch=4, steps=20_000, spherical=True, init="random_positive", record_every=100,
                  stop_fraction=stop)
    return run(Problem(d=64, link="h3"), Student(activation="h3"), tr, engine=engine, seeds=64, seed=3)


def test_stop_fraction_stops_early_and_keeps_the_median():
    """With stop_fraction = 0.7 the run ends at the first check with >= 70% escaped; every seed
    that escaped has the same escape step as in the full-horizon run, and the Kaplan-Meier
    median (which only involves the first half of the escapes) is unchanged."""
    full = _escape_runs(None)
    early = _escape_runs(0.7)
    assert early.steps[-1] < full.steps[-1]
    e_full, e_early = np.asarray(full.escape_step), np.asarray(early.escape_step)
    assert np.mean(e_early >= 0) >= 0.7
    hit = e_early >= 0
    np.testing.assert_array_equal(e_early[hit], e_full[hit])
    assert np.all(np.isnan(e_full[~hit]) | (e_full[~hit] > early.steps[-1]))
    assert escape_from_result(early).median_step == escape_from_result(full).median_step
    again = _escape_runs(0.7)  # the stopping point does not depend on timing
    assert again.steps[-1] == early.steps[-1]
    np.testing.assert_array_equal(again.escape_step, early.escape_step)


def test_stop_fraction_full_engine():
    early = _escape_runs(0.5, Full())
    assert np.mean(np.asarray(early.escape_step) >= 0) >= 0.5
    assert early.steps[-1] < 20_000


@pytest.mark.parametrize("bad", [0, 1.5, -0.2, float("nan")])
def test_stop_fraction_validated(bad):
    with pytest.raises(ValueError, match="train.stop_fraction"):
        T(stop_fraction=bad)
    with pytest.raises(ValueError, match="train.init"):
        T(init="positive")


def test_config_accepts_the_new_fields():
    cfg = load_config(data={"d": 20, "train": {"init": "random_positive", "stop_fraction": 0.8}})
    built = build(cfg)
    assert built.training.init == "random_positive" and built.training.stop_fraction == 0.8
    with pytest.raises(ConfigError, match="train.stop_fraction"):
        build(load_config(data={"d": 20, "train": {"stop_fraction": 2}}))
