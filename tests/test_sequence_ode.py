"""The ODE engine for one-row sequence models (tied, attention) and the loss-landscape tools.

The ODE field is the expected one-step increment of the exact chain: checked against the
Monte Carlo mean of one chain step at a fixed state, and its trajectory against the chain's
mean over seeds. The landscape F(m, e) of the positional/semantic attention model: its
symmetries, its Hessian at the origin and the first escape direction.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgdlab import ODE, Chain, Training, run
from sgdlab._kernels import _tensor_rule
from sgdlab._sequence_drift import PLAIN_ERROR
from sgdlab._wishart import psd_cholesky
from sgdlab.api import _model
from sgdlab.engines._driver import drive, seed_keys
from sgdlab.landscape import (
    first_escape_direction,
    hessian_at_origin,
    loss_function,
    loss_grid,
    positional_semantic_model,
    ratio_loss_function,
)
from sgdlab.sequence import SequenceProblem, SequenceStudent

SEEDS = 4000


def _one_chain_step(model, Q, M, seeds=SEEDS):
    """Increments (Q, M) of one chain step from the fixed state (Q, M), one row per seed."""
    eng = Chain().build(model)
    G = jnp.block([[Q, M], [M.T, jnp.eye(model.r)]])
    L, worst = psd_cholesky(G)
    lr = jnp.asarray(model.training.lr)

    def one(key):
        s = {"G": G, "L": L, "worst": worst, "a": jnp.ones(1), "key": key, "lr": lr, "lr_a": lr,
             "t": jnp.zeros((), jnp.int64), "noise": jnp.asarray(1.0), "d": jnp.asarray(float(model.problem.d))}
        return eng.step(s)["G"] - G

    dG = np.asarray(jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(11), seeds)))
    return np.concatenate([dG[:, :1, 0], dG[:, 0, 1:]], axis=1)  # (seeds, 1 + r): dQ, dM


def _field(model, Q, M, **kw):
    field, _ = ODE(**kw).velocity(model)
    v = field(0.0, {"Q": Q, "M": M, "a": jnp.ones(1)}, None)
    return np.concatenate([np.ravel(v["Q"]), np.ravel(v["M"])])


TIED_POOLED = (SequenceProblem(d=30, length=2, link="h2", combine="pooled"), SequenceStudent(kind="tied"))
TIED_SUM3 = (SequenceProblem(d=10_000, length=3, link="h2", combine="sum"), SequenceStudent(kind="tied"))
ATTENTION = (
    SequenceProblem(d=30, length=2, combine="attention", omega=0.5, positional="opposite", positional_scale=1.0),
    SequenceStudent(kind="attention"),
)


@pytest.mark.parametrize(
    "case, training, M, nodes",
    [
        # plain SGD: the field is the exact expected increment, lr^2 terms included (large lr, small d)
        (TIED_POOLED, Training(lr=0.05, batch=4), [[0.4]], 6),
        (ATTENTION, Training(lr=0.05, batch=1), [[0.4, 0.3]], None),
        # spherical SGD at lr d = 0.5: the lr^2 d noise term and its renormalisation (batch 4: at
        # batch 1 the increments of this h2 model are so skewed (skewness ~ -30) that their
        # mean over a few thousand seeds sits ~2 SE above the limit it converges to)
        (TIED_SUM3, Training(lr=0.5e-4, batch=4, spherical=True), [[0.4]], 5),
    ],
    ids=["tied-pooled-L2-b4", "attention-positional-b1", "tied-sum-L3-spherical-b4"],
)
def test_field_is_the_mean_one_step_chain_increment(case, training, M, nodes):
    """At a fixed (Q, M) the ODE field equals the Monte Carlo mean of one chain step within
    4 standard errors, component by component, and the field without the lr^2 terms is
    rejected (> 6 SE on some component): catches a wrong noise term (d - P, 1/n_b, the
    positional shifts delta_l), a wrong spherical correction or a wrong token sum."""
    model = _model(*case, training)
    Q, M = jnp.ones((1, 1)), jnp.asarray(M)
    inc = _one_chain_step(model, Q, M)
    sl = slice(1, None) if training.spherical else slice(None)  # spherical: Q stays 1
    mean, se = inc.mean(0)[sl], inc.std(0)[sl] / math.sqrt(SEEDS)
    z = (_field(model, Q, M, nodes=nodes)[sl] - mean) / se
    z1 = (_field(model, Q, M, nodes=nodes, second_order=False)[sl] - mean) / se
    assert np.all(np.abs(z) < 4), z
    assert np.max(np.abs(z1)) > 6, z1


@pytest.mark.parametrize("training", [Training(lr=0.1, batch=3), Training(lr=0.1, batch=2, spherical=True)])
def test_field_equals_brute_force_quadrature_over_all_token_coordinates(training):
    """The field integrates the coordinates y_l[2:] (here the positional one) analytically.
    Against a brute-force tensor rule over all P = 3 coordinates of each token (the same
    4 nodes on y_l[0:2], 2 nodes on y_l[2], exact for its polynomial dependence), written
    from the chain's step (Z = (Y + shift L) L^T), the expected increments agree to
    rounding: catches a dropped positional term (E|sum_l c_l delta_l[2:]|^2, the
    L[1:, 2:] part of E[c N]) that the Monte Carlo tests cannot resolve."""
    model = _model(dataclasses.replace(ATTENTION[0], d=20), ATTENTION[1], training)
    lr, n, d, P, T = training.lr, training.batch, 20, 3, 2
    Q, M = jnp.ones((1, 1)) * 1.1, jnp.asarray([[0.4, -0.3]])
    G = jnp.block([[Q, M], [M.T, jnp.eye(2)]])
    L = jnp.linalg.cholesky(G)
    shift = jnp.concatenate([jnp.zeros((T, 1)), jnp.asarray(model.offsets)], axis=1) @ L
    x4, w4 = _tensor_rule(4, 4)
    x2, w2 = _tensor_rule(2, 2)
    y01 = np.repeat(x4, len(w2), axis=0).reshape(-1, T, 2)
    y2 = np.tile(x2, (len(w4), 1)).reshape(-1, T, 1)
    Y = jnp.asarray(np.concatenate([y01, y2], axis=2)) + shift  # (N, L, P): shifted tokens
    w = jnp.asarray(np.outer(w4, w2).ravel())
    Z = Y @ L.T
    c = jax.vmap(lambda z: -jax.grad(model.token_loss)(z[:, 0], z[:, 1], 0.0))(Z)  # (N, L)
    E = lambda a: jnp.tensordot(w, a, axes=(0, 0))  # noqa: E731
    cl = jnp.sum(c * Z[:, :, 0], axis=1)
    cN = jnp.einsum("nl,nlk->nk", c, Z[:, :, 1:])
    v = jnp.einsum("nl,nlk->nk", c, Y)
    A1, g = E(cl), E(v)
    XX = (E(jnp.sum(v * v, axis=1)) + (d - P) * E(jnp.sum(c * c, axis=1))) / n + (1 - 1 / n) * g @ g
    q, dQ, dM = Q[0, 0], 2 * lr * A1 + lr**2 * XX, lr * E(cN)
    if training.spherical:
        ED = A1 / q
        EDD = (E(cl * cl) / n + (1 - 1 / n) * A1**2) / q**2
        EDLC = E(cl * cl) / (n * q) + (1 - 1 / n) * ED * A1
        dQ, dM = dQ - 2 * lr * ED * q + lr**2 * (q * EDD - 2 * EDLC), dM - lr * ED * M[0]
        dM, dQ = dM - 0.5 * dQ * M[0], dQ - dQ * q
    want = np.concatenate([[float(dQ)], np.asarray(dM)])
    got = _field(model, Q, M, nodes=4)
    assert np.allclose(got, want, rtol=1e-10, atol=1e-14 * np.max(np.abs(want))), (got, want)


def test_ode_trajectory_matches_the_chain_mean_for_attention_with_positions():
    """Spherical SGD on the positional/semantic attention model (omega = 0.25, opposite
    encodings), d = 1000, lr = 2/d, m0 = 0.2 (so e0 = 0.2): over 400 steps m grows and e
    shrinks by ~50 standard errors of the mean of 600 chain seeds; the ODE (default
    quadrature) follows the mean of both within 4 standard errors at every record. (The
    chain's cost is its compilation: the steps themselves take well under a second.)"""
    d, steps, seeds = 1000, 400, 600
    prob = SequenceProblem(d=d, length=2, combine="attention", omega=0.25, positional="opposite")
    stu = SequenceStudent(kind="attention")
    tr = Training(lr=2.0 / d, steps=steps, spherical=True, init=0.2, record_every=100, escape_threshold=0.99)
    model = _model(prob, stu, tr)
    out = drive(Chain().build(model), seed_keys(0, seeds), steps=steps, every=100, threshold=0.99)
    M = out.M[:, 1:, 0, :]  # (seeds, records, [m, e])
    mean, se = M.mean(0), M.std(0) / math.sqrt(seeds)
    res = run(prob, stu, tr, engine=ODE())
    ode = res.M[0, 1:, 0, :]
    assert res.info["quadrature_error"] < 0.1, res.info
    assert abs(mean[-1, 0] - 0.2) > 10 * se[-1, 0] and abs(mean[-1, 1] - 0.2) > 10 * se[-1, 1], (mean, se)
    z = (ode - mean) / se
    assert np.all(np.abs(z) < 4), z


def test_plain_network_is_refused_with_one_line():
    prob = SequenceProblem(d=50, length=2, link="h2", combine="sum")
    with pytest.raises(ValueError) as err:
        run(prob, SequenceStudent(kind="plain"), Training(steps=10), engine=ODE())
    assert str(err.value) == PLAIN_ERROR and "\n" not in PLAIN_ERROR
    assert "position-specific" in PLAIN_ERROR and "'chain' or 'full'" in PLAIN_ERROR


# --------------------------------------------------------------------------------------
# Landscape of the positional/semantic model
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("omega", [0.3, 0.8])
def test_landscape_is_even_in_m_and_in_e(omega):
    """F(m, e) = F(-m, e) = F(m, -e) (the softmax of nu nu^T is even in nu; the opposite
    encodings swap sign with u), to 1e-10 on a grid; NaN exactly outside the disk; and the
    grid equals the model's population risk."""
    model = positional_semantic_model(omega)
    x = np.linspace(-1.0, 1.0, 9)
    F = loss_grid(model, x, x)
    inside = x[:, None] ** 2 + x[None, :] ** 2 <= 1.0 + 1e-12
    assert np.array_equal(np.isfinite(F), inside)
    G = np.where(inside, F, 0.0)
    assert np.max(np.abs(G - G[::-1, :])) < 1e-10
    assert np.max(np.abs(G - G[:, ::-1])) < 1e-10
    assert np.ptp(G[inside]) > 1e-2  # not flat
    pr = model.population_risk(jnp.asarray([[x[3], x[5]]]), jnp.ones((1, 1)))
    assert abs(float(pr) - F[3, 5]) < 1e-12


def test_hessian_at_origin_matches_finite_differences_and_gradient_vanishes():
    """jax.hessian of the likelihood-ratio form against central differences of the
    population risk itself (an independent quadrature path, 24^4 nodes, h = 0.1): the
    curvatures agree to 3% of their scale, the mixed term vanishes, and so does the
    gradient at the origin."""
    model = positional_semantic_model(0.5)
    pts = 24**4
    H = hessian_at_origin(model, points=pts)
    h = 0.1
    F = loss_grid(model, np.array([-h, 0.0, h]), np.array([-h, 0.0, h]), points=pts)
    Hfd = np.array(
        [
            [(F[2, 1] - 2 * F[1, 1] + F[0, 1]) / h**2, (F[2, 2] - F[2, 0] - F[0, 2] + F[0, 0]) / (4 * h * h)],
            [0.0, (F[1, 2] - 2 * F[1, 1] + F[1, 0]) / h**2],
        ]
    )
    Hfd[1, 0] = Hfd[0, 1]
    scale = np.max(np.abs(H))
    assert np.max(np.abs(H - Hfd)) < 0.03 * scale, (H, Hfd)
    assert abs(H[0, 1]) < 1e-10 * scale
    for fn in (loss_function(model), ratio_loss_function(model, pts)):
        g = jax.jit(jax.grad(lambda z, fn=fn: fn(z[0], z[1])))(jnp.zeros(2))
        assert np.max(np.abs(np.asarray(g))) < 1e-10, g
    # the ratio form is the same function near the origin
    Fr = ratio_loss_function(model, pts)
    assert abs(float(Fr(0.1, 0.1)) - F[2, 2]) < 1e-4


@pytest.mark.parametrize("omega, label", [(0.0, "semantic"), (1.0, "positional")])
def test_first_escape_direction(omega, label):
    """Pure semantic target (omega = 0): the origin is unstable along m and stable along e
    (H = diag(-0.22, +0.13)); pure positional target (omega = 1): F does not depend on m
    and the origin is unstable along e (H_ee = -0.20)."""
    out = first_escape_direction(positional_semantic_model(omega), points=20**4)
    assert out["label"] == label, out
    H = out["hessian"]
    if omega == 0.0:
        assert H[0, 0] < -0.1 and H[1, 1] > 0.05, H
    else:
        assert abs(H[0, 0]) < 1e-10 and H[1, 1] < -0.1, H
