"""`sgdlab reproduce batch-size` (Arnaboldi et al. 2024): the quick
reproduction end to end with its physics asserted, and the ODE against the chain across batch
sizes (the d/n_b noise factor and the (1 - 1/n_b) squared-mean term).

Every stochastic number comes from fixed seeds, so the tests are deterministic; tolerances are
the fits' own 95% intervals or a number of standard errors of the mean over seeds.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from sgdlab import ODE, Chain, Problem, Student, Training, run
from sgdlab.reproduce import batch_size


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    return batch_size.reproduce(quick=True, store=root / "store", out=root / "out")


def test_outputs(quick):
    names = {p.name for p in quick.files}
    assert {"batch.png", "phase.png", "committee.png", "table.md", "results.json"} <= names
    data = json.loads((quick.out / "results.json").read_text())
    assert data["reproduction"] == "batch-size" and data["wall_time_s"] > 0
    assert "Slope of log T" in (quick.out / "table.md").read_text()


def test_iterations_fall_as_one_over_batch_below_the_knee(quick):
    """Square loss, h3, d = 64, n_b = 4..256 on the optimal line gamma = delta n_b d^{-3/2}:
    T ~ d^2 / n_b, so the log-log slope is -1. The assertion is that -1 lies in the fit's 95%
    t-interval (4 batches, 48 seeds: half-width about 0.3, from per-point bootstrap intervals
    of the median of about a factor 2), and that the interval is informative (narrower than
    0.8, so a slope of -1/2 or 0 would be excluded). Catches a batch-mean gradient that is
    summed instead of averaged (slope -2 at fixed gamma/n_b), or a per-step noise that does
    not shrink with n_b (the larger batches would not escape)."""
    fit = quick.summary["fits"]["h3/d=64/square"]
    lo, hi = fit["ci"]
    assert fit["n_points"] >= 4
    assert lo <= -1.0 <= hi, fit
    assert hi - lo < 0.8, fit
    for r in quick.summary["points"]:
        if r["loss"] == "square" and r["batch"] in fit["batches"]:
            assert r["fraction_escaped"] >= 0.7, r  # every fitted median is defined


def test_square_plateaus_and_correlation_keeps_speeding_up(quick):
    """Beyond the knee (n_b = 8192 >> d^{3/2} = 512 at d = 64): plain SGD on the optimal line
    (gamma = 0.5 > 1/3, where the projected square-loss step flips the row) does not learn,
    and over every step tried at that batch (series and phase diagram) the fastest
    correlation-loss run beats the fastest square-loss run with disjoint 95% intervals of the
    median T (measured: 2 [2, 3] at gamma = 4 against 12 [9, 17] at the cap gamma = 1/6)."""
    b = quick.summary["beyond_knee"][0]
    assert b["batch"] == 8192
    assert b["square_line_learned"] is False, b
    assert b["best_T_correlation_ci"][1] < b["best_T_square_ci"][0], b


def test_large_batch_correlation_learns_square_does_not(quick):
    """Part (c): h3, d = 32, n_b = 16384 (45 d^{3/2}), per-neuron step on the optimal line
    (gamma = 2.8, above the flip 1/a = 1/3 for p = 1 and p/a = 4/3 for p = 4): for both widths
    the correlation loss reaches m = 0.5 for at least half of the seeds and the square loss for
    at most 10%."""
    lb = quick.summary["large_batch"]
    assert lb["pass"] is True, lb["points"]
    assert {(r["width"], r["loss"]) for r in lb["points"]} == {(p, loss) for p in (1, 4)
                                                                 for loss in ("square", "correlation")}


def test_phase_diagram_square_fails_above_the_cap(quick):
    """Every phase-diagram point of the square loss with gamma > 1/a = 1/3 is not learned; the
    correlation loss learns at some such point."""
    rows = quick.summary["phase"]["points"]
    big = [r for r in rows if r["lr"] > 1 / 3]
    assert big
    assert not any(r["learned"] for r in big if r["loss"] == "square"), big
    assert any(r["learned"] for r in big if r["loss"] == "correlation"), big


def test_committee_ode_matches_chain_in_the_reproduction(quick):
    """Part (d): in both regimes the ODE lies within 5 standard errors of the chain mean at
    every record (risk, M, Q), up to the unspecialised plateau."""
    for name, r in quick.summary["committee"]["regimes"].items():
        for q in ("risk", "M", "Q"):
            assert r[f"max_z_{q}"] < 5, (name, q, r)


# --------------------------------------------------------------------------------------
# ODE vs chain across batch sizes
# --------------------------------------------------------------------------------------

ETA = 0.5  # per-sample step times d: lr = ETA * n_b / d
TAU = 2.0  # horizon in lr x steps
SEEDS = 300


def _dim(batch: int) -> int:
    """d grows with n_b so that lr = ETA n_b / d stays <= 1e-3: the ODE is continuous in the
    step count, its gap to the discrete chain has an O(lr) part (at d = 2048, n_b = 64 it
    reaches 9 standard errors by lr x steps = 2). The chain's cost does not depend on d."""
    return 2048 * max(1, batch // 4)


def _committee(batch: int, ode_batch: int | None = None):
    d = _dim(batch)
    lr = ETA * batch / d
    pb = Problem(d=d, link="erf", directions=2)
    st = Student(width=2, activation="erf", output_scale="sum")
    steps = int(round(TAU / lr))
    tr = Training(lr=lr, batch=batch, steps=steps, init=0.1, record_every=max(1, steps // 8))
    ode_tr = tr if ode_batch is None else Training(lr=lr, batch=ode_batch, steps=steps, init=0.1,
                                                   record_every=max(1, steps // 8))
    return pb, st, tr, ode_tr


@pytest.mark.parametrize("batch", [1, 8, 64])
def test_ode_is_the_mean_of_the_chain_at_every_batch(batch):
    """Erf soft committee (p = r = 2), plain SGD, start M = 0.1, per-sample step 0.5/d
    (lr = 0.5 n_b / d), horizon lr x steps = 2 (before the plateau): the chain's mean M, Q and
    risk over 300 seeds lie within 5 standard errors of the ODE at every record (about 50
    comparisons per batch: the largest |z| of pure noise is about 3). The noise term
    lr^2 (d/n_b) E[c c^T] is half the size of the drift at every batch (lr d/n_b = 0.5), so a
    wrong d/n_b factor shows at n_b = 8 and 64 (and a missing lr^2 term at n_b = 1, cf.
    tests/test_ode.py). The ODE uses 12 Gauss-Hermite nodes per axis: with 8 its erf
    quadrature bias (a relative 1e-3 of the velocity) is 5 standard errors of Q at n_b = 64."""
    pb, st, tr, _ = _committee(batch)
    ode = run(pb, st, tr, engine=ODE(nodes=12))
    ch = run(pb, st, tr, engine=Chain(), seeds=SEEDS, seed=5)
    for name in ("M", "Q", "risk"):
        x = getattr(ch, name)
        mean, se = x.mean(axis=0), x.std(axis=0) / math.sqrt(SEEDS) + 1e-12
        z = np.abs(getattr(ode, name)[0] - mean) / se
        assert z[1:].max() < 5, (batch, name, float(z[1:].max()))


def test_ode_with_the_wrong_batch_misses_the_chain():
    """The same comparison at n_b = 64 with an ODE built for batch 1 at the same lr (noise
    factor d instead of d/n_b, no squared-mean term): Q_00 at the end misses the chain mean by
    more than 20 standard errors. Guards the test above: it can see a batch-factor bug."""
    pb, st, tr, wrong = _committee(64, ode_batch=1)
    ode = run(pb, st, wrong, engine=ODE(nodes=12))
    ch = run(pb, st, tr, engine=Chain(), seeds=SEEDS, seed=5)
    q = ch.Q[:, -1, 0, 0]
    assert abs(ode.Q[0, -1, 0, 0] - q.mean()) > 20 * q.std() / math.sqrt(SEEDS)


def test_plan_shares_compilations_and_validates():
    """Phase-diagram runs reuse the horizon of the batch's reference run (same compiled
    program, only lr differs), and a bad engine is a one-line error."""
    spec, pts = batch_size.plan(quick=True)
    steps = {}
    for p in pts:
        if p.tags["part"] in ("batch", "phase"):
            key = (p.tags["d"], p.tags["batch"], p.tags["loss"])
            steps.setdefault(key, set()).add(p.config["train"]["steps"])
    assert all(len(v) == 1 for v in steps.values()), steps
    with pytest.raises(ValueError, match="--engine: got 'ode'"):
        batch_size.plan(engine="ode")
    assert batch_size.radial_coefficient("h3") == pytest.approx(3.0, rel=1e-10)
    assert batch_size.square_cap("h1") == pytest.approx(0.5, rel=1e-10)
