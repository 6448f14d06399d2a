"""The covariance-norm sphere |w|_Sigma = 1 (``Training(norm="covariance")``) on every engine.

Inputs x ~ N(0, I + lambda v v^T) (``Spiked``); the renormalised rows keep
|w|_Sigma^2 = w^T Sigma w = Q_jj + M_j B M_j^T = 1 (B = Sigma - I in frame coordinates), and
spherical SGD projects the gradient Sigma-orthogonally (docs/chain.md). Checked here:

- the chain against the full d-dimensional simulation in law (two-sample KS on every final
  order parameter, fixed seeds, family-wise level ALPHA = 1e-3 Bonferroni over the entries),
  with the planted bugs each configuration catches built as one-line changes of chain.py;
- the constraint at every record on every engine (chain and float64 full: rounding; float32
  full: float32 rounding; ODE: the solver's tolerance, see ``test_constraint_*``);
- the ODE against the chain's mean from a warm start, in standard errors;
- the option's validation and that the default leaves store keys and descriptions unchanged.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from sgdlab import ODE, Chain, Full, Problem, Student, Training, run
from sgdlab.api import _description, _model
from sgdlab.config import ConfigError, load_config
from sgdlab.data import Mixture, Spiked
from sgdlab.init import OnEllipsoid
from sgdlab.spiked import Flow
from sgdlab.store import run_key
from test_engines_law import ALPHA, chain_with_line_replaced

SEED_FULL, SEED_CHAIN = 11, 12
LAM, ETA1 = 3.0, 0.6  # a strong spike: |w|_Sigma and |w| differ by up to a factor 2
STUDENT = Student(activation="h3")


def _spiked(d, lam=LAM, eta1=ETA1):
    return Problem(d=d, link="h3", data=Spiked(strength=lam, overlap=eta1))


CONFIGS = {
    # spherical SGD at a large step from a warm start m0 = 0.5: the choice of tangent projection
    # only enters at order lr^2 (after renormalisation a multiple of w is a change of the
    # effective step lr / (1 - lr D_j)), so it is visible only where lr D_j = O(1): two steps at
    # lr = 0.5. Catches the Euclidean D_j in the chain (``euclidean_tangent``: KS p = 4e-14 on
    # Q00 with 2000 seeds, measured) and a Euclidean renormalisation.
    "spherical_large_step": (
        _spiked(30), STUDENT,
        Training(lr=0.5, steps=2, record_every=1, spherical=True, norm="covariance", init=0.5),
        2000,
    ),
    # projected SGD (renormalisation only), batch 2, from a PCA start (n' = 60): the start moved
    # radially onto the ellipsoid on both engines. Catches a chain that renormalises by the
    # Euclidean norm (``euclidean_renormalisation``: KS p = 1e-239 on Q00, 5e-5 on M00, measured).
    "projected_pca": (
        _spiked(30), STUDENT,
        Training(lr=0.08, batch=2, steps=40, record_every=20, projected=True, norm="covariance", init="pca",
                 pca_samples=60),
        400,
    ),
}

# name -> (source of chain.py, its buggy replacement)
PLANTED = {
    "euclidean_tangent": ("C * (Lam + S @ MB.T)", "C * Lam"),
    "euclidean_renormalisation": (
        "jnp.diag(Qn) if B is None else jnp.diag(Qn) + jnp.sum((Mn @ B) * Mn, axis=1)", "jnp.diag(Qn)"),
}
POWER = [("spherical_large_step", "euclidean_tangent"), ("projected_pca", "euclidean_renormalisation")]

_cache: dict = {}


def runs(config: str, kind: str):
    """One run per (configuration, engine kind), shared by the tests of this module."""
    key = (config, kind)
    if key not in _cache:
        pb, st, tr, seeds = CONFIGS[config]
        if kind == "ode":
            _cache[key] = run(pb, st, tr, engine=ODE())
        else:
            eng = {"full": Full(dtype="float64"), "full32": Full(), "chain": Chain()}.get(kind)
            if eng is None:
                eng = chain_with_line_replaced(*PLANTED[kind], f"covnorm_{kind}")
            _cache[key] = run(pb, st, tr, engine=eng, seeds=seeds, seed=SEED_CHAIN if kind != "full" else SEED_FULL)
    return _cache[key]


def metric(data, r: int = 1) -> np.ndarray:
    """B = Sigma - I in frame coordinates, computed here from the law's definition."""
    V = data.spike_vectors(r)
    return (V.T * np.asarray(data.strength)) @ V


def sigma_norm2(res, data) -> np.ndarray:
    """|w_j|_Sigma^2 = Q_jj + M_j B M_j^T at every record, (seeds, records, p)."""
    B = metric(data)
    return np.diagonal(res.Q, axis1=-2, axis2=-1) + np.einsum("srpa,ab,srpb->srp", res.M, B, res.M)


def pvalues(ref, other) -> dict[str, float]:
    """KS p-value of every final order parameter (Q00 included: it is 1 - M B M^T, not 1)."""
    out = {}
    for name, f in (("M00", lambda r: r.M[:, -1, 0, 0]), ("M01", lambda r: r.M[:, -1, 0, 1]),
                    ("Q00", lambda r: r.Q[:, -1, 0, 0])):
        x, y = f(ref), f(other)
        assert np.all(np.isfinite(x)) and np.all(np.isfinite(y)), name
        out[name] = float(stats.ks_2samp(x, y).pvalue)
    return out


@pytest.mark.parametrize("config", list(CONFIGS))
def test_chain_matches_full_in_law(config):
    """The chain and the float64 full engine agree in law with the covariance norm (measured
    min p: 0.17 for spherical_large_step, 0.47 for projected_pca). Planted bugs caught: see
    ``test_law_check_catches_planted_bug`` (the Euclidean chain itself: p = 3e-300 on Q00)."""
    ps = pvalues(runs(config, "full"), runs(config, "chain"))
    assert min(ps.values()) > ALPHA / len(ps), ps


@pytest.mark.parametrize("config, bug", POWER, ids=[f"{c}-{b}" for c, b in POWER])
def test_law_check_catches_planted_bug(config, bug):
    """The same check rejects a chain with the planted bug (a copy of chain.py with one line
    changed): the Euclidean tangent projection at the large step, the Euclidean renormalisation
    on the projected run."""
    ps = pvalues(runs(config, "full"), runs(config, bug))
    assert min(ps.values()) <= ALPHA / len(ps), f"planted bug {bug} not detected on {config}: {ps}"


def test_random_start_on_ellipsoid_in_law():
    """The uniform start moved onto the ellipsoid: the chain's draw of (Q, M) (Wishart and
    normals, then rescaled) and the full engine's W / |W|_Sigma have the same law (KS over 2000
    draws at d = 12, where the spike makes |w|_Sigma vary by a factor up to 2), and both lie on
    the ellipsoid to rounding. Planted bug caught: a rescaling by sqrt(q) instead of 1 / sqrt(q)
    or one engine left Euclidean (the constraint fails by O(lambda r^2) = O(0.1))."""
    pb = _spiked(12)
    model = _model(pb, STUDENT, Training(lr=0.1, steps=1, spherical=True, norm="covariance"))
    init = model.init
    assert isinstance(init, OnEllipsoid)
    keys = jax.random.split(jax.random.PRNGKey(5), 2000)
    Q, M = jax.jit(jax.vmap(lambda k: init.gram(k, model, None, d=12.0)))(keys)
    W = jax.jit(jax.vmap(lambda k: init.weights(k, model, None, jnp.float64)))(jax.random.split(keys[0], 2000))
    Qc, Mc = np.asarray(Q)[:, 0, 0], np.asarray(M)[:, 0]
    Wf = np.asarray(W)[:, 0]
    Qf, Mf = np.sum(Wf * Wf, axis=1), Wf[:, :2]
    B = metric(pb.data)
    for q, m in ((Qc, Mc), (Qf, Mf)):
        np.testing.assert_allclose(q + np.einsum("sa,ab,sb->s", m, B, m), 1.0, atol=1e-12)
    ps = [stats.ks_2samp(Qc, Qf).pvalue, stats.ks_2samp(Mc[:, 0], Mf[:, 0]).pvalue,
          stats.ks_2samp(Mc[:, 1], Mf[:, 1]).pvalue]
    assert min(ps) > ALPHA / 3, ps


# ------------------------------------------------------------------ the ODE against the chain

ODE_D = 400
ODE_CASE = (_spiked(ODE_D, 1.0, 0.45), STUDENT,
            Training(lr=0.02 / ODE_D, steps=20 * ODE_D, record_every=2 * ODE_D, spherical=True, norm="covariance",
                     init=0.5))
ODE_SEEDS = 256


@pytest.fixture(scope="module")
def ode_case():
    pb, st, tr = ODE_CASE
    return run(pb, st, tr, engine=Chain(), seeds=ODE_SEEDS, seed=3), run(pb, st, tr, engine=ODE())


def test_ode_follows_the_chain_mean(ode_case):
    """From the warm start m0 = 0.5 (the paper's lambda = 1, eta1 = 0.45; d = 400, delta = 0.02,
    20 d steps, m rising 0.49 -> 0.65) the ODE stays within 4 standard errors of the chain's
    mean of m, M01 and Q00 = 1 - M B M^T at every record (256 seeds; measured max |z| = 2.2,
    the largest on Q00 at the first record, 4.3 at d = 200: the finite-d bias shrinks as 1/d).
    Planted bug caught: the ODE's renormalisation keeping Q_jj instead of |w|_Sigma (dq = dQ_jj
    only): Q00 off by 10-26 SE at d = 200. Not caught, and not expected to be: the Euclidean
    tangent projection in the ODE, whose effect is O(lr^2) without a factor d (the same z to
    two digits at d = 200)."""
    chain, ode = ode_case
    for name, f in (("m", lambda r: r.M[:, :, 0, 0]), ("M01", lambda r: r.M[:, :, 0, 1]),
                    ("Q00", lambda r: r.Q[:, :, 0, 0])):
        x = f(chain)
        mean, se = x.mean(axis=0), x.std(axis=0, ddof=1) / math.sqrt(x.shape[0])
        z = np.abs(f(ode)[0] - mean)[1:] / se[1:]
        assert np.all(z < 4.0), (name, np.round(z, 2))
    m = chain.M[:, :, 0, 0].mean(axis=0)
    assert m[-1] > m[0] + 0.1  # a trajectory, not a fixed point


# ------------------------------------------------------------------ the constraint on every engine


def test_constraint_on_every_engine_at_every_record(ode_case):
    """|w|_Sigma = 1 at every record: chain and float64 full engine to float64 rounding (1e-12;
    measured 6e-16), the float32 full engine to float32 rounding (2e-6; measured 2.6e-7), the ODE
    to its solver's tolerance (1e-8; measured 8e-11 and 2e-9 with rtol 1e-8: the constraint is a
    quadratic invariant, which an explicit Runge-Kutta step keeps only to its local error, while
    Q_jj = 1 of the Euclidean sphere is linear in the state and kept to rounding). Planted bug
    caught: any engine renormalising by the Euclidean norm (|w|_Sigma^2 - 1 = lambda r^2, up to
    0.3 here), or a start left on the Euclidean sphere (record 0)."""
    tol = {"chain": 1e-12, "full": 1e-12, "full32": 2e-6, "ode": 1e-8}
    cases = [(c, k) for c in CONFIGS for k in ("chain", "full")] + [("projected_pca", "ode"),
                                                                      ("spherical_large_step", "full32")]
    for config, kind in cases:
        res = runs(config, kind)
        err = np.max(np.abs(sigma_norm2(res, CONFIGS[config][0].data) - 1.0))
        assert err < tol[kind], (config, kind, err)
    chain, ode = ode_case
    for kind, res in (("chain", chain), ("ode", ode)):
        err = np.max(np.abs(sigma_norm2(res, ODE_CASE[0].data) - 1.0))
        assert err < tol[kind], ("ode_case", kind, err)


# ------------------------------------------------------------------ the option itself


def test_bad_norm_settings_are_one_line_errors():
    """A bad value, the norm without a renormalised geometry, a data law whose covariance the
    engines cannot express, the (m, r) flow and the decomposed ODE drift: one line each, naming
    the field, the value and what is allowed (planted bug caught: a covariance norm silently run
    as the Euclidean one on a mixture)."""
    with pytest.raises(ValueError, match=r"^train\.norm: got 'sigma'; allowed: 'euclidean' or 'covariance'$"):
        Training(norm="sigma")
    with pytest.raises(ValueError, match=r"^train\.norm: got 'covariance'; allowed: 'euclidean' unless"):
        Training(norm="covariance")
    mix = Problem(d=20, link="h3", data=Mixture(means=[[1.0], [-1.0]]))
    tr = Training(lr=0.01, steps=2, spherical=True, norm="covariance")
    for engine in ("chain", "full", "ode"):
        with pytest.raises(ValueError, match=r"^train\.norm: got 'covariance'; allowed: 'euclidean' on data 'mixture'"):
            run(mix, STUDENT, tr, engine=engine)
    with pytest.raises(ValueError, match=r"^train\.norm: got 'covariance'; allowed: 'euclidean' for the \(m, r\) flow"):
        Flow(_spiked(20), STUDENT, tr)
    with pytest.raises(ValueError, match=r"^ode\.expectations: got 'decomposed', but train\.norm is 'covariance'"):
        run(_spiked(20), STUDENT, tr, engine=ODE(expectations="decomposed"))
    with pytest.raises(ConfigError) as e:
        load_config(data={"d": 20, "train": {"spherical": True, "norm": "sigma"}})
    assert "\n" not in str(e.value) and str(e.value).startswith("train.norm: got 'sigma'"), str(e.value)


def test_default_norm_leaves_keys_and_descriptions_unchanged():
    """Left at its default the option is not written: the resolved TOML configuration, hence
    the store key, and a Python run's description are those of a configuration without it
    (planted bug caught: 'norm' always written, which re-keys every stored run)."""
    base = {"d": 20, "train": {"spherical": True}}
    explicit = {"d": 20, "train": {"spherical": True, "norm": "euclidean"}}
    assert "norm" not in load_config(data=base).to_dict()["train"]
    assert run_key(load_config(data=base)) == run_key(load_config(data=explicit))
    cov = load_config(data={"d": 20, "train": {"spherical": True, "norm": "covariance"}})
    assert cov.to_dict()["train"]["norm"] == "covariance" and run_key(cov) != run_key(load_config(data=base))
    desc = _description(_spiked(20), STUDENT, Training(), Chain(), 1, 0)
    assert "norm" not in desc["training"]
    desc = _description(_spiked(20), STUDENT, Training(spherical=True, norm="covariance"), Chain(), 1, 0)
    assert desc["training"]["norm"] == "covariance"
