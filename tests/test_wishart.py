"""The Bartlett samplers of sgdlab._wishart, checked in law.

``wishart(key, k, df)`` must be Wishart_k(df, I): E W = df I and
Cov(W_ij, W_kl) = df (d_ik d_jl + d_il d_jk), i.e. Var W_ij = df off the diagonal,
2 df on it, and distinct upper-triangular entries uncorrelated. Moments are compared with
tolerances of 5 standard errors estimated from the samples themselves.

``wishart_quadratic(key, C, df)`` must have the law of C^T H H^T C with H an n x df
standard Gaussian matrix, in all three of its branches (p = 1, p <= n, n < p): compared
entry by entry with a two-sample KS test against the direct construction.
All keys are fixed, so every test is deterministic.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from sgdlab._wishart import bartlett, chi2, wishart, wishart_quadratic

jax.config.update("jax_enable_x64", True)

N_MOMENT = 40_000  # samples for the moment tests
N_KS = 4_000  # samples per side for the KS tests
N_SE = 5.0  # tolerance in standard errors


def _wishart_samples(k, df, n, seed):
    keys = jax.random.split(jax.random.key(seed), n)
    return np.asarray(jax.vmap(lambda kk: wishart(kk, k, df))(keys))


def _upper(k):
    return [(i, j) for i in range(k) for j in range(i, k)]


@pytest.mark.parametrize("k, df", [(1, 5.0), (3, 7.0), (4, 9.5), (3, 37.0)])
def test_wishart_mean_and_covariance(k, df):
    W = _wishart_samples(k, df, N_MOMENT, seed=11 + k)
    assert W.shape == (N_MOMENT, k, k)
    np.testing.assert_array_equal(W, np.swapaxes(W, 1, 2))  # symmetric by construction
    assert np.all(np.linalg.eigvalsh(W) > 0)

    # mean: df * I, within N_SE standard errors of the sample mean
    mean = W.mean(axis=0)
    se = W.std(axis=0) / np.sqrt(N_MOMENT)
    expected = df * np.eye(k)
    assert np.all(np.abs(mean - expected) <= N_SE * se), (mean, expected, se)

    # covariance of every pair of upper-triangular entries:
    # Cov(W_ij, W_kl) = df (d_ik d_jl + d_il d_jk)  (Var W_ii = 2 df, Var W_ij = df)
    ent = _upper(k)
    X = np.stack([W[:, i, j] for i, j in ent], axis=1)
    Xc = X - X.mean(axis=0)
    for (a, (i, j)), (b, (kk, ll)) in itertools.combinations_with_replacement(enumerate(ent), 2):
        prod = Xc[:, a] * Xc[:, b]
        cov, se = prod.mean(), prod.std() / np.sqrt(N_MOMENT)
        want = df * ((i == kk) * (j == ll) + (i == ll) * (j == kk))
        assert abs(cov - want) <= N_SE * se, ((i, j), (kk, ll), cov, want, se)


def test_wishart_moment_test_has_power():
    """A Bartlett factor with the chi^2 degrees of freedom reversed (df - (k-1-i)) has the
    wrong mean of W_00: the same tolerance must reject it."""
    k, df, n = 3, 7.0, N_MOMENT

    def reversed_bartlett(key):
        kc, kn = jax.random.split(key)
        diag = jnp.sqrt(chi2(kc, df - jnp.arange(k - 1, -1, -1, dtype=jnp.float64), (k,)))
        a = jnp.tril(jax.random.normal(kn, (k, k)), -1) + jnp.diag(diag)
        return a @ a.T

    W = np.asarray(jax.vmap(reversed_bartlett)(jax.random.split(jax.random.key(3), n)))
    mean, se = W.mean(axis=0), W.std(axis=0) / np.sqrt(n)
    assert np.any(np.abs(mean - df * np.eye(k)) > N_SE * se)


def test_bartlett_is_lower_triangular_with_positive_diagonal():
    A = np.asarray(bartlett(jax.random.key(0), 5, 12.0))
    np.testing.assert_array_equal(A, np.tril(A))
    assert np.all(np.diag(A) > 0)


def test_chi2_moments():
    df = 6.5
    x = np.asarray(chi2(jax.random.key(5), df, (N_MOMENT,)))
    assert abs(x.mean() - df) <= N_SE * x.std() / np.sqrt(N_MOMENT)
    assert abs(x.var() - 2 * df) <= N_SE * np.sqrt(np.var((x - x.mean()) ** 2) / N_MOMENT)


# --------------------------------------------------------------------------------------
# wishart_quadratic vs the direct construction
# --------------------------------------------------------------------------------------


def _fixed_C(n, p, seed):
    """A fixed C with correlated, unequal columns (and a rank-deficient C^T C when n < p)."""
    rng = np.random.default_rng(seed)
    C = rng.normal(size=(n, p)) @ (np.eye(p) + 0.7 * np.triu(np.ones((p, p)), 1))
    return jnp.asarray(C * np.linspace(0.5, 2.0, p))


def _quadratic_samples(C, df, n_samples, seed):
    keys = jax.random.split(jax.random.key(seed), n_samples)
    return np.asarray(jax.vmap(lambda k: wishart_quadratic(k, C, df))(keys))


def _direct_samples(C, df, n_samples, seed):
    n = C.shape[0]

    def one(k):
        H = jax.random.normal(k, (n, df))
        HC = H.T @ C
        return HC.T @ HC

    return np.asarray(jax.vmap(one)(jax.random.split(jax.random.key(seed), n_samples)))


def _min_ks_pvalue(A, B):
    p = A.shape[-1]
    return min(stats.ks_2samp(A[:, i, j], B[:, i, j]).pvalue for i, j in _upper(p)), len(_upper(p))


# (n, p): p = 1 (chi^2 branch), p < n and p = n (p x p Bartlett), n < p (n x n Bartlett)
SHAPES = [(1, 1), (4, 1), (5, 2), (3, 3), (8, 3), (2, 3), (1, 3), (3, 5)]


@pytest.mark.parametrize("n, p", SHAPES)
def test_wishart_quadratic_law(n, p):
    df = 23
    C = _fixed_C(n, p, seed=100 * n + p)
    A = _quadratic_samples(C, df, N_KS, seed=1)
    B = _direct_samples(C, df, N_KS, seed=2)
    assert A.shape == (N_KS, p, p)
    np.testing.assert_allclose(A, np.swapaxes(A, 1, 2), rtol=1e-12, atol=1e-12)
    pmin, k = _min_ks_pvalue(A, B)
    # Bonferroni over the k entries at family level 1e-3; the keys are fixed, so this is
    # deterministic. (Observed p-values with the correct sampler are all > 0.01.)
    assert pmin > 1e-3 / k, pmin
    # and the mean is df * C^T C, within N_SE standard errors
    want = df * np.asarray(C.T @ C)
    se = A.std(axis=0) / np.sqrt(N_KS)
    assert np.all(np.abs(A.mean(axis=0) - want) <= N_SE * se + 1e-12)


@pytest.mark.parametrize("n, p", [(1, 1), (5, 2), (2, 3)])
def test_wishart_quadratic_ks_has_power(n, p):
    """The same KS check rejects df + 3 degrees of freedom (the error of using d instead of
    d - P in the chain with P = 3)."""
    df = 23
    C = _fixed_C(n, p, seed=100 * n + p)
    A = _quadratic_samples(C, df + 3, N_KS, seed=1)
    B = _direct_samples(C, df, N_KS, seed=2)
    pmin, k = _min_ks_pvalue(A, B)
    assert pmin < 1e-3 / k, pmin


@pytest.mark.parametrize("df", [1.0, 1.5, 3.0, 38.0, 998.0, 1e6])
def test_chi2_sampler_matches_scipy(df):
    """The Marsaglia–Tsang chi^2 against scipy's chi^2 (two-sample KS, 100k draws each, and a
    one-sample KS against the exact cdf), df from 1 (the boosted branch) to 10^6. A sampler
    off by a constant factor of 1e-3 in scale, or without the boost at df < 2, fails."""
    x = np.asarray(jax.jit(lambda k: chi2(k, df, (100_000,)))(jax.random.key(7)))
    ref = stats.chi2.rvs(df, size=100_000, random_state=np.random.default_rng(8))
    assert stats.ks_2samp(x, ref).pvalue > 1e-3
    assert stats.kstest(x, stats.chi2(df).cdf).pvalue > 1e-3


def test_chi2_sampler_check_has_power():
    """The same check rejects the boost-free sampler at df = 1 and a 1% scale error at df = 998."""
    from sgdlab._wishart import gamma

    no_boost = np.asarray(2.0 * gamma(jax.random.key(7), 1.5, (100_000,)))  # Gamma(0.5 + 1) for chi2(1)
    assert stats.kstest(no_boost, stats.chi2(1.0).cdf).pvalue < 1e-10
    scaled = 1.01 * np.asarray(chi2(jax.random.key(7), 998.0, (100_000,)))
    assert stats.kstest(scaled, stats.chi2(998.0).cdf).pvalue < 1e-10


def test_chi2_sampler_traced_df_and_vmap():
    """df traced (the chain takes d traced) and vmapped over seeds, with entries that need
    several tries: every draw finite and positive, means within 5 SE."""
    dfs = jnp.array([1.0, 2.0, 5.0, 50.0])
    keys = jax.random.split(jax.random.key(3), 4000)
    x = np.asarray(jax.jit(jax.vmap(lambda k, df: chi2(k, df, (4,)), in_axes=(0, None)))(keys, dfs))
    assert np.all(np.isfinite(x)) and np.all(x > 0)
    se = np.sqrt(2 * np.asarray(dfs) / 4000)
    assert np.all(np.abs(x.mean(axis=0) - np.asarray(dfs)) < 5 * se)


def _first_try_accepted(key, alpha, n):
    """Which entries of ``gamma(key, alpha, (n,))`` the first Marsaglia–Tsang proposal
    accepts (the same draws, the same test, written out here)."""
    from sgdlab._wishart import Draws

    dr = Draws(key, Draws.gamma_size((n,)))
    x, u = np.asarray(dr.normal((n,))), np.asarray(dr.uniform((2, n)))[0]
    dd = alpha - 1.0 / 3.0
    w = 1.0 + x / np.sqrt(9.0 * dd)
    v = w**3
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w > 0) & (np.log(u) < 0.5 * x * x + dd - dd * v + dd * np.log(np.where(w > 0, v, 1.0)))


@pytest.mark.parametrize("alpha", [1.0, 2.5])
def test_gamma_retries_are_fresh_draws_of_the_same_law(alpha):
    """The entries whose first proposal is rejected (about 5% at alpha = 1) come out of the
    retry loop: they must again be Gamma(alpha) (one-sample KS against the exact cdf over
    those entries alone), and uncorrelated with the rejected first proposal. A retry that
    reused variates of the step's own draws, or drew one try's normal and uniform from the same
    words, would fail; the check has power: the rejected proposals themselves fail it."""
    from sgdlab._wishart import Draws, gamma

    n, key = 400_000, jax.random.key(11)
    g = np.asarray(jax.jit(lambda k: gamma(k, alpha, (n,)))(key))
    first = _first_try_accepted(key, alpha, n)
    retried = ~first
    assert retried.sum() > 1000, retried.sum()
    assert stats.kstest(g[retried], stats.gamma(alpha).cdf).pvalue > 1e-3
    assert stats.kstest(g[first], stats.gamma(alpha).cdf).pvalue > 1e-3
    x0 = np.asarray(Draws(key, Draws.gamma_size((n,))).normal((n,)))[retried]
    assert abs(np.corrcoef(x0, g[retried])[0, 1]) < 5.0 / np.sqrt(retried.sum())
    # power: the rejected first proposals are not Gamma(alpha)
    rejected = alpha - 1.0 / 3.0
    rejected = rejected * (1.0 + x0 / np.sqrt(9.0 * rejected)) ** 3
    assert stats.kstest(rejected, stats.gamma(alpha).cdf).pvalue < 1e-10


# ----------------------------------------------------------------------------- one draw per step


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_draws_of_one_call_are_independent_standard_variates(dtype):
    """One ``Draws.split`` per step, as the chain does: normals N(0, 1) and uniforms U(0, 1)
    (one-sample KS over 2 x 10^5 draws), pairwise uncorrelated within a step and between
    consecutive steps (|corr| < 5 / sqrt(N)), and the next key differs from the current one.
    Catches overlapping offsets (two requests reading the same words) and a next key taken
    from the variates' words."""
    from sgdlab._wishart import Draws

    n = 20_000
    words = Draws.normal_size((6,), dtype) + Draws.normal_size((4,), dtype)

    def step(key, _):
        nxt, dr = Draws.split(key, words, dtype)
        return nxt, jnp.concatenate([dr.normal((6,)), dr.uniform((4,))]).astype(jnp.float64)

    keys = jax.random.split(jax.random.key(11), n)
    _, out = jax.jit(jax.vmap(lambda k: jax.lax.scan(step, k, None, length=2)))(keys)
    out = np.asarray(out)  # (n, 2 steps, 10)
    z, u = out[..., :6].reshape(-1), out[..., 6:].reshape(-1)
    assert stats.kstest(z, "norm").pvalue > 1e-3
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    flat = out.reshape(n, 20)
    corr = np.corrcoef(flat.T)[np.triu_indices(20, 1)]
    assert np.abs(corr).max() < 5 / np.sqrt(n)


def test_draws_refuse_more_words_than_drawn():
    from sgdlab._wishart import Draws

    dr = Draws(jax.random.key(0), 4)
    dr.normal((2,))
    with pytest.raises(ValueError, match="words requested"):
        dr.uniform((1,))


def test_chi2_of_float32_draws_is_exact():
    """The float32 chain's chi^2 comes from float64 variates: KS against the exact cdf at
    df = 10^6 - 2 (where float32 arithmetic in the acceptance test would cancel)."""
    from sgdlab._wishart import Draws

    df = 1e6 - 2
    keys = jax.random.split(jax.random.key(4), 100_000)
    x = jax.jit(jax.vmap(lambda k: Draws(k, Draws.gamma_size((1,)), "float32").chi2(df, (1,))))(keys)
    assert x.dtype == jnp.float32
    assert stats.kstest(np.asarray(x, np.float64).ravel(), stats.chi2(df).cdf).pvalue > 1e-3
