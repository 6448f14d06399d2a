"""`sgdlab reproduce ... --quick`: the reproductions end to end, with their physics asserted.

Both quick runs use fixed seeds, so they are deterministic; the tolerances are the fits' own
95% confidence intervals (t-intervals over 4 dimensions, about +-0.1 for k <= 2 and +-0.4
for k = 3 at these seed counts), widened only by the finite-d bias that theory predicts.
"""

import json
import math

import pytest
from typer.testing import CliRunner

from sgdlab.cli import app
from sgdlab.reproduce import info_exponent, smoothing


@pytest.fixture(scope="module")
def info(tmp_path_factory):
    root = tmp_path_factory.mktemp("info")
    out = info_exponent.reproduce(quick=True, store=root / "store", out=root / "out")
    return out


@pytest.fixture(scope="module")
def smooth(tmp_path_factory):
    root = tmp_path_factory.mktemp("smooth")
    return smoothing.reproduce(quick=True, store=root / "store", out=root / "out")


def test_info_exponent_outputs(info):
    names = {p.name for p in info.files}
    assert {"scaling.png", "trajectories.png", "sde_quartiles.png", "table.md", "results.json"} <= names
    data = json.loads((info.out / "results.json").read_text())
    assert set(data["series"]) == {"h1", "h2", "h3"}
    assert set(data["sde"]["not_covered"]) == {"h1", "h2"} and data["sde"]["reconstructed"]
    assert data["wall_time_s"] > 0 and data["device"]
    assert "Fitted exponents" in (info.out / "table.md").read_text()


def test_info_exponent_medians_are_defined(info):
    """Every point ran until 70% of its seeds escaped (stop_fraction), so every median and
    its interval are finite."""
    for s in info.summary["series"].values():
        for p in s["points"]:
            assert p["fraction_escaped"] >= 0.7, p
            assert p["median_samples_lo"] <= p["median_samples"] <= p["median_samples_hi"], p


def test_info_exponent_slopes_match_theory(info):
    """The fitted exponent of each link agrees with the finite-d theory (the effective
    dynamics from m0 = d^{-1/2}, fitted over the same d) within its 95% CI, and with the
    asymptotic exponent (1, 1 with log d, 2) within the CI widened by the gap between the
    two (the slowly converging start-up integral for k <= 2)."""
    for link, s in info.summary["series"].items():
        fit = s["fit"]
        lo, hi = fit["ci"]
        assert fit["effective_in_ci"], (link, fit)
        bias = abs(fit["effective_slope"] - fit["theory"])
        assert lo - bias <= fit["theory"] <= hi + bias, (link, fit)
        assert hi - lo < (1.2 if s["k"] == 3 else 0.5), (link, fit)  # the CI is informative
    sl = {link: s["fit"]["slope"] for link, s in info.summary["series"].items()}
    assert sl["h3"] - max(sl["h1"], sl["h2"]) > 0.6  # k = 3 is a different law


def test_info_exponent_batch_check(info):
    """Batch 1 and the series' batch (with the same per-sample step) need the same samples:
    their median intervals overlap."""
    rows = info.summary["batch_check"]
    assert {r["batch"] for r in rows} == {1, 4}
    a, b = rows
    assert a["median_samples_lo"] <= b["median_samples_hi"] and b["median_samples_lo"] <= a["median_samples_hi"]


def test_info_exponent_trajectories(info):
    """From m0 = d^{-1/2}: the median escape of the chain and of the full simulation agree
    within the spread of seeds, and the ODE's escape lies within a factor 2 of them (the
    mean dynamics is not the law of the escape time, Ben Arous, Gheissari, Jagannath 2021)."""
    t = info.summary["trajectory"]
    chain, full, ode = (t[e]["median_escape_samples"] for e in ("chain", "full", "ode"))
    assert chain and full and ode
    assert 0.5 < full / chain < 2.0
    assert 0.5 < ode / chain < 2.0


def test_info_exponent_is_cached(info):
    """A second call reads every run back from the store: same numbers, no recomputation."""
    root = info.out.parent
    again = info_exponent.reproduce(quick=True, store=root / "store", out=root / "again", workers=1)
    assert again.summary["series"] == info.summary["series"]
    assert again.summary["wall_time_s"] < 60


def test_info_exponent_sde_scaling(info):
    """The SDE points of the scaling figure (h3, 500 paths; the same Brownian paths at every d):
    median samples / d^2 agrees at d = 1e5 and 1e8 to 1% (there mu1 = sqrt(d)/2 >= 158 and the
    law of s no longer depends on d) and the exponent fitted over them is 2 to 0.01; at d = 64
    the SDE's median interval overlaps the chain series'. Catches escape samples not scaled by
    d^{k-1}, a batch factor in delta' = lr d^{k/2} / batch or in the steps per unit of s (each
    moves the SDE medians off d^2, or off the chain's, by a factor d/4), and SDE points missing
    from the figure's data."""
    sde = info.summary["sde"]
    rows = {r["d"]: r for r in sde["scaling"]["h3"]}
    assert set(rows) == {16, 64, 10**5, 10**8}
    a, b = rows[10**5]["median_s"], rows[10**8]["median_s"]
    assert a == pytest.approx(b, rel=0.01)
    assert sde["scaling_fit"]["h3"]["slope"] == pytest.approx(2.0, abs=0.01)
    chain = next(p for p in info.summary["series"]["h3"]["points"] if p["d"] == 64)
    assert rows[64]["median_samples_lo"] <= chain["median_samples_hi"]
    assert chain["median_samples_lo"] <= rows[64]["median_samples_hi"]
    assert all(r["dt_max_change_in_se"] < 1.0 for r in rows.values())  # step-size converged


def test_info_exponent_sde_quartiles(info):
    """h3 at d = 16 and 64 (the quick series' own chain runs, 96 seeds, so q25 and the median
    only): at each d the chain's quartiles lie within 3 combined standard errors of the SDE's
    at the same d; the chain's lower quartile moves toward the SDE's d -> infinity value (SDE at
    d = 1e12) by more than 2 combined standard errors from d = 16 to 64; and the chain's d^{-1/2}
    extrapolation of q25 and the median is within 3 standard errors of that limit. Catches an
    SDE whose law is off the chain's by more than its finite-d correction (a drift, sphere or
    noise coefficient off by a constant factor moves the quartiles by many standard errors,
    tests/test_sde.py), a chain part that does not use the series' protocol, and a limit that
    still depends on the threshold mu1."""
    qs = info.summary["sde"]["quartiles"]
    assert qs["ds"] == [16, 64] and qs["sde_limit"]["d"] == 10**12
    for key in ("q25", "q50"):
        for z in qs["extrapolation"][key]["chain_minus_sde_same_d_in_se"]:
            assert abs(z) < 3.0, (key, qs["extrapolation"][key])
        assert abs(qs["extrapolation"][key]["gap_in_se"]) < 3.0, (key, qs["extrapolation"][key])
    lim = qs["sde_limit"]["q25"]
    c16, c64 = (c["q25"] for c in qs["chain"])
    gain = abs(c16["value"] - lim["value"]) - abs(c64["value"] - lim["value"])
    assert gain > 2.0 * math.hypot(c16["se"], c64["se"]), (c16, c64, lim)
    assert qs["chain"][0]["q75"]["value"] is None  # stop 0.7: the upper quartile is censored, not made up


def test_info_exponent_sde_part_merges_into_base(info, tmp_path):
    """``parts=["sde"]`` with ``base`` = an earlier results.json reads the SDE part back from the
    store and takes every other part from the base: the merged summary equals the full one
    part by part, the merge is recorded, and the trajectory figure (not drawable from a JSON) is
    not written. Bad parts and a base of another mode are refused with one-line errors."""
    from sgdlab.config import ConfigError

    root = info.out.parent
    m = info_exponent.reproduce(quick=True, store=root / "store", out=tmp_path / "m", workers=1, parts=["sde"],
                                base=info.out / "results.json")
    for key in ("series", "batch_check", "trajectory", "sde"):
        assert m.summary[key] == info.summary[key], key
    assert m.summary["merged"]["parts_from_base"] == ["series", "batch", "trajectory"]
    assert {p.name for p in m.files} == {"scaling.png", "sde_quartiles.png", "table.md", "results.json"}
    assert "Chain's d^{-1/2} extrapolation" in (tmp_path / "m" / "table.md").read_text()
    with pytest.raises(ConfigError, match="parts: got"):
        info_exponent.plan(quick=True, parts=["sde", "nope"])
    with pytest.raises(ConfigError, match="base: got .*allowed: the results.json of an info-exponent full run"):
        info_exponent.reproduce(quick=False, store=root / "store", out=tmp_path / "x", parts=["sde"],
                                base=info.out / "results.json")


def test_smoothing_slopes(smooth):
    """Smoothing lowers the exponent. For k = 3 and 4 the smoothed slope lies within its CI
    (widened by 0.25 for the finite-lambda corrections seen on the chain at d = 64..1024) of
    k/2; at the largest d both series share, smoothing needs fewer samples (disjoint 95%
    intervals). For k = 3 the vanilla-minus-smoothed slope is positive at one-sided 95%
    (gap - 1.645 se > 0; theory 0.5). For k = 4 the quick dimensions (32..128) are too small
    for vanilla to show d^3 (its effective dynamics gives a slope near 2.6 there), so only
    the full run measures that gap."""
    s = smooth.summary
    for label, ser in s["series"].items():
        for p in ser["points"]:
            assert p["fraction_escaped"] >= 0.7, (label, p)
        if ser["smoothed"]:
            lo, hi = ser["fit"]["ci"]
            assert lo - 0.25 <= ser["k"] / 2 <= hi + 0.25, (label, ser["fit"])
    for link, g in s["slope_gap"].items():
        at = g["largest_common_d"]
        assert at["vanilla"][1] > at["smoothed"][2], (link, at)  # vanilla CI low > smoothed CI high
        assert math.isfinite(g["gap"])
    assert s["slope_gap"]["h3"]["lower_one_sided_95"] > 0, s["slope_gap"]["h3"]


def test_reproduce_cli_errors(tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["reproduce", "nope"])
    assert r.exit_code == 2 and "NAME: got 'nope'; allowed: info-exponent, smoothing, batch-size" in r.output
    r = runner.invoke(app, ["reproduce", "info-exponent", "--engine", "ode", "--store", str(tmp_path)])
    assert r.exit_code == 2 and "--engine: got 'ode'; allowed: chain or full" in r.output
    r = runner.invoke(app, ["reproduce", "smoothing", "--parts", "sde", "--store", str(tmp_path)])
    assert r.exit_code == 2 and "--parts/--base: got them for 'smoothing'; allowed: only with info-exponent" in r.output
    r = runner.invoke(app, ["reproduce", "info-exponent", "--quick", "--parts", "sde,x", "--dry-run"])
    assert r.exit_code == 2 and "parts: got ['sde', 'x']; allowed:" in r.output
    r = runner.invoke(app, ["reproduce", "smoothing", "--links", "h3"])
    assert r.exit_code == 2 and "--links" in r.output
