"""The decomposed ODE drift (``sgdlab._fields``): integrals over at most four fields.

Identities at fixed order parameters against independent references (the tensor rule where
it is exact, the Saad–Solla erf equations, one-dimensional adaptive quadrature for relu),
and the ODE against the chain's mean for wide relu committees (trained second layer; the
4-cluster XOR mixture).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from sgdlab import ODE, Chain, Problem, Student, Training, run
from sgdlab._drift import drift
from sgdlab._fields import _first_order, _Plan
from sgdlab.data import Mixture
from sgdlab.init import Gram
from sgdlab.model import Model

jax.config.update("jax_enable_x64", True)


def _state(p, a, seed=0, d=40):
    """A generic (Q, M, a): rows of norm 0.7..1.3 with O(1) overlaps with the frame."""
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(p, d))
    W *= rng.uniform(0.7, 1.3, size=(p, 1)) / np.linalg.norm(W, axis=1, keepdims=True)
    W[:, :a] += 0.5 * rng.normal(size=(p, a))
    return {"Q": jnp.asarray(W @ W.T), "M": jnp.asarray(W[:, :a]), "a": jnp.asarray(rng.uniform(0.5, 1.5, p))}


def _velocity(model, how, second=True, args=None, nodes=None, state=None):
    field, _, _ = drift(model, second, nodes, how)
    s = _state(model.p, model.a) if state is None else state
    return field, jax.jit(field)(0.0, s, args)


def _rel(v, w):
    return max(float(jnp.max(jnp.abs(v[k] - w[k]))) / max(float(jnp.max(jnp.abs(w[k]))), 1e-300) for k in v
               if float(jnp.max(jnp.abs(w[k]))) > 0)


XOR = Mixture(means=[[1.2, 0.0], [-1.2, 0.0], [0.0, 1.2], [0.0, -1.2]], latent_std=0.6, sigma_perp=0.9)
XOR_LABELS = jnp.asarray([1.0, 1.0, -1.0, -1.0])


def _xor_label(s, c):
    return XOR_LABELS[c]


POLY_CASES = [
    # committee on isotropic data: square loss, trained second layer, batch 3, label noise
    (Problem(d=50, link="h2", directions=2, noise=0.3), Student(width=3, activation="h3", second_layer="trained"),
     Training(lr=0.1, batch=3)),
    # spherical SGD, correlation loss
    (Problem(d=50, link="h3", directions=2, noise=0.2), Student(width=2, activation="h3"),
     Training(lr=0.1, batch=2, spherical=True, loss="correlation")),
    # the XOR mixture (cluster means, latent and orthogonal scales, labels of the cluster), projected
    (Problem(d=50, directions=1, function=_xor_label, data=XOR), Student(width=2, activation="h2",
     second_layer="trained"), Training(lr=0.1, batch=2, projected=True)),
]


@pytest.mark.parametrize("case", range(len(POLY_CASES)))
def test_decomposed_drift_equals_the_exact_tensor_rule_for_polynomials(case):
    """Polynomial activation and link: both rules are exact, so they agree to round-off
    (1e-10 relative) on M, Q and a, with the lr^2 terms, batch factor, label noise, mixture
    means and covariances, spherical and projected geometries. Catches a missing lr^2
    four-field term (the cross pairs u < v counted once: measured 1.5e-2 relative), a wrong
    |x|^2 correction or a wrong regression of the fields on a pair."""
    model = Model(*POLY_CASES[case])
    f, v = _velocity(model, "decomposed")
    assert f.expectations["method"] == "decomposed" and f.expectations["exact"]
    _, w = _velocity(model, "tensor")
    assert _rel(v, w) < 1e-10, _rel(v, w)


# ---------------------------------------------------------------- erf: Saad & Solla (1995)
def _I3(C, a, b, c):
    """E[g'(u_a) u_b g(u_c)], g = erf(x / sqrt 2) (Saad & Solla 1995, eq. (A3))."""
    l3 = (1 + C[a, a]) * (1 + C[c, c]) - C[a, c] ** 2
    return 2 / math.pi / math.sqrt(l3) * (C[b, c] * (1 + C[a, a]) - C[a, b] * C[a, c]) / (1 + C[a, a])


def _I4(C, a, b, c, e):
    """E[g'(u_a) g'(u_b) g(u_c) g(u_e)] (Saad & Solla 1995, eq. (A4))."""
    l4 = (1 + C[a, a]) * (1 + C[b, b]) - C[a, b] ** 2
    l0 = (l4 * C[c, e] - C[b, c] * C[b, e] * (1 + C[a, a]) - C[a, c] * C[a, e] * (1 + C[b, b])
          + C[a, b] * C[a, c] * C[b, e] + C[a, b] * C[a, e] * C[b, c])
    l1 = (l4 * (1 + C[c, c]) - C[b, c] ** 2 * (1 + C[a, a]) - C[a, c] ** 2 * (1 + C[b, b])
          + 2 * C[a, b] * C[a, c] * C[b, c])
    l2 = (l4 * (1 + C[e, e]) - C[b, e] ** 2 * (1 + C[a, a]) - C[a, e] ** 2 * (1 + C[b, b])
          + 2 * C[a, b] * C[a, e] * C[b, e])
    return 4 / math.pi**2 / math.sqrt(l4) * math.asin(l0 / math.sqrt(l1 * l2))


def test_I4_matches_high_order_quadrature():
    """The Saad–Solla I4 used as the reference below, against a 40-node Gauss–Hermite rule in
    four dimensions (erf is entire; at variances near 1 the rule is converged to 1e-12), at a
    generic covariance."""
    from sgdlab._kernels import gaussian_expectation

    rng = np.random.default_rng(3)
    X = rng.normal(size=(4, 6)) * 0.35
    C = X @ X.T
    g = lambda x: jax.scipy.special.erf(x / math.sqrt(2))  # noqa: E731
    dg = lambda x: math.sqrt(2 / math.pi) * jnp.exp(-x * x / 2)  # noqa: E731
    ref = gaussian_expectation(lambda z: dg(z[:, 0]) * dg(z[:, 1]) * g(z[:, 2]) * g(z[:, 3]), C, 40)
    assert abs(_I4(C, 0, 1, 2, 3) - float(ref)) < 1e-10


def test_erf_committee_equals_the_saad_solla_equations():
    """Soft committee f = sum_i g(lambda_i), y = sum_n g(nu_n), square loss, plain SGD:
    the first-order field is Saad–Solla's, dM_in = lr [sum_m I3(i,n,m) - sum_j I3(i,n,j)]
    and dQ_ik = lr [..](i,k) + (i<->k), and the d-proportional part of the lr^2 term is
    lr^2 sum over pairs of I4 (teacher-teacher, student-student, -2 cross): both to 1e-12
    relative. Catches a sign or weight of a unit, a mis-paired covariance index, and a
    missing four-field term."""
    p, r, lr = 3, 2, 0.05
    model = Model(Problem(d=100, link="erf", directions=r), Student(width=p, activation="erf", output_scale="sum"),
                  Training(lr=lr))
    s = {**_state(p, r, seed=5), "a": jnp.ones(p)}
    G = np.block([[np.asarray(s["Q"]), np.asarray(s["M"])], [np.asarray(s["M"]).T, np.eye(r)]])
    stu, tea = range(p), range(p, p + r)
    cz = np.array([[sum(_I3(G, i, al, m) for m in tea) - sum(_I3(G, i, al, j) for j in stu) for i in stu]
                   for al in range(p + r)])  # E[z_alpha c_i]
    dM = lr * cz[p:].T
    dQ1 = lr * (cz[:p] + cz[:p].T)
    units = list(zip([*stu, *tea], [1] * p + [-1] * r, strict=True))  # (field, weight in e = f - y)
    Ecc = np.array([[sum(_I4(G, i, k, u, v) * su * sv for u, su in units for v, sv in units) for k in stu]
                    for i in stu])
    f1, _, _ = drift(model, False, None, "decomposed")
    assert "closed form" in f1.expectations["first_order"]
    args = lambda d: {"lr": jnp.asarray(lr), "lr_a": jnp.asarray(lr), "d": jnp.asarray(float(d))}  # noqa: E731
    v1 = jax.jit(f1)(0.0, s, args(100))
    np.testing.assert_allclose(np.asarray(v1["M"]), dM, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(np.asarray(v1["Q"]), dQ1, rtol=1e-12, atol=1e-15)
    f2, _, _ = drift(model, True, None, "decomposed")
    va, vb = (jax.jit(f2)(0.0, s, args(d)) for d in (100, 1100))
    slope = (np.asarray(vb["Q"]) - np.asarray(va["Q"])) / 1000.0
    np.testing.assert_allclose(slope, lr**2 * Ecc, rtol=1e-12, atol=1e-16)


def test_erf_rest_of_the_lr2_term_by_qmc_agrees_with_the_per_tuple_rule(monkeypatch):
    """Beyond ERF_REST_POINTS tuple-nodes (here p = 3: 90 tuples x 6^4) the O(P/d) rest of the
    erf lr^2 term goes to the QMC rule; p = 2 (30 tuples) keeps the per-tuple Gauss-Hermite
    rule. The two rules' fields differ only in that rest: by the same amount at d = 100 and
    1000 (the d-proportional part is the same closed form) and by under 2% of the rest itself.
    Catches a QMC branch that drops or mis-weights the rest, or that counts the closed-form part
    twice (a difference growing with d)."""
    import sgdlab._fields as fields

    p, r, lr = 3, 2, 0.05
    s = {**_state(p, r, seed=5), "a": jnp.ones(p)}
    qmc_budget, tuple_budget = fields.ERF_REST_POINTS, fields.SECOND_ORDER_POINTS

    def velocity(d, budget):
        monkeypatch.setattr(fields, "ERF_REST_POINTS", budget)
        model = Model(Problem(d=d, link="erf", directions=r),
                      Student(width=p, activation="erf", output_scale="sum"), Training(lr=lr))
        f, _, _ = drift(model, True, None, "decomposed")
        args = {"lr": jnp.asarray(lr), "lr_a": jnp.asarray(lr), "d": jnp.asarray(float(d))}
        return f.expectations["second_order"], np.asarray(jax.jit(f)(0.0, s, args)["Q"])

    narrow = Model(Problem(d=100, link="erf", directions=r),
                   Student(width=2, activation="erf", output_scale="sum"), Training(lr=lr))
    assert "Gauss-Hermite" in drift(narrow, True, None, "decomposed")[0].expectations["second_order"]
    diffs, rests = [], []
    for d in (100, 1000):
        how_q, vq = velocity(d, qmc_budget)
        how_g, vg = velocity(d, tuple_budget)
        assert "quasi-Monte Carlo" in how_q and "Gauss-Hermite" in how_g
        _, vg2 = velocity(d + 1000, tuple_budget)
        rests.append(np.abs(vg - (vg2 - vg) / 1000.0 * (d - (p + r))))  # all but the d-proportional part
        diffs.append(np.abs(vq - vg))
    np.testing.assert_allclose(diffs[0], diffs[1], rtol=1e-6, atol=1e-12)
    assert diffs[0].max() < 0.02 * rests[0].max(), (diffs[0].max(), rests[0].max())


# ---------------------------------------------------------------- relu: one-dimensional references
def _relu_pair_reference(m, C, j, u, al):
    """E[z_al theta(z_j) relu(z_u)] and E[relu(z_j) relu(z_u)] with means, by Stein's lemma,
    E[(z_al - m_al) F] = C_al,j E[d_j F] + C_al,u E[d_u F], and one-dimensional adaptive
    quadrature over z_j of closed-form conditional expectations given z_j."""
    sj = math.sqrt(C[j, j])
    b = C[j, u] / C[j, j]
    su = math.sqrt(max(C[u, u] - b * C[j, u], 0.0))
    pj = lambda x: stats.norm.pdf(x, m[j], sj)  # noqa: E731
    mu = lambda x: m[u] + b * (x - m[j])  # noqa: E731
    relu_mean = lambda x: mu(x) * stats.norm.cdf(mu(x) / su) + su * stats.norm.pdf(mu(x) / su)  # noqa: E731
    q = lambda f: integrate.quad(f, 0.0, m[j] + 14 * sj, epsabs=1e-14, epsrel=1e-13, limit=200)[0]  # noqa: E731
    th_relu = q(lambda x: pj(x) * relu_mean(x))  # E[theta_j relu_u]
    th_th = q(lambda x: pj(x) * stats.norm.cdf(mu(x) / su))  # E[theta_j theta_u]
    delta_relu = pj(0.0) * relu_mean(0.0)  # E[delta_j relu_u]
    t3 = m[al] * th_relu + C[al, j] * delta_relu + C[al, u] * th_th
    s0 = q(lambda x: pj(x) * x * relu_mean(x))
    return t3, s0


@pytest.mark.parametrize("means", [False, True])
def test_relu_pair_integrals_match_one_dimensional_quadrature(means):
    """Order-lr integrals of a relu student on a relu target (zero mean, and with cluster
    means, which move the kinks off the origin): the split two-dimensional Gauss–Legendre
    rule agrees with Stein's lemma plus adaptive 1-D quadrature to 1e-8.
    Catches a wrong kink split (at +m/L instead of -m/L: measured 3e-2 off with means) or a
    wrong derivative term of the regression."""
    p, r = 2, 2
    data = Mixture(means=[[0.8, -0.5]], latent_std=0.7, sigma_perp=1.1) if means else None
    model = Model(Problem(d=50, link="relu", directions=r, data=data), Student(width=p, activation="relu"),
                  Training(lr=0.1))
    pl = _Plan(model, False, None)
    s = _state(p, r, seed=2)
    from sgdlab.risk import _component_gaussian

    comp = model.data.components(r, 0)
    mk, Ck = _component_gaussian(model, s["M"], s["Q"], comp, 0)
    t3, s0 = jax.jit(lambda m_, c_: _first_order(pl, m_, c_))(mk, Ck)
    mk, Ck = np.asarray(mk), np.asarray(Ck)
    worst = 0.0
    for j in range(p):
        for ui, u in enumerate(pl.fields):
            if u == j:
                continue
            for al in range(p + r):
                ref3, ref0 = _relu_pair_reference(mk, Ck, j, int(u), al)
                worst = max(worst, abs(float(t3[al, j, ui]) - ref3), abs(float(s0[j, ui]) - ref0))
    assert worst < 1e-8, worst


# ---------------------------------------------------------------- choice of the rule
def test_the_choice_of_rule_is_automatic_and_reported():
    """auto: the exact tensor rule for a small polynomial model, the decomposed drift for a
    relu committee, Monte Carlo for a custom loss over too many fields; a decomposed drift
    asked for a loss that does not decompose is a one-line error naming the field."""
    small = Model(Problem(d=50, link="h3"), Student(activation="h3"), Training())
    assert drift(small, True)[0].expectations["method"] == "tensor"
    relu = Model(Problem(d=50, link="relu", directions=2), Student(width=4, activation="relu"), Training())
    assert drift(relu, True)[0].expectations["method"] == "decomposed"
    logistic = lambda f, y: jnp.log1p(jnp.exp(-y * f))  # noqa: E731
    wide = Model(Problem(d=50, link="relu", directions=2), Student(width=6, activation="relu"), Training(loss=logistic))
    ex = drift(wide, True)[0].expectations
    assert ex["method"] == "monte_carlo" and "does not decompose" in ex["why_not_decomposed"]
    with pytest.raises(ValueError, match="ode.expectations: got 'decomposed'"):
        drift(wide, True, None, "decomposed")
    with pytest.raises(ValueError, match="ode.expectations: got 'exact'"):
        ODE(expectations="exact")


# ---------------------------------------------------------------- ODE against the chain
def _z_max(ode, ch, seeds):
    out = {}
    for name in ("M", "Q", "a"):
        x = getattr(ch, name)
        mean, se = x.mean(axis=0), x.std(axis=0) / math.sqrt(seeds) + 1e-12
        out[name] = float((np.abs(getattr(ode, name)[0] - mean) / se).max())
    return out


def _wide_start(p, a, d, seed=0):
    rng = np.random.default_rng(seed)
    return Gram(Q0=np.eye(p), M0=rng.normal(size=(p, a)) * 2.0 / math.sqrt(d))


def test_ode_matches_chain_for_an_8_unit_relu_committee_with_a_trained_second_layer():
    """p = 8 relu students on a 2-unit relu committee, trained second layer, batch 2, d = 400,
    lr d = 2: the chain's mean M, Q, a (300 seeds) agree with the ODE (decomposed drift, its
    lr^2 term by quasi-Monte Carlo) within 5 standard errors at every record. Catches a wrong
    batch factor, a wrong second-layer drift or a wrong relu integral at width 8; the
    ODE without its lr^2 term misses Q here by more than 20 standard errors (checked when
    this test was written; the identities above catch a missing lr^2 term more cheaply)."""
    d, p, seeds = 400, 8, 300
    pb = Problem(d=d, link="relu", directions=2)
    st = Student(width=p, activation="relu", second_layer="trained", output_scale="sqrt")
    tr = Training(lr=2.0 / d, batch=2, steps=3 * d, record_every=d // 2, init=_wide_start(p, 2, d))
    ode = run(pb, st, tr, engine=ODE())
    assert ode.info["expectations"]["method"] == "decomposed"
    ch = run(pb, st, tr, engine=Chain(), seeds=seeds, seed=7)
    z = _z_max(ode, ch, seeds)
    assert max(z.values()) < 5, z


def test_ode_matches_chain_on_the_xor_mixture_with_8_relu_units():
    """The 4-cluster XOR mixture (means +-1.2 e1 labelled +1, +-1.2 e2 labelled -1, latent std
    0.6, orthogonal std 0.9), 8 relu units, trained second layer, d = 400: the chain's mean
    (300 seeds) within 5 standard errors of the ODE at every record. Catches a mixture term
    summed with the wrong cluster weights, means or scales."""
    d, p, seeds = 400, 8, 300
    pb = Problem(d=d, directions=1, function=_xor_label, data=XOR)
    st = Student(width=p, activation="relu", second_layer="trained", output_scale="sqrt")
    tr = Training(lr=1.0 / d, steps=3 * d, record_every=d // 2, init=_wide_start(p, 2, d, seed=1))
    ode = run(pb, st, tr, engine=ODE())
    assert ode.info["expectations"]["method"] == "decomposed"
    ch = run(pb, st, tr, engine=Chain(), seeds=seeds, seed=9)
    z = _z_max(ode, ch, seeds)
    assert max(z.values()) < 5, z


def test_the_relu_field_is_smooth_in_the_state():
    """The decomposed relu field along a line in state space, s -> v(state + s delta) at nine
    points 1e-3 apart: its fourth difference is at the level of rounding (< 1e-12 relative;
    a smooth field gives ~ h^4). Catches sqrt(eps) noise in the pair rules (a student unit
    paired with itself, whose conditional scale sqrt(c_uu - l21^2) is rounding noise: before
    the fix 6e-6 relative, and the adaptive solver crawled at rtol 1e-8, 742 steps instead
    of ~100 on the curriculum's K = 4 network)."""
    p, r = 3, 2
    rng = np.random.default_rng(0)
    M0, Q0 = np.abs(rng.normal(size=(p, r))) * 0.3, np.eye(p) * 0.9 + 0.1
    model = Model(Problem(d=1000, link="relu", directions=r), Student(width=p, activation="relu", output_scale="sum"),
                  Training(lr=1e-3, steps=100))
    field, _, _ = drift(model, False)
    f = jax.jit(lambda s: field(0.0, {"Q": jnp.asarray(Q0) + 0.1 * s * jnp.eye(p), "M": jnp.asarray(M0) + 0.1 * s,
                                      "a": jnp.ones(p)}, None)["M"])
    vals = np.stack([np.asarray(f(k * 1e-3)) for k in range(9)])
    rough = np.abs(np.diff(vals, 4, axis=0)).max() / np.abs(vals).max()
    assert rough < 1e-12, rough
