"""The ODE velocity of sequence models with one student row (tied network, attention layer).

Same contract as :func:`sgdlab._drift.drift` (``SequenceModel.ode_field``): the state is {Q (1, 1), M (1, r),
a (1,)} and the field returns the expected increment of the exact chain (docs/chain.md,
``engines/chain.py``) per SGD step at the current Gram matrix.

Derivation. Order the rows of G = [[Q, M], [M^T, I_r]] as [w, w*, u_1..u_a] (P = 2 + a) and
take a lower-triangular factor G = L L^T (``psd_cholesky``: a zero pivot at |m| = 1 or
m^2 + |e|^2 = 1 gives a zero column, which is exact). Token l of a sample has coordinates
y_l ~ N(0, I_P), independent across tokens; its positional encoding p_l shifts them to
y~_l = y_l + delta_l, delta_l = L^T c_l, c_l = [0, offsets[l]]. Since L is lower-triangular,
the token fields

    lam_l = (L y~_l)_0 = L_00 y~_l[0],     nu_l = (L y_l)_1       (w*.p_l = 0)

depend only on y_l[0:2]: c_l = -d token_loss / d lam_l is a function of the 2L numbers
y_l[0:2] (and of the label noise xi), integrated by a tensor Gauss–Hermite rule; the other
coordinates y_l[2:] are independent N(0, 1) and are integrated analytically. With batch n
(the chain's C is c / n per token row) and sums over the tokens l of one sample:

    A1   = E[sum_l c_l lam_l]
    E[dM] = lr sum_l E[c_l N~_l],  N~_l = L[1:, :] y~_l, so
            E[c_l N~_l] = L[1:, :2] E[c_l y~_l[0:2]] + L[1:, 2:] E[c_l] delta_l[2:]
    g    = E[sum_l c_l y~_l]            (components 2: are sum_l E[c_l] delta_l[2:])
    E|sum_l c_l y~_l|^2 = E|sum_l c_l y~_l[0:2]|^2 + (P - 2) sum_l E[c_l^2]
                          + E|sum_l c_l delta_l[2:]|^2
    XX   = (E|sum_l c_l y~_l|^2 + (d - P) E[sum_l c_l^2]) / n + (1 - 1/n) |g|^2
    E[dQ] = 2 lr A1 + lr^2 XX

(XX = E[C^T (Y~ Y~^T + K_perp) C], K_perp ~ Wishart(d - P)). Spherical SGD and the
renormalisation add the terms of ``ode.py`` (shared helper ``_geometry``) with the
per-sample scalar cl = sum_l c_l lam_l in place of c lambda: E[D] = A1 / Q,
E[D^2] = (E[cl^2] / n + (1 - 1/n) A1^2) / Q^2, E[D Lam^T C] = E[cl^2] / (n Q)
+ (1 - 1/n) A1^2 / Q. ``second_order=False`` drops every lr^2 term.

Quadrature: ``nodes`` per axis on 2L axes, plus one for the label noise when
``problem.noise > 0`` (default: the most within SEQUENCE_POINTS = 400,000 tensor points, at
most 40; the points of negligible weight are then dropped, which leaves about a third).
Exact for polynomial integrands of degree <= 2 nodes - 1 per axis (the tied network with
Hermite links); the attention layer's softmax(lam lam^T) has sharp transitions far from
the origin and needs many nodes (L = 2, omega = 0.5: the drift of e is off by 20% with 11
nodes per axis, 1% with 24); ``info["quadrature_error"]`` states the change of the initial
velocity against a rule with 3/4 of the nodes.
Position-specific (plain) networks have p = L rows and are refused (chain or full engine).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ._drift import _geometry, traced_args
from ._kernels import _tensor_rule
from ._wishart import psd_cholesky
from .risk import quadrature_nodes

__all__ = ["PLAIN_ERROR", "check_sequence_model", "sequence_velocity"]

SEQUENCE_POINTS = 400_000  # tensor-rule budget before pruning: 25 nodes per axis for L = 2, 8 for L = 3
PRUNE = 1e-15  # tensor points with weight below PRUNE * (largest weight) are dropped

PLAIN_ERROR = (
    "engine: got 'ode' for the position-specific network; allowed: 'chain' or 'full' "
    "(the ODE covers one-row students: tied, attention)"
)


def check_sequence_model(model) -> None:
    """The ODE covers one-row sequence students only: refuse the position-specific network."""
    if model.p != 1:
        raise ValueError(PLAIN_ERROR)


def sequence_velocity(model, *, second_order: bool, nodes: int | None):
    """(field, nodes): field(t, state, args) is the expected increment per SGD step of
    state = {Q (1, 1), M (1, r), a (1,)} for a one-row sequence model."""
    check_sequence_model(model)
    T, r, d = model.tokens, model.a, model.problem.d  # r: the fixed (frame) directions
    P = 1 + r
    tr = model.training
    n, lr0 = tr.batch, tr.lr
    schedule = tr.lr_schedule
    noisy = model.problem.noise > 0
    k = 2 * T + (1 if noisy else 0)
    if nodes is None:
        nodes = quadrature_nodes(k, budget=SEQUENCE_POINTS)
    pts, wts = _tensor_rule(int(nodes), k)
    keep = wts > PRUNE * wts.max()  # drop the far corners of the tensor grid (mass < 1e-13)
    pts, wts = pts[keep], wts[keep]
    Y = jnp.asarray(pts[:, : 2 * T].reshape(-1, T, 2))  # y_l[0:2] per token
    XI = jnp.asarray(pts[:, 2 * T]) if noisy else jnp.zeros(len(pts))
    w = jnp.asarray(wts)
    cvec = jnp.asarray(np.concatenate([np.zeros((T, 1)), model.offsets], axis=1))  # (L, P)
    grads = jax.vmap(lambda lam, nu, xi: -jax.grad(model.token_loss)(lam, nu, xi))
    eye_r = jnp.eye(r)

    def E(x):
        return jnp.tensordot(w, x, axes=(0, 0))

    def field(t, s, args):
        Q, M, a = s["Q"], s["M"], s["a"]
        lr, _, dd, nz = traced_args(args, lr0, 0.0, d)
        if schedule is not None:
            lr = lr * schedule(t)
        lr2 = lr**2 if second_order else 0.0
        G = jnp.block([[Q, M], [M.T, eye_r]])
        Lc, _ = psd_cholesky(G)
        delta = cvec @ Lc  # row l: delta_l = L^T c_l
        Yt = Y + delta[None, :, :2]  # (N, L, 2): shifted y~_l[0:2]
        lam = Lc[0, 0] * Yt[..., 0]
        nu = Lc[1, 0] * Y[..., 0] + Lc[1, 1] * Y[..., 1]
        c = grads(lam, nu, XI * nz)  # (N, L)
        dl = delta[:, 2:]  # (L, P - 2)
        cl = jnp.sum(c * lam, axis=1)
        A1 = E(cl)
        v01 = jnp.sum(c[..., None] * Yt, axis=1)  # (N, 2): sum_l c_l y~_l[0:2]
        cd = c @ dl  # (N, P - 2): sum_l c_l delta_l[2:]
        g01, g2 = E(v01), E(c) @ dl
        Ec2 = jnp.sum(E(c * c))
        Ev2 = E(jnp.sum(v01 * v01, axis=1)) + (P - 2) * Ec2 + E(jnp.sum(cd * cd, axis=1))
        XX = (Ev2 + (dd - P) * Ec2) / n + (1.0 - 1.0 / n) * (g01 @ g01 + g2 @ g2)
        dQ = jnp.reshape(2.0 * lr * A1 + lr2 * XX, (1, 1))
        dM = lr * (Lc[1:, :2] @ g01 + Lc[1:, 2:] @ g2)[None, :]

        def moments():
            Ecl2 = jnp.reshape(E(cl * cl), (1, 1))
            return Ecl2, Ecl2

        dQ, dM = _geometry(tr, Q, M, dQ, dM, jnp.reshape(A1, (1, 1)), moments, n, lr, lr2)
        return {"Q": dQ, "M": dM, "a": jnp.zeros_like(a)}

    # compiled once here: ``_quadrature_error`` evaluates the field outside the solver, where
    # op-by-op dispatch of the large quadrature would cost seconds
    return jax.jit(field), int(nodes)
