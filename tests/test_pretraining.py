"""``sgdlab reproduce pretraining --quick`` (Jones-McCormick, Jagannath, Sen 2025): the claims its
"done when" lists, on the quick grid (d = 40, 64; chain engine, fixed seeds)."""

import json
import math

import pytest

from sgdlab.reproduce import pretraining as R


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    return R.reproduce(quick=True, out=tmp_path_factory.mktemp("pretraining"))


def test_quick_writes_its_outputs(quick):
    """Figures, table and JSON with the [paper]/[prior]/[R] choices and the logged step rules."""
    names = {p.name for p in quick.files}
    assert {"scaling.png", "trajectories.png", "bbp.png", "phase.png", "table.md", "results.json"} <= names
    data = json.loads((quick.out / "results.json").read_text())
    assert data["engine"] == "chain" and data["choices"]["R"] and data["wall_time_s"] > 0
    assert data["calibration"]["random"]["check_lambda0"]["escaped_within_budget"]
    assert "[R]" in (quick.out / "table.md").read_text()


def test_quick_pca_overlap_matches_bbp(quick):
    """Above the threshold the finite-d PCA overlap is within 4 SE + 0.03 of the BBP limit (the
    finite-d bias at n' = 256, measured below 0.02); below it, near 0 (< 0.1 at n' = 256,
    d = 1024: the finite-d overlap is O(1/sqrt(n')) there). Planted bug caught: the overlap
    with w* (m^2) reported instead of the overlap with v (0.12 vs 0.6 at lambda = 1)."""
    for row in quick.summary["part3_bbp"]:
        if row["above_threshold"]:
            assert abs(row["overlap2"] - row["bbp_overlap2"]) < 4 * row["overlap2_se"] + 0.03, row
        else:
            assert row["overlap2"] < 0.1, row


def test_quick_lambda0_pca_start_is_a_random_start(quick):
    """At lambda = 0 the PCA start's m^2 has the Beta(1/2, (d-1)/2) law of a uniform start (KS;
    the sign, uniform in PCA(sign="random"), is tested in tests/test_pca.py). Planted bug caught
    (tests/test_pca.py, by hand): no orthogonal Wishart part (KS p = 0)."""
    z = quick.summary["part3_lambda0"]
    assert z["ks_pvalue_m2_vs_uniform"] > 1e-3


def test_quick_pca_escapes_in_order_d_and_beats_random(quick):
    """Most PCA seeds escape at every d of the grid (at d = 40 a quarter of the seeds start inside
    the origin's basin: 25/32 measured), with a median below 1000 d samples (the
    flow's 170 d at delta_w, times a margin) and below the random start's median at that d
    (95% intervals apart at d = 64).
    Planted bug caught: a PCA start with a random sign (half the seeds stall)."""
    p1 = quick.summary["part1_scaling"]["series"]
    rnd = {r["d"]: r for r in p1["random"]}
    for row in p1["pca"]:
        assert row["n_escaped"] >= 0.7 * row["n_seeds"], row
        assert row["median"] < 1000 * row["d"], row
        if row["d"] in rnd and rnd[row["d"]]["median"] is not None:
            assert row["median"] < rnd[row["d"]]["median"], (row, rnd[row["d"]])
    big = max(rnd)  # at the largest d of the grid the 95% intervals are apart
    row = next(r for r in p1["pca"] if r["d"] == big)
    assert row["median_hi"] < rnd[big]["median_lo"], (row, rnd[big])


def test_quick_ode_follows_the_chain_mean_from_a_pca_start(quick):
    """The ODE from the chain's mean PCA start stays within 5 standard errors of the chain's
    mean m at every record (d = 64, 32 seeds). Planted bug caught: the ODE without the lr^2
    corrector (the escape runs ahead: > 10 SE)."""
    z = quick.summary["part2_trajectories"]["ode_vs_chain"]["pca"]["max_z"]
    assert z is not None and math.isfinite(z) and z < 5.0
