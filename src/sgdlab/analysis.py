r"""Statistics of escape (weak-recovery) times and their scaling with the dimension.

Escape times are right-censored: a seed that has not reached the threshold within the horizon
of ``horizon`` steps reports -1, meaning "escape time > horizon", not "no information" and not
"= horizon". Dropping censored seeds biases the median down; replacing them by the horizon
biases it down too. The median of a right-censored sample is nevertheless well defined by
the Kaplan–Meier estimator

.. math:: \hat S(t) = \prod_{t_i \le t} \Bigl(1 - \frac{e_i}{r_i}\Bigr), \qquad
          \hat t_{1/2} = \min\{t_i : \hat S(t_i) \le 1/2\},

(:math:`e_i` escapes at time :math:`t_i`, :math:`r_i` seeds still at risk), and it is finite as
soon as at least half of the seeds escaped. When every censored seed is censored at the common
horizon (after every observed escape), :math:`\hat S` is the empirical survival function and the
median is the :math:`\lceil n/2 \rceil`-th smallest escape time with the censored seeds placed
at :math:`+\infty`.

Conventions: escape step 0 means the threshold was already reached at
the start; time :math:`t = \text{samples}/d` with samples = step x batch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import scipy.stats

from .result import Result

__all__ = [
    "EscapeStats",
    "ScalingFit",
    "escape_from_result",
    "escape_statistics",
    "extrapolate_linear",
    "fit_scaling",
    "km_median",
    "needs_log_correction",
    "quantile_interval",
    "signed_escape",
    "smoothed_exponent",
    "start_sign",
    "theory_exponent",
    "wilson_interval",
]


def _json(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, tuple | list):
        return [_json(v) for v in x]
    if isinstance(x, np.generic):
        return _json(x.item())
    return x


# ------------------------------------------------------------------ escape statistics
def wilson_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    r"""Wilson score interval for a binomial proportion :math:`\hat p = k/n`:

    .. math:: \frac{\hat p + z^2/(2n) \pm z\sqrt{\hat p(1-\hat p)/n + z^2/(4n^2)}}{1 + z^2/n},
              \quad z = \Phi^{-1}\bigl(\tfrac{1 + \text{level}}{2}\bigr).
    """
    if n <= 0:
        return (0.0, 1.0)
    z = float(scipy.stats.norm.ppf(0.5 + level / 2.0))
    p = k / n
    den = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, centre - half), min(1.0, centre + half))


def km_median(times, escaped) -> float:
    r"""Kaplan–Meier median of right-censored times: the smallest event time with
    :math:`\hat S(t) \le 1/2` (``inf`` if :math:`\hat S` stays above 1/2).

    ``times[i]`` is the escape time when ``escaped[i]``, else the censoring time (the seed is
    known not to have escaped up to and including it; it is at risk for events at that time).
    """
    t = np.asarray(times, dtype=np.float64)
    e = np.asarray(escaped, dtype=bool)
    ev = np.sort(t[e])
    if ev.size == 0:
        return math.inf
    uniq, counts = np.unique(ev, return_counts=True)
    cens = np.sort(t[~e])
    # at risk at u: escapes at >= u plus censored at >= u
    at_risk = (ev.size - np.searchsorted(ev, uniq, side="left")) + (
        cens.size - np.searchsorted(cens, uniq, side="left")
    )
    S = np.cumprod(1.0 - counts / at_risk)
    hit = np.nonzero(S <= 0.5 + 1e-12)[0]
    return float(uniq[hit[0]]) if hit.size else math.inf


def _order_median(x: np.ndarray) -> np.ndarray:
    """ceil(n/2)-th smallest along the last axis (censored entries are +inf)."""
    n = x.shape[-1]
    r = (n + 1) // 2 - 1
    return np.partition(x, r, axis=-1)[..., r]


@dataclass(frozen=True)
class EscapeStats:
    r"""Summary of per-seed escape steps with right censoring at the horizon.

    ``median_step`` is the Kaplan–Meier median (``inf`` when fewer than half of the seeds
    escaped), ``median_step_ci`` its percentile-bootstrap interval from resampling seeds (upper
    end ``inf`` when more than :math:`(1-\text{level})/2` of the bootstrap samples have fewer than
    half escaped). ``median_samples`` = step x batch, ``median_t`` = samples / d (None without d).
    ``fraction_ci`` is the Wilson interval of ``fraction_escaped``.
    """

    n: int
    n_escaped: int
    horizon: int
    fraction_escaped: float
    fraction_ci: tuple[float, float]
    median_step: float
    median_step_ci: tuple[float, float]
    median_samples: float
    median_samples_ci: tuple[float, float]
    median_t: float | None
    median_t_ci: tuple[float, float] | None
    batch: int
    d: int | None
    level: float
    n_boot: int

    @property
    def n_censored(self) -> int:
        return self.n - self.n_escaped

    @property
    def median_defined(self) -> bool:
        return math.isfinite(self.median_step)

    def to_dict(self) -> dict:
        """JSON-ready dict (infinite values become None)."""
        return {k: _json(v) for k, v in asdict(self).items()} | {"n_censored": self.n_censored}


def escape_statistics(
    escape_steps,
    horizon: int,
    *,
    batch: int = 1,
    d: int | None = None,
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    censor_steps=None,
) -> EscapeStats:
    r"""Escape fraction and censoring-aware median escape time of a set of seeds.

    ``escape_steps[i]``: first step at which seed i reached the threshold (0: at the start),
    or NaN (as in ``Result.escape_step``; -1 is read the same) if it did not within ``horizon``
    steps (censored at ``horizon``). Optional ``censor_steps[i]`` (used only where seed i did
    not escape; NaN or negative: at the horizon) censors a seed earlier, e.g.
    at its divergence step; the median is then the general Kaplan–Meier median.

    Median: :func:`km_median`; with all censoring at the horizon it is the
    :math:`\lceil n/2\rceil`-th order statistic with censored seeds at :math:`+\infty`, and
    ``inf`` when fewer than :math:`\lceil n/2\rceil` seeds escaped. Its confidence interval
    resamples seeds with replacement (``n_boot`` times, ``numpy.random.default_rng(seed)``) and
    takes the :math:`(1\mp\text{level})/2` quantiles (inverted-CDF, no interpolation) of the
    bootstrap medians, infinite ones included.
    """
    e = np.asarray(escape_steps, dtype=np.float64).reshape(-1)
    n = int(e.size)
    if n == 0:
        raise ValueError("escape_steps: got an empty array; allowed: at least one seed")
    if np.any(e < -1) or np.any(np.isinf(e)):
        raise ValueError("escape_steps: values must be >= 0 (escape step), NaN or -1 (censored)")
    e = np.where(np.isnan(e), -1.0, e)
    horizon = int(horizon)
    if np.any(e > horizon):
        raise ValueError(f"escape_steps: an escape step exceeds the horizon {horizon}")
    if not (0 < level < 1):
        raise ValueError(f"level: got {level!r}; allowed: a number in (0, 1)")
    escaped = e >= 0
    times = np.where(escaped, e, horizon).astype(np.float64)
    early = False
    if censor_steps is not None:
        c = np.asarray(censor_steps, dtype=np.float64).reshape(-1)
        if c.size != n:
            raise ValueError("censor_steps: must have one entry per seed")
        c = np.where(np.isnan(c) | (c < 0), horizon, np.minimum(c, horizon))
        times = np.where(escaped, times, c)
        early = bool(np.any(~escaped & (c < horizon)))
    k = int(escaped.sum())
    median = km_median(times, escaped)

    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(int(n_boot), n))
    if early:
        boot = np.array([km_median(times[i], escaped[i]) for i in idx])
    else:
        x = np.where(escaped, times, np.inf)
        boot = _order_median(x[idx])
    a = (1.0 - level) / 2.0
    lo = float(np.quantile(boot, a, method="inverted_cdf"))
    hi = float(np.quantile(boot, 1.0 - a, method="inverted_cdf"))

    samples = (median * batch, (lo * batch, hi * batch))
    if d is not None:
        t = (samples[0] / d, (samples[1][0] / d, samples[1][1] / d))
    else:
        t = (None, None)
    return EscapeStats(
        n=n,
        n_escaped=k,
        horizon=horizon,
        fraction_escaped=k / n,
        fraction_ci=wilson_interval(k, n, level),
        median_step=median,
        median_step_ci=(lo, hi),
        median_samples=samples[0],
        median_samples_ci=samples[1],
        median_t=t[0],
        median_t_ci=t[1],
        batch=int(batch),
        d=None if d is None else int(d),
        level=float(level),
        n_boot=int(n_boot),
    )


def quantile_interval(times, q: float, level: float = 0.95) -> dict:
    r"""Sample ``q``-quantile of escape times and its distribution-free confidence interval.

    ``times[i]``: seed i's escape time, or NaN / ``inf`` when it did not escape (right-censored
    after every observed escape, as when a run ends at a common horizon or at
    ``stop_fraction``: the quantile is then the :math:`\lceil nq\rceil`-th order statistic,
    ``inf`` when fewer than that many seeds escaped). The interval is
    :math:`[X_{(r)}, X_{(s)}]` with :math:`r`, :math:`s - 1` the :math:`(1 \mp \text{level})/2`
    quantiles of :math:`\text{Binomial}(n, q)` (the number of seeds below the true quantile),
    and ``se`` = (hi - lo) / (2 z), :math:`z = \Phi^{-1}((1 + \text{level})/2)` (``inf`` when hi is
    censored). Returns ``{"q", "value", "lo", "hi", "se", "n"}``."""
    x = np.asarray(times, dtype=np.float64).reshape(-1)
    n = int(x.size)
    if n == 0:
        raise ValueError("times: got an empty array; allowed: at least one seed")
    if not (0 < q < 1):
        raise ValueError(f"q: got {q!r}; allowed: a number in (0, 1)")
    if not (0 < level < 1):
        raise ValueError(f"level: got {level!r}; allowed: a number in (0, 1)")
    s = np.sort(np.where(np.isnan(x), np.inf, x))
    a = (1.0 - level) / 2.0
    r = max(1, int(scipy.stats.binom.ppf(a, n, q)))
    t = min(n, int(scipy.stats.binom.ppf(1.0 - a, n, q)) + 1)
    value = float(s[max(0, math.ceil(n * q) - 1)])
    lo, hi = float(s[r - 1]), float(s[t - 1])
    z = float(scipy.stats.norm.ppf(0.5 + level / 2.0))
    se = (hi - lo) / (2.0 * z) if math.isfinite(hi) else math.inf
    return {"q": float(q), "value": value, "lo": lo, "hi": hi, "se": float(se), "n": n}


def extrapolate_linear(x, y, se, *, level: float = 0.95) -> dict:
    r"""Weighted least-squares line :math:`y = a + b x` through points with standard errors
    ``se`` (weights :math:`1/\text{se}^2`), e.g. a finite-d quantity against
    :math:`x = d^{-1/2}` extrapolated to :math:`x = 0`. The standard errors of a and b are
    :math:`\sqrt{[(X^T W X)^{-1}]\,\max(1, \chi^2/(n-2))}` (as in :func:`fit_scaling`: the
    errors are taken as known, and inflated only when the scatter exceeds them) and the
    intervals are normal ones, a +- z se (so slightly conservative: about 97% for a nominal
    95% with 5 points). Returns ``{"intercept",
    "intercept_se", "intercept_ci", "slope", "slope_se", "chi2_red", "n"}``."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    s = np.asarray(se, dtype=np.float64).reshape(-1)
    if not (x.shape == y.shape == s.shape):
        raise ValueError("x, y and se must have the same length")
    good = np.isfinite(x) & np.isfinite(y) & np.isfinite(s) & (s > 0)
    n = int(good.sum())
    if n < 2:
        raise ValueError(f"extrapolate_linear: need at least 2 points with a finite value and error; got {n}")
    x, y, w = x[good], y[good], 1.0 / s[good] ** 2
    beta, cov = _wls(x, y, w)
    dof = n - 2
    chi2_red = float(np.sum(w * (y - beta[0] - beta[1] * x) ** 2) / dof) if dof > 0 else None
    infl = max(1.0, chi2_red or 1.0)
    a_se, b_se = math.sqrt(cov[0, 0] * infl), math.sqrt(cov[1, 1] * infl)
    tq = float(scipy.stats.norm.ppf(0.5 + level / 2.0))
    a = float(beta[0])
    return {"intercept": a, "intercept_se": a_se, "intercept_ci": [a - tq * a_se, a + tq * a_se],
            "slope": float(beta[1]), "slope_se": b_se, "chi2_red": chi2_red, "n": n}


def start_sign(result: Result, row: int = 0) -> np.ndarray:
    """Sign (+1, -1, 0) of the recorded initial overlap M_row,0 / sqrt(Q_row,row) per seed."""
    return np.sign(result.overlap()[:, 0, row, 0]).astype(np.int64)


def signed_escape(result: Result, threshold: float = 0.5, sign: int | None = +1) -> np.ndarray:
    r"""Escape step per seed recomputed from the recorded normalised overlaps
    :math:`m = M_{j0}/\sqrt{Q_{jj}}`: the first recorded step at which some row has
    ``sign * m >= threshold`` (``sign=None``: :math:`|m| \ge` threshold); NaN if none (the
    convention of ``Result.escape_step``).

    Use ``sign=+1`` for odd information exponent, where the drift pushes towards the sign of
    :math:`c_k(g) c_k(\sigma)` and the two signs are not equivalent; condition on a positive start
    with ``start_sign(result) > 0``. For even :math:`k` the two signs are symmetric (use
    ``sign=None``). Only at recording resolution: the step returned is the first *recorded* step
    after the crossing (late by up to ``record_every``), and a crossing undone between two
    records is missed. The exact (every-step) :math:`|m|` escape is ``result.escape_step``.
    """
    m = result.overlap()[..., 0]  # (S, R, p)
    if sign is None:
        s = np.abs(m)
    elif sign in (1, -1):
        s = sign * m
    else:
        raise ValueError(f"sign: got {sign!r}; allowed: +1, -1 or None")
    hit = np.nan_to_num(s, nan=-np.inf).max(axis=2) >= threshold  # (S, R)
    first = np.argmax(hit, axis=1)
    return np.where(hit.any(axis=1), np.asarray(result.steps)[first], np.nan).astype(np.float64)


def escape_from_result(
    result: Result, *, level: float = 0.95, n_boot: int = 2000, seed: int = 0, mask=None
) -> EscapeStats:
    """:func:`escape_statistics` of ``result.escape_step`` (exact every-step |m| escape), with the
    horizon = last recorded step, ``batch`` and ``d`` from the result; a seed that diverged
    before escaping is censored at its divergence step. ``mask`` selects seeds (e.g.
    ``start_sign(result) > 0``)."""
    e = np.asarray(result.escape_step)
    dv = np.asarray(result.diverged_step)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        e, dv = e[mask], dv[mask]
    return escape_statistics(
        e,
        int(np.asarray(result.steps)[-1]),
        batch=result.batch,
        d=result.d,
        level=level,
        n_boot=n_boot,
        seed=seed,
        censor_steps=np.where(np.isnan(e), dv, np.nan),
    )


# ------------------------------------------------------------------ scaling fits
@dataclass(frozen=True)
class ScalingFit:
    r"""Fit of :math:`\log(\text{median}) = a + b \log d` (or of :math:`\log(\text{median}/\log d)`).

    ``slope`` b, ``intercept`` a, ``stderr`` of b, ``ci`` its t-interval with n - 2 degrees of
    freedom, ``ci_boot`` the parametric-bootstrap interval, ``chi2_red`` the reduced chi-square
    of the weighted fit (None without uncertainties), ``n`` the points used, ``dropped`` the
    indices of points left out (non-finite median).
    """

    slope: float
    intercept: float
    stderr: float
    ci: tuple[float, float]
    ci_boot: tuple[float, float] | None
    n: int
    level: float
    log_correction: bool
    weighted: bool
    chi2_red: float | None
    dropped: tuple[int, ...]

    def to_dict(self) -> dict:
        return {k: _json(v) for k, v in asdict(self).items()}


def _wls(x, y, w):
    X = np.stack([np.ones_like(x), x], axis=1)
    A = X.T @ (w[:, None] * X)
    beta = np.linalg.solve(A, X.T @ (w * y))
    return beta, np.linalg.inv(A)


def fit_scaling(
    ds,
    medians,
    lo=None,
    hi=None,
    *,
    log_correction: bool = False,
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> ScalingFit:
    r"""Log-log least-squares exponent of median escape samples against the dimension.

    Model: :math:`\log \text{med}_i = a + b \log d_i` or, with ``log_correction=True``,
    :math:`\log \text{med}_i = a + b \log d_i + \log\log d_i` (the :math:`d \log d` law of
    :math:`k = 2`: the fitted b is the exponent of :math:`\text{med}/\log d`).

    With per-point confidence intervals ``lo``, ``hi`` (from :func:`escape_statistics`), each
    point gets :math:`\sigma_i = (\log hi_i - \log lo_i)/(2 z)`, :math:`z = \Phi^{-1}(0.975)`
    (intervals taken as 95%, symmetric in the log), and the fit is weighted by
    :math:`1/\sigma_i^2`; points with an infinite upper bound get no weight. The standard
    error is :math:`\sqrt{[(X^T W X)^{-1}]_{bb}\,\max(1, \chi^2/(n-2))}` (never below the
    propagated uncertainty; inflated when the scatter exceeds it), and ``ci`` uses the
    t-distribution with :math:`n - 2` degrees of freedom. ``ci_boot`` redraws every
    :math:`\log \text{med}_i \sim N(\log \text{med}_i, \sigma_i^2)`, refits ``n_boot`` times and takes
    percentiles. Without intervals: ordinary least squares, residual-based standard error,
    no bootstrap. Points with a non-finite or non-positive median are dropped (listed in
    ``dropped``).
    """
    ds = np.asarray(ds, dtype=np.float64).reshape(-1)
    med = np.asarray(medians, dtype=np.float64).reshape(-1)
    if ds.shape != med.shape:
        raise ValueError("ds and medians must have the same length")
    weighted = lo is not None and hi is not None
    if weighted:
        lo_a = np.asarray(lo, dtype=np.float64).reshape(-1)
        hi_a = np.asarray(hi, dtype=np.float64).reshape(-1)
    good = np.isfinite(med) & (med > 0) & (ds > 1)
    dropped = tuple(int(i) for i in np.nonzero(~good)[0])
    x = np.log(ds[good])
    y = np.log(med[good])
    if log_correction:
        y = y - np.log(np.log(ds[good]))
    n = int(x.size)
    if n < 2:
        raise ValueError(f"fit_scaling: need at least 2 points with a finite median; got {n}")
    dof = n - 2
    tq = float(scipy.stats.t.ppf(0.5 + level / 2.0, dof)) if dof > 0 else math.inf
    if weighted:
        z = float(scipy.stats.norm.ppf(0.975))
        lo_g, hi_g = lo_a[good], hi_a[good]
        with np.errstate(divide="ignore", invalid="ignore"):
            sig = (np.log(hi_g) - np.log(lo_g)) / (2.0 * z)
        finite = np.isfinite(sig) & (sig > 0)
        if np.any(np.isfinite(sig) & (sig <= 0)):
            # a zero-width interval: floor it at the smallest positive one (or a tiny value)
            floor = sig[finite].min() if finite.any() else 1e-6
            sig = np.where(np.isfinite(sig) & (sig <= 0), floor, sig)
            finite = np.isfinite(sig)
        w = np.where(finite, 1.0 / np.where(finite, sig, 1.0) ** 2, 0.0)
        if int((w > 0).sum()) < 2:
            raise ValueError("fit_scaling: need at least 2 points with a finite interval")
        beta, cov = _wls(x, y, w)
        resid = y - (beta[0] + beta[1] * x)
        neff = int((w > 0).sum())
        dof = neff - 2
        tq = float(scipy.stats.t.ppf(0.5 + level / 2.0, dof)) if dof > 0 else math.inf
        chi2_red = float(np.sum(w * resid**2) / dof) if dof > 0 else None
        stderr = math.sqrt(cov[1, 1] * max(1.0, chi2_red or 1.0))
        rng = np.random.default_rng(seed)
        sig_b = np.where(finite, sig, 0.0)
        slopes = np.empty(int(n_boot))
        for b in range(int(n_boot)):
            yb = y + sig_b * rng.standard_normal(n)
            slopes[b] = _wls(x, yb, w)[0][1]
        a = (1.0 - level) / 2.0
        ci_boot = (float(np.quantile(slopes, a)), float(np.quantile(slopes, 1.0 - a)))
    else:
        beta, cov = _wls(x, y, np.ones(n))
        resid = y - (beta[0] + beta[1] * x)
        s2 = float(np.sum(resid**2) / dof) if dof > 0 else math.nan
        stderr = math.sqrt(cov[1, 1] * s2) if dof > 0 else math.nan
        chi2_red, ci_boot = None, None
    slope = float(beta[1])
    ci = (slope - tq * stderr, slope + tq * stderr) if math.isfinite(stderr) else (-math.inf, math.inf)
    return ScalingFit(
        slope=slope,
        intercept=float(beta[0]),
        stderr=float(stderr),
        ci=(float(ci[0]), float(ci[1])),
        ci_boot=ci_boot,
        n=n,
        level=float(level),
        log_correction=bool(log_correction),
        weighted=weighted,
        chi2_red=chi2_red,
        dropped=dropped,
    )


# ------------------------------------------------------------------ theory exponents
def theory_exponent(k: int) -> float:
    r"""Exponent of :math:`d` in the samples to escape of plain online SGD from a random start
    (Ben Arous, Gheissari, Jagannath 2021): 1 for :math:`k = 1`,
    1 for :math:`k = 2` (with a :math:`\log d` factor: fit with ``log_correction=True``, see
    :func:`needs_log_correction`), :math:`k - 1` for :math:`k \ge 3`."""
    k = int(k)
    if k < 1:
        raise ValueError(f"k: got {k}; allowed: an integer >= 1")
    return 1.0 if k <= 2 else float(k - 1)


def needs_log_correction(k: int) -> bool:
    """True for k = 2, whose sample complexity is d log d."""
    return int(k) == 2


def smoothed_exponent(k: int) -> float:
    r"""Exponent with landscape smoothing (Damian, Nichani, Ge, Lee 2023),
    the CSQ lower bound: :math:`\max(1, k/2)` (up to log factors for :math:`k \le 2`)."""
    k = int(k)
    if k < 1:
        raise ValueError(f"k: got {k}; allowed: an integer >= 1")
    return max(1.0, k / 2.0)
