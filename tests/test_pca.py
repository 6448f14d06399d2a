"""PCA starts (sgdlab.init.PCA), BBP helpers and the (m, r) flow of spiked problems (sgdlab.spiked).

The chain's PCA start is an exact reduction of the top eigenvector's frame coordinates to a
tridiagonal n' x n' problem (docs/chain.md); the full engine computes the eigenvector of the
sampled data. Their laws are compared by two-sample KS tests over many seeds.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from sgdlab import Problem, Student, Training
from sgdlab.api import _model
from sgdlab.data import Mixture, Spiked
from sgdlab.init import PCA, Random
from sgdlab.spiked import Flow, bbp_overlap, bbp_threshold, bbp_top_eigenvalue, mr, pca_draws
from sgdlab.theory import critical_overlap

KS_ALPHA = 1e-3


def _model_for(d, lam, eta1, init, link="He3"):
    prob = Problem(d=d, link=link, data=Spiked(strength=lam, overlap=eta1))
    return _model(prob, Student(activation=link), Training(lr=1e-3, steps=1, spherical=True, init=init))


def _chain_starts(model, seeds, seed=0):
    init = model.init
    start = init.per_seed(model, seeds)
    keys = jax.random.split(jax.random.PRNGKey(seed), seeds)
    d = float(model.problem.d)
    f = jax.jit(jax.vmap(lambda k, s: init.structure().gram(k, model, s, d=d)[1][0]))
    return np.asarray(f(keys, start))


def _full_starts(model, seeds, seed=1):
    init = model.init
    start = init.per_seed(model, seeds)
    keys = jax.random.split(jax.random.PRNGKey(seed), seeds)
    f = jax.jit(jax.vmap(lambda k, s: init.structure().weights(k, model, s, jnp.float64)[0]))
    W = np.asarray(f(keys, start))
    assert np.allclose(np.linalg.norm(W, axis=1), 1.0)
    return W[:, : model.a]


@pytest.mark.parametrize("sign", ["random", "labels"])
def test_chain_pca_start_has_the_law_of_the_full_eigenvector(sign):
    """The chain's PCA frame coordinates (m, r) have the law of the d-dimensional top
    eigenvector's (d = 50, n' = 100 padded to 128, lambda = 2): KS over 500 seeds, signed.
    Planted bug caught (checked by hand): the padding rows left unmasked (128 samples instead
    of 100: KS p = 2e-21 on r^2). Not caught at this size: one degree of freedom too few in the
    orthogonal Wishart part (d - a - 1: p = 0.3). With ``labels`` the sign must also be fixed
    on both engines alike (a label sign that were ignored gives P(m > 0) ~ 0.5 < 0.6)."""
    model = _model_for(50, 2.0, 0.45, PCA(100, sign, 16))
    c, f = _chain_starts(model, 500), _full_starts(model, 500)
    data = model.problem.data
    (mc, rc), (mf, rf) = mr(c, data), mr(f, data)
    for x, y in ((mc, mf), (rc**2, rf**2), (rc * np.sign(mc), rf * np.sign(mf))):
        assert stats.ks_2samp(x, y).pvalue > KS_ALPHA
    if sign == "labels":  # the labels fix the sign: mostly positive, and alike on both engines
        assert 0.6 < np.mean(mc > 0) and abs(np.mean(mc > 0) - np.mean(mf > 0)) < 0.1


def test_pca_at_zero_strength_is_a_random_start():
    """With lambda = 0 the sample covariance is isotropic: the PCA start must have the law
    of a uniform random start (m^2 ~ Beta(1/2, (d-1)/2)); KS of the chain's PCA m against the
    exact Beta law and against Random's chain draws. Planted bug caught (checked by hand):
    dropping the orthogonal Wishart part (k = 0, the eigenvector confined to the frame: KS p = 0)."""
    model = _model_for(100, 0.0, 0.45, PCA(120, "random"))
    m = _chain_starts(model, 500)[:, 0]
    assert stats.kstest(m**2, stats.beta(0.5, (100 - 1) / 2).cdf).pvalue > KS_ALPHA
    rnd = _model_for(100, 0.0, 0.45, Random())
    keys = jax.random.split(jax.random.PRNGKey(3), 500)
    mr_ = np.asarray(jax.vmap(lambda k: Random().gram(k, rnd, None)[1][0, 0])(keys))
    assert stats.ks_2samp(m, mr_).pvalue > KS_ALPHA
    assert 0.4 < np.mean(m > 0) < 0.6


def test_bbp_helpers_against_finite_d_draws():
    """BBP limits against exact finite-d draws (n' = 512, d = gamma n'): above the threshold
    the mean squared overlap is within 4 standard errors + 0.02 (the finite-d bias, measured
    below 0.01) of (1 - g/l^2)/(1 + g/l) and the top eigenvalue within 2%; below it the overlap
    is small (< 0.05 at gamma = 4, lambda = 1) and the eigenvalue sticks to (1 + sqrt g)^2
    (within 3%: the edge's finite-d spread). Planted bug caught: gamma/lambda instead of gamma/lambda^2 in
    the numerator (equal at lambda = 1, but 0.78 instead of 0.83 at lambda = 2, gamma = 0.25:
    beyond the 0.024 tolerance)."""
    assert float(bbp_threshold(4.0)) == 2.0
    g = 0.49
    assert float(bbp_overlap(0.7 + 1e-12, g)) == pytest.approx(0.0, abs=1e-9)
    assert float(bbp_top_eigenvalue(0.7 + 1e-9, g)) == pytest.approx((1 + 0.7) ** 2, rel=1e-8)
    for lam, gamma in ((1.0, 0.25), (2.0, 0.25), (2.0, 1.0), (1.0, 4.0)):
        n = 512
        out = pca_draws(lam, 0.45, int(gamma * n), n, 200, seed=5)
        r2 = out["r"] ** 2
        se = r2.std(ddof=1) / math.sqrt(len(r2))
        if lam > math.sqrt(gamma):
            assert abs(r2.mean() - bbp_overlap(lam, gamma)) < 4 * se + 0.02
            assert out["top"].mean() == pytest.approx(float(bbp_top_eigenvalue(lam, gamma)), rel=0.02)
        else:
            assert r2.mean() < 0.05
            assert out["top"].mean() == pytest.approx(float(bbp_top_eigenvalue(lam, gamma)), rel=0.03)


def test_flow_saddle_at_lambda_zero_is_the_corrector_threshold():
    """At lambda = 0 the (m, r) flow with the lr^2 corrector has a saddle on the m axis at the
    critical overlap of Ben Arous-Gheissari-Jagannath, m_c = eta d V(0) / (2 k |c_k|) (k = 3),
    to leading order (within 5% at m_c ~ 0.05), a stable origin and a stable w = w*; without
    the corrector the origin is not stable. Planted bug caught: the flow built without the
    lr^2 terms (no saddle, origin unstable)."""
    d, lr = 1000, 2.5e-7
    prob = Problem(d=d, link="He3", data=Spiked(strength=0.0, overlap=0.45))
    tr = Training(lr=lr, steps=1, spherical=True)
    fl = Flow(prob, Student(activation="He3"), tr)
    fps = fl.fixed_points(grid=5)
    saddles = [f for f in fps if not f["stable"] and 0 < f["m"] < 0.5]
    mc = critical_overlap("He3", lr, d, "He3")
    assert len(saddles) == 1 and saddles[0]["m"] == pytest.approx(mc, rel=0.05)
    assert any(f["stable"] and abs(f["m"]) < 1e-9 for f in fps)
    assert any(f["stable"] and f["m"] == pytest.approx(1.0) for f in fps)
    first = Flow(prob, Student(activation="He3"), tr, second_order=False)
    assert not any(f["stable"] and abs(f["m"]) < 1e-9 for f in first.fixed_points(grid=5))
    # escape above the saddle, trapped below
    assert fl.outcome(2 * mc, 0.45 * 2 * mc, 1e10)["outcome"] == "escapes"
    assert fl.outcome(0.5 * mc, 0.45 * 0.5 * mc, 1e10)["outcome"] == "trapped"


def test_pca_bad_input_is_one_line():
    """Bad PCA settings name the field, the value and what is allowed."""
    with pytest.raises(ValueError, match="train.pca_samples"):
        PCA(0)
    with pytest.raises(ValueError, match="train.pca_sign"):
        PCA(10, "up")
    with pytest.raises(ValueError, match="train.pca_labels"):
        PCA(10, "labels", 0)
    with pytest.raises(ValueError, match="train.pca_samples"):
        Training(init="pca")
    prob = Problem(d=50, link="He3", data=Spiked(strength=1.0, overlap=0.5))
    tr = Training(init="pca", pca_samples=30, pca_sign="labels", pca_labels=4)
    assert _model(prob, Student(activation="He3"), tr).init == PCA(30, "labels", 4)
    with pytest.raises(ValueError, match="width = 1"):
        _model(prob, Student(width=2, activation="He3"), Training(init=PCA(10))).check()
    mix = Problem(d=50, link="He3", data=Mixture(means=[[0.0, 1.0], [0.0, -1.0]], sigma_perp=[1.0, 2.0]))
    m = _model(mix, Student(activation="He3"), Training(init=PCA(10)))
    with pytest.raises(ValueError, match="sigma_perp = 1"):
        PCA(10).gram(jax.random.PRNGKey(0), m, None)
