"""``sgdlab reproduce fourier --quick``: its outputs and the claims of its summary.

A module of its own (split from ``test_fourier.py``, the data model's tests) because the quick
reproduction's time is spent running the full d-dimensional engine, which XLA's default
optimisation level runs faster, while the data model's tests are compile-bound and the test
runner gives them level 0 (``tests/run_suite.py``, ``RUNTIME_BOUND``).
"""

import json

import pytest

from sgdlab.reproduce import fourier as R


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    root = tmp_path_factory.mktemp("fourier")
    return R.reproduce(quick=True, store=root / "store", out=root / "out")


def test_quick_reproduction_writes_its_outputs(quick):
    names = {p.name for p in quick.files}
    assert {"scaling.png", "amplitude_phase.png", "spectra.png", "table.md", "results.json"} <= names
    data = json.loads((quick.out / "results.json").read_text())
    assert data["engine"] == "full" and data["choices"]["R"] and data["wall_time_s"] > 0
    assert "[R]" in (quick.out / "table.md").read_text()


def test_quick_flat_spectrum_slope_is_in_the_log_factor_band(quick):
    """alpha = 0, N = 16..40, 64 seeds: the slope of log median samples to above-chance accuracy
    against log N lies in the band from 3 (N^3) to the local slope of N^3 log^2 N at the smallest N
    (3 + 2 / ln 16 = 3.72), widened by two standard errors of the fit (measured 3.33, SE 0.24:
    band [2.5, 4.2]); the fit's SE is below 0.5, so the band is not vacuous. Planted bugs caught
    (measured with the same seeds): classes that also differ in amplitudes (noise alpha = 0.2, a
    second-order problem: slope 2.16, SE 0.11), a structured class equal to noise (no median). The
    prefactor median / N^3 must lie in [0.2, 2] at every N (measured 0.43-0.79 for N = 16..96 in the
    full run): this catches the full template, every frequency coherent (slope 2.2 +- 0.4, inside the
    band, but median / N^3 ~ 0.005)."""
    f = quick.summary["part1_flat"]["fit_power_law"]
    assert f["slope"] is not None and f["stderr"] < 0.5, f
    lo, hi = quick.summary["part1_flat"]["log_factor_band"]
    assert lo - 2 * f["stderr"] <= f["slope"] <= hi + 2 * f["stderr"], f
    for row in quick.summary["part1_flat"]["series"]:
        assert row["n_crossed"] >= 0.9 * row["n_seeds"], row
        assert 0.2 <= row["median_over_N3"] <= 2.0, row


def test_quick_power_law_spectrum_learns_faster_at_the_largest_n(quick):
    """alpha = 1 at N = 40: the median samples' 95% interval lies below that of alpha = 0 (measured
    3.9e3 vs 4.0e4). Planted bug: a spectrum that ignores alpha (the same law as alpha = 0)."""
    fa = quick.summary["faster_at_largest_N"]["alpha=1"]
    assert fa["N"] == 40 and fa["faster"], fa


def test_quick_amplitudes_are_learnt_before_phases(quick):
    """N = 32, four units, structured alpha = 0 vs noise alpha = 0.4: the amplitude probe
    (phase-scrambled inputs) crosses the threshold before the phase probe (amplitudes set to alpha
    = 0.2) in at least 3/4 of the seeds (measured: all 16). Planted bugs: probes swapped (the phase
    probe built by phase scrambling), a phase probe that keeps the class amplitudes."""
    p3 = quick.summary["part3_amplitude_before_phase"]
    assert p3["fraction_amplitude_first"] >= 0.75, p3
    assert p3["stats"]["amplitude_probe"]["median"] < p3["stats"]["phase_probe"]["median"], p3
