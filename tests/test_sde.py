"""The diffusion engine (``SDE``): its coefficients, its law against an independent Monte Carlo
of the same SDE, and the chain's escape-time law converging to it as d grows."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sgdlab import Chain, Problem, Student, Training, run
from sgdlab.engines import SDE, sde
from sgdlab.model import Model

QUARTILES = (0.25, 0.5, 0.75)


def _model(loss="correlation", noise=0.0, d=400, lr=None, **kw):
    tr = dict(lr=lr or 0.5 * d**-1.5, steps=4 * d * d, record_every=d * d, spherical=True, init="random",
              loss=loss) | kw
    return Problem(d=d, link="h3", noise=noise), Student(activation="h3"), Training(**tr)


def _quantile_se(x: np.ndarray, q: float) -> tuple[float, float]:
    """Sample quantile and its standard error from the order statistics n q +- sqrt(n q (1 - q))
    (censored values are +inf)."""
    s = np.sort(np.where(np.isfinite(x), x, np.inf))
    n = len(s)
    h = math.sqrt(n * q * (1 - q))
    lo, hi = s[max(0, int(n * q - h))], s[min(n - 1, int(n * q + h))]
    return float(np.quantile(s, q, method="inverted_cdf")), 0.5 * float(hi - lo)


def _worst_gap(a: np.ndarray, b: np.ndarray) -> float:
    """Largest quartile difference of two samples in units of its standard error (inf when a
    quartile is censored in one sample only)."""
    out = 0.0
    for q in QUARTILES:
        (qa, sa), (qb, sb) = _quantile_se(a, q), _quantile_se(b, q)
        if math.isinf(qa) or math.isinf(qb):
            out = max(out, 0.0 if qa == qb else math.inf)
            continue
        se = math.hypot(*(x if math.isfinite(x) else 0.0 for x in (sa, sb)))
        out = max(out, abs(qa - qb) / se if se > 0 else math.inf)
    return out


def test_coefficients_closed_form():
    """h3 student on an h3 target: k = 3, A_3 = 1 and, by the Gaussian moments of He_2 and He_3,
    correlation loss V0 = E[h3^2] E[h3'^2] = 3, W0 = E[h3^2 nu^2] * 3 = 21; square loss
    V0 = 3 E[h3^2 h2^2] * ... = 96 + 3 noise^2, W0 = 114 + 3 noise^2. Planted bugs caught: W0
    without the nu^2 factor (3), the square loss's self term f f' dropped (V0 = 3)."""
    c = sde.sde_coefficients(Model(*_model()))
    assert c["k"] == 3 and c["A_k"] == pytest.approx(1.0, rel=1e-10)
    assert c["V0"] == pytest.approx(3.0, rel=1e-10) and c["W0"] == pytest.approx(21.0, rel=1e-10)
    c = sde.sde_coefficients(Model(*_model(loss="square", noise=0.5)))
    assert c["V0"] == pytest.approx(96.0 + 0.75, rel=1e-10) and c["W0"] == pytest.approx(114.0 + 0.75, rel=1e-10)


def _euler_maruyama(c: dict, delta: float, mu0: np.ndarray, mu1: float, s_T: float, dt: float, seed: int):
    """The same SDE by plain Euler-Maruyama in numpy: escape time per path (inf: none by s_T)."""
    rng = np.random.default_rng(seed)
    k, A, V0, W0 = c["k"], c["A_k"], c["V0"], c["W0"]
    mu = mu0.astype(np.float64).copy()
    esc = np.full(mu.shape, np.inf)
    alive = np.abs(mu) < mu1
    esc[~alive] = 0.0
    sig = delta * math.sqrt(W0) * math.sqrt(dt)
    for i in range(int(round(s_T / dt))):
        drift = delta * k * A * mu ** (k - 1) - 0.5 * delta**2 * V0 * mu
        mu = np.where(alive, mu + drift * dt + sig * rng.standard_normal(mu.shape), mu)
        hit = alive & (np.abs(mu) >= mu1)
        esc[hit] = (i + 1) * dt
        alive &= ~hit
        if not alive.any():
            break
    return esc


def _start_law(d: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z1 = rng.standard_normal(n)
    return math.sqrt(d) * z1 / np.sqrt(z1**2 + rng.chisquare(d - 1, n))


N_PATHS = 2000


@pytest.fixture(scope="module")
def reference():
    # label noise 2 and delta = lr d^{3/2} = 0.6: the sphere's term (-(delta^2 / 2) V0 mu = -2.7 mu)
    # holds the equator against the drift (1.8 mu^2) up to mu ~ 1.5, so it shapes the law
    d = 400
    pb, st, tr = _model(noise=2.0, d=d, lr=0.6 * d**-1.5)
    c = sde.sde_coefficients(Model(pb, st, tr))
    delta = tr.lr * d**1.5
    esc = _euler_maruyama(c, delta, _start_law(d, N_PATHS, 1), math.sqrt(d) * 0.5, tr.steps / d**2, 1e-4, 2)
    return (pb, st, tr), esc


def _sde_escape_s(args, **engine):
    pb, st, tr = args
    r = run(pb, st, tr, engine=SDE(**engine), seeds=N_PATHS, seed=3)
    return np.asarray(r.info["escape_s"], dtype=np.float64), r


def test_sde_against_euler_maruyama(reference):
    """The engine's escape-time quartiles (diffrax ShARK, adaptive) equal an independent numpy
    Euler-Maruyama Monte Carlo of the same SDE (dt = 1e-4, independent paths and starts) within
    4 standard errors; the step-size check reports convergence. Planted bugs: see the next test."""
    args, em = reference
    esc, r = _sde_escape_s(args)
    esc = np.where(np.isnan(esc), np.inf, esc)
    assert np.mean(np.isfinite(esc)) > 0.9 and np.mean(np.isfinite(em)) > 0.9
    assert _worst_gap(esc, em) < 4.0
    assert r.info["sde"]["dt_check"]["converged"]
    # the Result's steps are s * d^{k-1}: the same law in samples
    d = args[0].d
    steps = np.where(np.isnan(r.escape_step), np.inf, r.escape_step)
    assert np.median(steps) == pytest.approx(np.median(esc) * d**2, rel=1e-3)


@pytest.mark.parametrize("drop", ["V0", "W0"])
def test_planted_bugs_rejected(reference, monkeypatch, drop):
    """Dropping the sphere's Ito correction (V0 = 0) or the noise (W0 = 0) moves the quartiles
    by far more than 4 standard errors of the comparison above."""
    args, em = reference
    true = sde._coefficients
    monkeypatch.setattr(sde, "_coefficients", lambda model: {**true(model), drop: 0.0})
    esc, _ = _sde_escape_s(args, check_dt=False)
    assert _worst_gap(np.where(np.isnan(esc), np.inf, esc), em) > 6.0


def _chain_median_s(pb, st, tr, seeds: int) -> tuple[float, float]:
    r = run(pb, st, tr, engine=Chain(), seeds=seeds, seed=5)
    s = np.where(np.isnan(r.escape_step), np.inf, r.escape_step) / pb.d**2
    return _quantile_se(s, 0.5)


@pytest.mark.parametrize(("loss", "a0"), [("correlation", 1.0), ("square", 0.5)])
def test_chain_converges_to_sde(loss, a0):
    """k = 3 (h3 on h3, delta = lr d^{3/2} = 1; the square loss with a0 = 0.5, so that its self
    term f f' does not pin the equator): the chain's median escape time s = samples / d^2 at
    d = 36 and 144, extrapolated linearly in d^{-1/2} (the order of the finite-threshold
    correction), is within 4 standard errors of the SDE's median at d = 10^8 (mu1 = 5000: the
    d -> infinity law). Catches an SDE whose drift, sphere term or noise is off by a constant
    factor (each moves the median by many standard errors)."""
    meds = []
    ds = (36, 144)
    student = Student(activation="h3", a0=a0)
    for d in ds:
        pb, _, tr = _model(loss=loss, d=d, lr=d**-1.5, steps=int(12 * d * d), record_every=d * d, stop_fraction=0.6)
        meds.append(_chain_median_s(pb, student, tr, 1000))
    (m1, s1), (m2, s2) = meds
    w1, w2 = ds[0] ** -0.5, ds[1] ** -0.5
    lim = (m2 * w1 - m1 * w2) / (w1 - w2)
    lim_se = math.hypot(s2 * w1, s1 * w2) / (w1 - w2)
    D = 10**8
    pb, _, tr = _model(loss=loss, d=D, lr=D**-1.5, steps=12 * D * D, record_every=D * D)
    r = run(pb, student, tr, engine=SDE(check_dt=False), seeds=N_PATHS, seed=7)
    med, se = _quantile_se(np.where(np.isnan(r.escape_step), np.inf, r.escape_step) / D**2, 0.5)
    assert abs(lim - med) < 4.0 * math.hypot(lim_se, se), (meds, lim, lim_se, med, se)


def test_refusals():
    """Models outside the diffusion limit get one-line errors naming the field."""
    pb, st, tr = _model()
    with pytest.raises(ValueError, match="train.spherical"):
        run(pb, st, Training(lr=1e-3, steps=10), engine="sde")
    with pytest.raises(ValueError, match="student.width"):
        run(pb, Student(width=2, activation="h3"), tr, engine="sde")
    with pytest.raises(ValueError, match="train.init"):  # not silently a random start
        run(pb, st, Training(lr=1e-3, steps=10, spherical=True, init="pca", pca_samples=50), engine="sde")
    with pytest.raises(ValueError, match="sde.rtol"):
        SDE(rtol=-1)


def test_config_engine():
    """``engine = "sde"`` with an ``[sde]`` table builds SDE(...) with its options; without the
    table the resolved configuration has no ``sde`` key (store keys of other runs unchanged).
    Catches a config layer that ignores the table or adds it to every run's key."""
    from sgdlab.config import make_engine, validate_config

    cfg = validate_config({"d": 100, "engine": "sde", "sde": {"rtol": 0.005, "check_dt": False}})
    eng = make_engine(cfg)
    assert isinstance(eng, SDE) and eng.rtol == 0.005 and eng.check_dt is False
    assert "sde" not in validate_config({"d": 100}).to_dict()
