"""Escape statistics under right censoring, scaling fits and theory exponents."""

import math

import numpy as np
import pytest
import scipy.stats

from sgdlab.analysis import (
    escape_from_result,
    escape_statistics,
    extrapolate_linear,
    fit_scaling,
    km_median,
    needs_log_correction,
    quantile_interval,
    signed_escape,
    smoothed_exponent,
    start_sign,
    theory_exponent,
    wilson_interval,
)
from sgdlab.result import Result


# ------------------------------------------------------------------ order statistics / censoring
def test_median_is_ceil_half_order_statistic_without_censoring():
    assert escape_statistics([50, 10, 30, 20, 40], 100).median_step == 30
    # even n: the ceil(n/2)-th smallest (lower median), not the midpoint average
    assert escape_statistics([40, 10, 30, 20], 100).median_step == 20
    assert escape_statistics([0, 0, 7], 10).median_step == 0  # escape at the start counts


def test_censored_seeds_are_at_infinity_not_dropped_nor_horizon():
    esc = [5, 1, 9, 3, 7, 2, -1, -1, -1, -1]  # 4 of 10 censored at the horizon 100
    st = escape_statistics(esc, 100)
    assert st.n == 10 and st.n_escaped == 6 and st.n_censored == 4
    assert st.median_step == 7  # 5th smallest of (1, 2, 3, 5, 7, 9, inf x 4)
    dropped = np.median([5, 1, 9, 3, 7, 2])  # what dropping censored seeds would give
    assert dropped < st.median_step
    assert st.fraction_escaped == 0.6


def test_exactly_half_escaped_gives_largest_escape_and_fewer_gives_inf():
    st = escape_statistics([5, 1, 9, 3, 7, -1, -1, -1, -1, -1], 100)
    assert st.median_step == 9
    st = escape_statistics([5, 1, 9, 3, -1, -1, -1, -1, -1, -1], 100)
    assert st.median_step == math.inf and not st.median_defined
    assert st.median_step_ci[1] == math.inf
    assert st.to_dict()["median_step"] is None


def test_kaplan_meier_with_early_censoring():
    # escapes at 1 and 3; two seeds censored at step 2 (e.g. diverged); one at the horizon.
    # KM: S(1) = 4/5, S(3) = 4/5 * (1 - 1/2) = 0.4 -> median 3 (only 2 of 5 escaped).
    times = [1, 2, 2, 3, 100]
    escaped = [True, False, False, True, False]
    assert km_median(times, escaped) == 3
    st = escape_statistics([1, -1, -1, 3, -1], 100, censor_steps=[-1, 2, 2, -1, -1])
    assert st.median_step == 3
    # the same seeds all censored at the horizon: fewer than half escaped
    assert escape_statistics([1, -1, -1, 3, -1], 100).median_step == math.inf


def test_km_median_matches_order_statistic_for_horizon_censoring():
    rng = np.random.default_rng(3)
    for _ in range(50):
        n = int(rng.integers(1, 30))
        e = rng.integers(0, 100, n)
        e[rng.random(n) < 0.4] = -1
        times = np.where(e >= 0, e, 1000)
        x = np.sort(np.where(e >= 0, e, np.inf))
        assert km_median(times, e >= 0) == x[(n + 1) // 2 - 1]


def test_units_samples_and_t():
    st = escape_statistics([10, 20, 30], 100, batch=4, d=8)
    assert st.median_step == 20 and st.median_samples == 80 and st.median_t == 10
    assert st.median_samples_ci == (st.median_step_ci[0] * 4, st.median_step_ci[1] * 4)
    assert escape_statistics([10, 20, 30], 100).median_t is None


def test_input_validation():
    with pytest.raises(ValueError):
        escape_statistics([], 10)
    with pytest.raises(ValueError):
        escape_statistics([-2, 3], 10)
    with pytest.raises(ValueError):
        escape_statistics([11], 10)


# ------------------------------------------------------------------ bootstrap CI
def _exp_sample(rng, n, scale):
    x = np.round(rng.exponential(scale, n)).astype(np.int64)
    return x, int(x.max()) + 1


def test_bootstrap_ci_has_binomial_width_and_nominal_coverage():
    rng = np.random.default_rng(0)
    n, scale = 400, 10_000.0
    true_median = scale * math.log(2.0)
    x, horizon = _exp_sample(rng, n, scale)
    st = escape_statistics(x, horizon, seed=1)
    lo, hi = st.median_step_ci
    assert lo <= st.median_step <= hi
    # asymptotic distribution-free CI: order statistics of ranks n/2 -+ z sqrt(n)/2
    z = scipy.stats.norm.ppf(0.975)
    xs = np.sort(x)
    j = int(math.floor(n / 2 - z * math.sqrt(n) / 2))
    k = int(math.ceil(n / 2 + z * math.sqrt(n) / 2))
    ref = xs[k - 1] - xs[j - 1]
    assert 0.6 < (hi - lo) / ref < 1.6
    # deterministic given the seed
    assert escape_statistics(x, horizon, seed=1).median_step_ci == st.median_step_ci
    # coverage of the true median over independent samples is close to 95%
    reps, hits = 200, 0
    for r in range(reps):
        x, horizon = _exp_sample(rng, n, scale)
        lo, hi = escape_statistics(x, horizon, n_boot=500, seed=r).median_step_ci
        hits += lo <= true_median <= hi
    assert 0.88 <= hits / reps <= 0.99


def test_bootstrap_upper_bound_infinite_near_half_censored():
    # 11 of 20 escaped: the median is finite but many resamples have fewer than half escaped
    e = np.array(list(range(1, 12)) + [-1] * 9)
    st = escape_statistics(e, 100)
    assert st.median_step == 10
    assert st.median_step_ci[1] == math.inf
    assert math.isfinite(st.median_step_ci[0])


def test_wilson_interval():
    lo, hi = wilson_interval(6, 10)
    assert lo < 0.6 < hi
    assert abs(lo - 0.3127) < 1e-3 and abs(hi - 0.8318) < 1e-3  # standard table values
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and 0.2 < hi < 0.35


# ------------------------------------------------------------------ Result helpers
def _result(M0, steps, escape, diverged=None):
    M = np.asarray(M0, dtype=float)[:, :, None, None]
    S, R = M.shape[:2]
    Q = np.ones((S, R, 1, 1)) * 4.0  # |w|^2 = 4: the normalised overlap is M / 2
    return Result(
        engine="test",
        d=10,
        batch=2,
        steps=np.asarray(steps),
        M=M * 2.0,
        Q=Q,
        a=np.ones((S, R, 1)),
        risk=np.zeros((S, R)),
        escape_step=np.asarray(escape),
        diverged_step=np.asarray(diverged if diverged is not None else [-1] * S),
        seeds=np.arange(S),
    )


def test_signed_escape_and_start_sign():
    res = _result(
        [[0.1, 0.3, 0.6, 0.7], [-0.1, -0.3, -0.6, -0.2], [0.0, 0.1, 0.2, 0.3]],
        [0, 10, 20, 30],
        [15, 17, -1],
    )
    nan = np.nan
    np.testing.assert_array_equal(signed_escape(res, 0.5, +1), [20, nan, nan])
    np.testing.assert_array_equal(signed_escape(res, 0.5, -1), [nan, 20, nan])
    np.testing.assert_array_equal(signed_escape(res, 0.5, None), [20, 20, nan])
    assert start_sign(res).tolist() == [1, -1, 0]
    with pytest.raises(ValueError):
        signed_escape(res, 0.5, 2)


def test_escape_from_result_uses_exact_steps_and_divergence_censoring():
    res = _result(np.zeros((5, 3)), [0, 50, 100], [1, -1, -1, 3, -1], diverged=[-1, 2, 2, -1, -1])
    st = escape_from_result(res)
    assert st.horizon == 100 and st.median_step == 3 and st.median_samples == 6
    st = escape_from_result(res, mask=[True, False, False, True, True])
    assert st.n == 3 and st.median_step == 3


# ------------------------------------------------------------------ scaling fits
def _synthetic(law, noise=0.05, seed=0):
    rng = np.random.default_rng(seed)
    ds = np.array([100, 200, 400, 800, 1600, 3200, 6400], dtype=float)
    med = law(ds) * np.exp(noise * rng.standard_normal(ds.size))
    half = 1.96 * noise
    return ds, med, med * np.exp(-half), med * np.exp(half)


def test_fit_scaling_recovers_slope_two():
    ds, med, lo, hi = _synthetic(lambda d: 3.0 * d**2)
    fit = fit_scaling(ds, med, lo, hi)
    assert fit.n == 7 and fit.weighted
    assert fit.ci[0] < 2.0 < fit.ci[1] and fit.ci[1] - fit.ci[0] < 0.3
    assert fit.ci_boot[0] < 2.0 < fit.ci_boot[1]
    assert abs(fit.intercept - math.log(3.0)) < 0.5
    assert set(fit.to_dict()) >= {"slope", "ci", "intercept", "stderr", "n"}
    # exact data without intervals: OLS returns the slope exactly
    exact = fit_scaling(ds, 3.0 * ds**2)
    assert abs(exact.slope - 2.0) < 1e-10 and exact.ci_boot is None


def test_fit_scaling_log_correction_recovers_d_log_d():
    ds, med, lo, hi = _synthetic(lambda d: 5.0 * d * np.log(d), noise=0.02, seed=1)
    fit = fit_scaling(ds, med, lo, hi, log_correction=True)
    assert fit.ci[0] < 1.0 < fit.ci[1] and abs(fit.slope - 1.0) < 0.05
    plain = fit_scaling(ds, med, lo, hi)
    assert plain.slope > 1.1  # without the correction the log shows up in the slope


def test_fit_scaling_drops_infinite_medians_and_weights_infinite_intervals_zero():
    ds, med, lo, hi = _synthetic(lambda d: d**3, noise=0.01)
    med = med.copy()
    med[-1] = np.inf
    hi = hi.copy()
    hi[0] = np.inf
    lo_ = lo.copy()
    med[0] *= 50.0  # an outlier carrying no weight
    fit = fit_scaling(ds, med, lo_, hi)
    assert fit.dropped == (6,)
    assert abs(fit.slope - 3.0) < 0.05
    with pytest.raises(ValueError):
        fit_scaling([100.0, 200.0], [np.inf, np.inf])


# ------------------------------------------------------------------ exponents
def test_theory_and_smoothed_exponents():
    assert [theory_exponent(k) for k in (1, 2, 3, 4, 5)] == [1, 1, 2, 3, 4]
    assert [needs_log_correction(k) for k in (1, 2, 3)] == [False, True, False]
    assert [smoothed_exponent(k) for k in (1, 2, 3, 4, 6)] == [1, 1, 1.5, 2, 3]
    with pytest.raises(ValueError):
        theory_exponent(0)


# ------------------------------------------------------------------ quantiles and extrapolation
def test_quantile_interval_order_statistics_and_censoring():
    """The q-quantile is the ceil(n q)-th order statistic (inverted CDF, no interpolation);
    censored seeds (NaN, inf) sit above every escape, so a quantile past the escaped fraction is
    inf and so is the upper end of an interval that reaches the censored seeds. Catches an
    interpolating quantile, censored seeds dropped (which would move every quartile down)."""
    x = np.arange(1.0, 101.0)  # 1..100
    r = quantile_interval(x, 0.25)
    assert r["value"] == 25.0 and r["lo"] < 25.0 < r["hi"] and r["n"] == 100
    y = np.where(x > 70, np.nan, x)  # 30% censored
    assert quantile_interval(y, 0.5)["value"] == 50.0
    assert math.isinf(quantile_interval(y, 0.75)["value"])
    assert math.isinf(quantile_interval(np.where(x > 76, np.inf, x), 0.75)["hi"])
    with pytest.raises(ValueError, match="q: got 1.5"):
        quantile_interval(x, 1.5)


def test_quantile_interval_coverage_and_se():
    """Over 2000 samples of 200 exponential times the 95% intervals of the three quartiles cover
    the true quartile with frequency 0.95 within 4 binomial standard errors (the order-statistic
    interval is conservative by at most ~1%), and the se matches the spread of the sample
    quartile (asymptotic sqrt(q (1 - q) / n) / f(x_q)) within 15%. Catches ranks from the wrong
    binomial quantiles (a 68% or 99% interval) and an se off by the factor 2 z."""
    rng = np.random.default_rng(3)
    reps, n = 2000, 200
    for q in (0.25, 0.5, 0.75):
        true = -math.log(1 - q)
        rows = [quantile_interval(rng.exponential(size=n), q) for _ in range(reps)]
        cover = np.mean([r["lo"] <= true <= r["hi"] for r in rows])
        assert abs(cover - 0.95) < 4 * math.sqrt(0.95 * 0.05 / reps) + 0.01, (q, cover)
        se_theory = math.sqrt(q * (1 - q) / n) / (1 - q)  # f(x_q) = 1 - q for Exp(1)
        assert np.mean([r["se"] for r in rows]) == pytest.approx(se_theory, rel=0.15)
        assert np.std([r["value"] for r in rows]) == pytest.approx(se_theory, rel=0.15)


def test_extrapolate_linear_recovers_intercept_with_calibrated_errors():
    """A line a + b d^{-1/2} sampled with known errors at 5 d: over 2000 noisy draws the
    intercept is unbiased (within 4 standard errors of the mean) and its reported se equals
    the scatter of the estimates within 10%; the 95% interval covers a with frequency between
    0.935 and 0.985 (conservative only through the sqrt(chi2/dof) inflation when the scatter
    exceeds the errors). Catches the slope's se reported for the intercept, an se missing the
    weights, a t-interval on known errors (coverage 0.999)."""
    rng = np.random.default_rng(4)
    d = np.array([64.0, 128, 256, 512, 1024])
    x, se = d**-0.5, np.full(5, 0.3)
    a, b = 10.0, -25.0
    fits = [extrapolate_linear(x, a + b * x + se * rng.standard_normal(5), se) for _ in range(2000)]
    est = np.array([f["intercept"] for f in fits])
    assert abs(est.mean() - a) < 4 * est.std() / math.sqrt(len(est))
    exact = extrapolate_linear(x, a + b * x, se)  # zero residuals: the propagated se, no inflation
    assert exact["intercept"] == pytest.approx(a) and exact["slope"] == pytest.approx(b)
    assert exact["intercept_se"] == pytest.approx(est.std(), rel=0.1)
    cover = np.mean([f["intercept_ci"][0] <= a <= f["intercept_ci"][1] for f in fits])
    assert 0.935 < cover < 0.985, cover
    wide = extrapolate_linear(x, a + b * x + np.array([1.0, -1, 1, -1, 1]), se)
    assert wide["chi2_red"] > 1 and wide["intercept_se"] > exact["intercept_se"]
    with pytest.raises(ValueError, match="at least 2 points"):
        extrapolate_linear([0.1, 0.2], [1.0, math.inf], [0.1, 0.1])
