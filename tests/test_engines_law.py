"""The chain and the full d-dimensional simulation agree in law (docs/chain.md, "How to test it").

For each configuration, ``Chain()`` and ``Full(dtype="float64")`` are run over hundreds of
seeds at small d, and every final order parameter (M_ij, Q_ij, and a_j when trained;
Q_jj is skipped when the rows are renormalised, it is 1 by construction) is compared with a
two-sample Kolmogorov-Smirnov test.

Threshold. Both engines use fixed (different) seeds, so every p-value is deterministic.
With k entries per configuration we require min p > ALPHA / k with ALPHA = 1e-3
(Bonferroni): if the engines agree in law, a fresh choice of seeds would fail a configuration
with probability at most 1e-3, so the fixed seeds are not "lucky". With the correct engines
the observed minima are 0.024 to 0.93 (thresholds 1e-3 / k = 1e-3 ... 6.7e-5); each planted bug
below gives 7e-6 or less on the configuration that names it, or makes seeds of the chain
diverge (a Gram matrix that is no longer PSD), which the check also counts as a failure.

Power. Each law test names the planted bug it catches; ``test_*_catches_*`` build a chain
with that bug (a copy of ``sgdlab.engines.chain`` with one source line changed, compiled
into a fresh module: its ``Chain`` is a different class, so no cached build or compiled
step of the real chain is reused) and assert that the same check REJECTS it.
Runs are shared between tests through module-scoped fixtures.
"""

from __future__ import annotations

import inspect
import sys
import types

import numpy as np
import pytest
from scipy import stats

import sgdlab.engines.chain as chain_module
from sgdlab import Chain, Full, Problem, Student, Training, run

ALPHA = 1e-3  # family-wise level per configuration (Bonferroni over its entries)
SEED_FULL, SEED_CHAIN = 1, 2
N_SEEDS = 400
# A single-neuron spherical/projected run has one non-constant entry (M_00) and the
# geometry bugs (tangent projection) shift it by little: more seeds there (still cheap:
# compilation dominates the cost, not the seeds). At 1500 seeds the KS check rejected a
# chain without the tangent projection (no_tangent) at p ~ 1e-3 to 2e-3 depending on the
# stream, i.e. marginally: 4000 seeds.
N_SEEDS_P1 = 4000
# The two batch configurations carry the power tests of the Wishart branches (no_YYt,
# wishart_df_d: a 12% change of the lr^2 d term), which 400 seeds detect only marginally
# (with the Marsaglia–Tsang chi-square stream, p ~ 0.04 for no_YYt), 1500 seeds at p ~ 1e-4
# to 1e-2 depending on the stream: 6000 seeds (the KS statistic's scale grows as sqrt(n)).
N_SEEDS_BATCH = 6000

# name -> (problem, student, training, seeds)
CONFIGS = {
    # (i) single neuron, spherical, square loss, h3, random start: lr sqrt(d) ~ 0.5, the
    # eta^2 d term dominates the dynamics of M
    "sph_random": (
        Problem(d=40, link="h3"),
        Student(activation="h3"),
        Training(lr=0.08, steps=200, spherical=True, record_every=200),
        N_SEEDS,
    ),
    # (i) warm start m0 = 0.5, stopped mid-way through the decay of M (mean 0.5 -> 0.3)
    "sph_warm": (
        Problem(d=40, link="h3"),
        Student(activation="h3"),
        Training(lr=0.1, steps=9, spherical=True, record_every=9, init=0.5),
        N_SEEDS_P1,
    ),
    # (ii) committee p = 3, r = 2, plain SGD, batch 4 (p x p Bartlett), trained second layer
    "committee": (
        Problem(d=30, link="erf", directions=2),
        Student(width=3, activation="erf", second_layer="trained"),
        Training(lr=0.3, batch=4, steps=200, record_every=200),
        N_SEEDS,
    ),
    # (iii) correlation loss, label noise, relu student (|Q| grows like lr^2 d t)
    "correlation": (
        Problem(d=30, link="h2", noise=0.3),
        Student(activation="relu"),
        Training(loss="correlation", lr=0.1, steps=200, record_every=200, init=0.2),
        N_SEEDS,
    ),
    # (iv) projected SGD (renormalise only), same regime as sph_warm
    "projected": (
        Problem(d=40, link="h3"),
        Student(activation="h3"),
        Training(lr=0.1, steps=12, projected=True, record_every=12, init=0.5),
        N_SEEDS_P1,
    ),
    # (v) batch 16 > p = 2: the p x p Bartlett branch of wishart_quadratic
    "batch16_p2": (
        Problem(d=40, link="h2"),
        Student(width=2, activation="relu", output_scale="sum"),
        Training(lr=0.05, batch=16, steps=150, record_every=150),
        N_SEEDS_BATCH,
    ),
    # (v) batch 2 < p = 3: the n x n Bartlett branch
    "batch2_p3": (
        Problem(d=30, link="erf"),
        Student(width=3, activation="erf"),
        Training(lr=0.3, batch=2, steps=50, record_every=50),
        N_SEEDS_BATCH,
    ),
}

# name -> (line of chain.py, its buggy replacement)
PLANTED = {
    # no C^T K_perp C term at all
    "no_wishart": ("dr.wishart_quadratic(Cs, d - P)", "0.0 * dr.wishart_quadratic(Cs, d - P)"),
    # Wishart degrees of freedom d instead of d - P
    "wishart_df_d": ("dr.wishart_quadratic(Cs, d - P)", "dr.wishart_quadratic(Cs, d)"),
    # X X^T without its in-span part Y Y^T
    "no_YYt": ("noise = YC.T @ YC + ", "noise = "),
    # spherical step without the tangent projection (i.e. projected SGD)
    "no_tangent": ("A = 1.0 - lr * jnp.sum(C * Lam, axis=0) / jnp.diag(Q)", "A = jnp.ones(p)"),
    # projected SGD stepped as spherical SGD (tangent projection applied)
    "projected_as_spherical": ("if tr.spherical:", "if tr.renormalise:"),
    # fields with covariance L^T L instead of G = L L^T
    "field_covariance": ("Z0 = Y @ L.T", "Z0 = Y @ L"),
}


def chain_with_line_replaced(old: str, new: str, tag: str) -> Chain:
    """``Chain()`` from a copy of sgdlab.engines.chain with the source line ``old`` (which must
    occur once) replaced by ``new``, compiled into a fresh module ``..._planted_{tag}``."""
    src = inspect.getsource(chain_module)
    assert src.count(old) == 1, f"planted bug {tag!r}: line {old!r} not found once in chain.py; update PLANTED"
    name = f"{chain_module.__name__}_planted_{tag}"
    mod = types.ModuleType(name)
    mod.__package__ = chain_module.__package__
    sys.modules[name] = mod  # dataclasses look their module up
    exec(compile(src.replace(old, new), f"<planted {tag}>", "exec"), mod.__dict__)
    return mod.Chain()


def planted_chain(bug: str) -> Chain:
    """``Chain()`` from a copy of sgdlab.engines.chain with the planted bug ``bug``."""
    return chain_with_line_replaced(*PLANTED[bug], bug)


def _run(config: str, engine, seed: int):
    problem, student, training, seeds = CONFIGS[config]
    return run(problem, student, training, engine=engine, seeds=seeds, seed=seed)


def final_entries(res, renormalised: bool) -> dict[str, np.ndarray]:
    out = {}
    _, _, p, r = res.M.shape
    for i in range(p):
        for j in range(r):
            out[f"M{i}{j}"] = res.M[:, -1, i, j]
    for i in range(p):
        for j in range(i, p):
            if not (i == j and renormalised):
                out[f"Q{i}{j}"] = res.Q[:, -1, i, j]
    if res.trained_second_layer:
        for i in range(p):
            out[f"a{i}"] = res.a[:, -1, i]
    return out


def law_pvalues(config: str, ref, other) -> dict[str, float]:
    """KS p-value per final entry; an entry with NaN (a diverged seed) gets p = 0."""
    tr = CONFIGS[config][2]
    e1, e2 = final_entries(ref, tr.renormalise), final_entries(other, tr.renormalise)
    out = {}
    for k in e1:
        if not (np.all(np.isfinite(e1[k])) and np.all(np.isfinite(e2[k]))):
            out[k] = 0.0
        else:
            out[k] = float(stats.ks_2samp(e1[k], e2[k]).pvalue)
    return out


def agree_in_law(config: str, ref, other) -> tuple[bool, dict[str, float]]:
    ps = law_pvalues(config, ref, other)
    ok = min(ps.values()) > ALPHA / len(ps)
    ok &= bool(np.all(np.isnan(ref.diverged_step)) and np.all(np.isnan(other.diverged_step)))
    return ok, ps


# --------------------------------------------------------------------------------------
# shared runs
# --------------------------------------------------------------------------------------

_cache: dict = {}


def _cached(config: str, kind: str):
    key = (config, kind)
    if key not in _cache:
        if kind == "full":
            _cache[key] = _run(config, Full(dtype="float64"), SEED_FULL)
        elif kind == "chain":
            _cache[key] = _run(config, Chain(), SEED_CHAIN)
        elif kind == "chain32":
            _cache[key] = _run(config, Chain(dtype="float32"), SEED_CHAIN)
        else:
            _cache[key] = _run(config, planted_chain(kind), SEED_CHAIN)
    return _cache[key]


@pytest.fixture(scope="module")
def runs():
    yield _cached
    _cache.clear()


def _check_law(runs, config):
    ok, ps = agree_in_law(config, runs(config, "full"), runs(config, "chain"))
    assert ok, {k: f"{v:.3g}" for k, v in ps.items()}
    return ps


def _check_rejects(runs, config, bug):
    ref = runs(config, "full")
    assert np.all(np.isnan(ref.diverged_step))  # else any run would be "rejected"
    ok, ps = agree_in_law(config, ref, runs(config, bug))
    assert not ok, f"planted bug {bug} not detected on {config}: " + str({k: f"{v:.3g}" for k, v in ps.items()})


# --------------------------------------------------------------------------------------
# the law tests
# --------------------------------------------------------------------------------------


def test_spherical_h3_random_start(runs):
    """(i) Single neuron, spherical, square loss, h3, random start. Catches a chain without
    the Wishart term C^T K_perp C (planted ``no_wishart``: p ~ 1e-200)."""
    _check_law(runs, "sph_random")


def test_spherical_h3_warm_start(runs):
    """(i) Same, warm start m0 = 0.5, mid-decay. Catches a spherical step without the
    tangent projection (planted ``no_tangent``)."""
    _check_law(runs, "sph_warm")


def test_committee_trained_second_layer(runs):
    """(ii) Committee p = 3, r = 2, plain SGD, batch 4, trained second layer. Catches the
    Wishart degrees of freedom d instead of d - P (``wishart_df_d``), the missing Y Y^T term
    (``no_YYt``) and fields sampled with the wrong covariance (``field_covariance``)."""
    _check_law(runs, "committee")


def test_correlation_loss(runs):
    """(iii) Correlation loss with label noise. Catches ``no_wishart``."""
    _check_law(runs, "correlation")


def test_projected(runs):
    """(iv) Projected SGD (renormalise only). Catches a projected step that applies the
    tangent projection (``projected_as_spherical``)."""
    _check_law(runs, "projected")


def test_batch_larger_than_width(runs):
    """(v) Batch 16, p = 2: the p x p Bartlett branch. Catches ``no_wishart`` (p ~ 2e-11)
    and ``no_YYt`` (with a large batch C^T Y Y^T C is the squared in-span gradient, O(1),
    not O(1/n); without it a chain seed's Gram matrix leaves the PSD cone and diverges)."""
    _check_law(runs, "batch16_p2")


def test_batch_smaller_than_width(runs):
    """(v) Batch 2, p = 3: the n x n Bartlett branch. Catches ``wishart_df_d``."""
    _check_law(runs, "batch2_p3")


# --------------------------------------------------------------------------------------
# power: the same check rejects each planted bug
# --------------------------------------------------------------------------------------

POWER = [
    ("sph_random", "no_wishart"),
    ("sph_warm", "no_tangent"),
    ("committee", "wishart_df_d"),
    ("committee", "no_YYt"),
    ("committee", "field_covariance"),
    ("correlation", "no_wishart"),
    ("projected", "projected_as_spherical"),
    ("batch16_p2", "no_wishart"),
    ("batch16_p2", "no_YYt"),
    ("batch2_p3", "wishart_df_d"),
]


@pytest.mark.parametrize("config", ["sph_random", "committee"])
def test_float32_chain_agrees_in_law(runs, config):
    """``Chain(dtype="float32")`` against the float64 full simulation, same check. Catches a
    single-precision chain whose rounding (e.g. a float32 chi-square at large d - P, or the
    Gram update losing the lr^2 term) shifts the law."""
    ok, ps = agree_in_law(config, runs(config, "full"), runs(config, "chain32"))
    assert ok, {k: f"{v:.3g}" for k, v in ps.items()}
    assert runs(config, "chain32").M.dtype == np.float64  # results are float64 whatever the engine


@pytest.mark.parametrize("config, bug", POWER, ids=[f"{c}-{b}" for c, b in POWER])
def test_law_check_catches_planted_bug(runs, config, bug):
    _check_rejects(runs, config, bug)


def test_planted_chain_is_a_fresh_engine():
    """The planted copies must not share the real chain's class (nor its build cache)."""
    assert type(planted_chain("no_wishart")) is not Chain
    assert planted_chain("no_wishart") != Chain()
