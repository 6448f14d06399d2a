"""Reproducibility, seed bookkeeping, escape and divergence steps of the stochastic engines."""

import jax
import numpy as np
import pytest

from sgdlab import Chain, Full, Problem, Student, Training, run
from sgdlab.engines._driver import seed_keys

ENGINES = {"chain": Chain(), "full32": Full(), "full64": Full(dtype="float64")}

PROBLEM = Problem(d=30, link="h3")
STUDENT = Student(width=2, activation="h3")
TRAINING = Training(lr=0.02, batch=3, steps=20, record_every=5, spherical=True, init=0.3)


def _arrays(res):
    return res.M, res.Q, res.a, res.escape_step, res.diverged_step


def _assert_same(r1, r2, rows1=slice(None), rows2=slice(None)):
    for x, y in zip(_arrays(r1), _arrays(r2), strict=True):
        np.testing.assert_array_equal(x[rows1], y[rows2])


@pytest.fixture(scope="module", params=list(ENGINES))
def engine(request):
    return ENGINES[request.param]


def test_same_seed_is_bit_identical(engine):
    r1 = run(PROBLEM, STUDENT, TRAINING, engine=engine, seeds=4, seed=7)
    r2 = run(PROBLEM, STUDENT, TRAINING, engine=engine, seeds=4, seed=7)
    _assert_same(r1, r2)


def test_different_seeds_differ(engine):
    r1 = run(PROBLEM, STUDENT, TRAINING, engine=engine, seeds=4, seed=7)
    r2 = run(PROBLEM, STUDENT, TRAINING, engine=engine, seeds=4, seed=8)
    # every seed of every run differs after one record (the start is random too: the part
    # of the rows orthogonal to the teacher)
    assert np.all(np.abs(r1.Q[:, 1:] - r2.Q[:, 1:]).max(axis=(1, 2, 3)) > 0)
    assert np.all(np.abs(r1.M[:, -1] - r2.M[:, -1]).max(axis=(1, 2)) > 0)
    # and the seeds of one run differ from each other
    M = r1.M[:, -1].reshape(4, -1)
    assert len({tuple(row) for row in M}) == 4


def test_seed_keys_do_not_depend_on_the_number_of_seeds():
    k4 = jax.random.key_data(seed_keys(3, 4))
    k8 = jax.random.key_data(seed_keys(3, 8))
    np.testing.assert_array_equal(np.asarray(k4), np.asarray(k8)[:4])
    assert len({tuple(np.asarray(k).ravel()) for k in k8}) == 8


def test_seed_i_does_not_depend_on_the_number_of_seeds(engine):
    """Seed i of a 4-seed run is seed i of an 8-seed run (keys fold_in(key(seed), i))."""
    r4 = run(PROBLEM, STUDENT, TRAINING, engine=engine, seeds=4, seed=5)
    r8 = run(PROBLEM, STUDENT, TRAINING, engine=engine, seeds=8, seed=5)
    # Same keys and the same per-seed computation, so equal up to how XLA batches the
    # vmapped linear algebra; ask for bit equality of the integer outputs and 1e-12 (resp.
    # 1e-5 in float32) relative agreement of the floats.
    rtol = 1e-5 if engine == ENGINES["full32"] else 1e-12
    for x, y in zip(_arrays(r4)[:3], _arrays(r8)[:3], strict=True):
        np.testing.assert_allclose(x, y[:4], rtol=rtol, atol=rtol)
    np.testing.assert_array_equal(r4.escape_step, r8.escape_step[:4])
    np.testing.assert_array_equal(r4.diverged_step, r8.diverged_step[:4])


# --------------------------------------------------------------------------------------
# escape steps
# --------------------------------------------------------------------------------------


def _escape_stat(res):
    """max_j |M_j0| / sqrt(Q_jj) at every record, shape (seeds, records)."""
    qd = np.sqrt(np.einsum("skii->ski", res.Q))
    return np.max(np.abs(res.M[..., 0]) / qd, axis=-1)


def test_escape_never(engine):
    tr = Training(lr=0.01, steps=10, record_every=5, spherical=True, escape_threshold=0.99)
    res = run(Problem(d=40, link="h3"), Student(activation="h3"), tr, engine=engine, seeds=8, seed=0)
    assert np.all(np.isnan(res.escape_step))
    assert np.all(_escape_stat(res) < 0.99)


def test_escape_at_start(engine):
    tr = Training(lr=0.01, steps=10, record_every=5, spherical=True, init=0.9, escape_threshold=0.5)
    res = run(Problem(d=40, link="h3"), Student(activation="h3"), tr, engine=engine, seeds=8, seed=0)
    np.testing.assert_array_equal(res.escape_step, 0)


@pytest.mark.parametrize("geometry", ["spherical", "projected"])
def test_escape_step_is_first_record_above_threshold(engine, geometry):
    """With record_every=1 the escape step is the first recorded step whose statistic
    max_j |M_j0| / sqrt(Q_jj) reaches the threshold (never reached: -1)."""
    thr = 0.45
    tr = Training(lr=0.03, steps=120, record_every=1, init=0.3, escape_threshold=thr, **{geometry: True})
    res = run(Problem(d=40, link="h2"), Student(width=2, activation="h2"), tr, engine=engine, seeds=32, seed=1)
    assert np.all(np.isnan(res.diverged_step))
    np.testing.assert_array_equal(res.steps, np.arange(121))
    stat = _escape_stat(res)
    # The engine computes the statistic from its own state (chain: exactly the same
    # expression; full: from W, not from W W^T), so allow a rounding band around thr.
    tol = 1e-5 if engine == ENGINES["full32"] else 1e-12
    esc = res.escape_step
    for s in range(res.n_seeds):
        if np.isnan(esc[s]):  # never
            assert np.all(stat[s] < thr + tol), s
        else:
            assert np.all(stat[s, : int(esc[s])] < thr + tol), s
            assert stat[s, int(esc[s])] >= thr - tol, s
        if tol == 1e-12:  # no value inside the band: the first crossing must match exactly
            above = np.flatnonzero(stat[s] >= thr)
            assert esc[s] == above[0] if above.size else np.isnan(esc[s]), s
    # not vacuous: some seeds escape during the run, some do not
    assert np.any(esc > 0), esc
    assert np.any(np.isnan(esc)) and np.any(~np.isnan(esc)), esc


# --------------------------------------------------------------------------------------
# divergence
# --------------------------------------------------------------------------------------


def _check_divergence(res):
    """Records from the divergence step on are NaN; before it M and a are finite (Q and the
    risk too, except for the Full overflow noted in test_full_gram_overflows_before_divergence)."""
    div = res.diverged_step
    for s in range(res.n_seeds):
        before = res.steps < div[s] if div[s] >= 0 else np.ones(len(res.steps), bool)
        for arr in (res.M, res.Q, res.a, res.risk):
            assert np.all(np.isnan(arr[s][~before])), s
        for arr in (res.M, res.a):
            assert np.all(np.isfinite(arr[s][before])), s
        assert not np.any(np.isnan(res.Q[s][before])), s
        if res.engine == "chain":
            assert np.all(np.isfinite(res.Q[s][before])), s
        if div[s] >= 0:
            assert div[s] >= 1  # the start is healthy


def test_records_before_divergence_are_finite():
    """Divergence is declared before W W^T or the risk overflow (squared norms beyond
    MAX_NORM2 = 1e30), so every record before diverged_step is finite."""
    tr = Training(lr=DIV_LR, steps=15, record_every=1)
    res = run(Problem(d=40, link="h3"), Student(activation="h3"), tr, engine=Full(dtype="float64"), seeds=4, seed=3)
    for s in range(4):
        before = res.steps < res.diverged_step[s] if res.diverged_step[s] >= 0 else slice(None)
        assert np.all(np.isfinite(res.Q[s][before])) and np.all(np.isfinite(res.risk[s][before]))


def test_divergence_huge_lr(engine):
    """lr = 1e3 on plain SGD with h3: every seed diverges, the run returns, records from the
    divergence step on are NaN."""
    tr = Training(lr=1e3, steps=20, record_every=1)
    res = run(Problem(d=40, link="h3"), Student(activation="h3"), tr, engine=engine, seeds=8, seed=0)
    assert np.all(res.diverged_step >= 1)
    _check_divergence(res)


def test_divergence_is_per_seed(engine):
    """At a learning rate on the edge of stability some seeds diverge and others do not:
    the diverged ones are NaN from their divergence step on, the others stay finite and
    equal to the same seeds in a run with a different number of seeds (a diverged seed
    does not contaminate the others)."""
    tr = Training(lr=DIV_LR, steps=15, record_every=1)
    pb, st = Problem(d=40, link="h3"), Student(activation="h3")
    res = run(pb, st, tr, engine=engine, seeds=16, seed=3)
    div = res.diverged_step
    assert np.any(div >= 0) and np.any(np.isnan(div)), div
    _check_divergence(res)
    # the surviving seeds of a 16-seed run are the same as in an 8-seed run
    res8 = run(pb, st, tr, engine=engine, seeds=8, seed=3)
    ok = np.isnan(div[:8])
    rtol = 1e-4 if engine == ENGINES["full32"] else 1e-10
    np.testing.assert_allclose(res8.Q[ok], res.Q[:8][ok], rtol=rtol)
    np.testing.assert_array_equal(res8.diverged_step, div[:8])


DIV_LR = 0.05  # plain SGD with h3 at d = 40: seeds diverge between steps 5 and 30


@pytest.mark.parametrize("engine", [Chain(), Full(dtype="float32")], ids=["chain", "full32"])
def test_step_sizes_are_traced_no_recompilation(engine):
    """Runs that differ only in lr / lr_second reuse one compiled program, and use the new
    values: bitwise equal to a run of an engine built directly for those step sizes."""
    from sgdlab.engines._driver import compiled_programs, drive, seed_keys
    from sgdlab.model import Model

    pb, st = Problem(d=40, link="h3"), Student(activation="h3", second_layer="trained")
    kw = {"steps": 20, "record_every": 10, "spherical": True}
    run(pb, st, Training(lr=0.01, **kw), engine=engine, seeds=3, seed=5)
    size = compiled_programs()
    tr = Training(lr=0.03, lr_second=0.002, **kw)
    res = run(pb, st, tr, engine=engine, seeds=3, seed=5)
    assert compiled_programs() == size
    direct = drive(engine.build(Model(pb, st, tr)), seed_keys(5, 3), steps=20, every=10, threshold=0.5)
    assert np.array_equal(res.Q, direct.Q) and np.array_equal(res.a, direct.a)
    slow = run(pb, st, Training(lr=0.01, lr_second=0.002, **kw), engine=engine, seeds=3, seed=5)
    assert not np.array_equal(res.Q, slow.Q)
