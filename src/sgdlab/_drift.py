"""The ODE's vector field: the expected increment of the exact chain per SGD step.

The state is (Q, M, a). Its velocity per SGD step is the *expected increment* of the exact
chain (docs/chain.md) at the current Gram matrix G = [[Q, M], [M^T, I_a]]. Inputs follow a
Gaussian data law, a mixture of components k (probability pi_k, latent mean mu_k, factor
B_k of the latent covariance, orthogonal standard deviation sigma_k; ``sgdlab.data``).
Per component, with G = L L^T and y ~ N(0, I_P) (P = p + a) the whitened coordinates of a
standard Gaussian g, the frame fields are N0 = (L y)_frame, the latent s = mu_k + B_k N0,
the student fields lam = sigma_k (L y)_student + M (s - sigma_k N0), and the coordinates
of x in an orthonormal basis of span[W; U] are xE = sigma_k y + L_frame^T (s - sigma_k N0).
With c(z) = -d loss/d lambda of one sample, batch size n and D the spherical correction
(D_j = sum_b c_bj lambda_bj / (n Q_jj)), all expectations mixed over the components:

    E[dM] = lr E[c s^T] - lr E[D] M
    E[dQ] = lr (E[lambda c^T] + E[c lambda^T]) - lr (E[D] Q + Q E[D]) + lr^2 E[D Q D]
            - lr^2 (E[D Lam^T C] + transpose) + lr^2 E[C^T X X^T C]
    E[C^T X X^T C] = (1/n) E[c c^T |x|^2] + (1 - 1/n) E[c xE^T] E[xE c^T],
    |x|^2 = |s|^2 + sigma^2 (|y|^2 - |N0|^2 + d - P)
    E[da] = -lr_a E[d loss / d a]

(the D terms only for spherical SGD; the batch products are expanded exactly, which gives
the d/n_b noise factor and the (1 - 1/n_b) weight of the squared mean gradient). For
isotropic data (one component, s = N0, sigma = 1) this is the field of docs/chain.md with
|x|^2 = |y|^2 + d - P. Renormalised geometries (spherical, projected) keep Q_jj = 1 by the
first-order normalisation M_ij -> M_ij - dQ_ii M_ij / 2, Q_ij -> Q_ij - (dQ_ii + dQ_jj) Q_ij / 2.
With the covariance norm (``Training(norm="covariance")``, Sigma = I + U^T B U) the kept
quantity is q_j = |w_j|_Sigma^2 = Q_jj + M_j B M_j^T: the spherical D_j uses the Sigma-fields
x^T Sigma w_j = lambda_j + s^T B M_j^T and q_j, and the renormalisation subtracts dq_j / (2 q_j)
with dq_j = dQ_jj + 2 dM_j B M_j^T, so that d q_j / dt = 0 (docs/chain.md). That path takes the
tensor rule (the decomposed drift has no Sigma-fields).
``second_order=False`` drops every lr^2 term: the d -> infinity limit at fixed lr d.
Schedules (data law, ``Training.lr_schedule``) are evaluated at the continuous step time.

Expectations use one tensor-product Gauss–Hermite rule over y (and the label noise):
exact when activation, target and loss are polynomials (the node count is chosen from
the degrees), otherwise up to 40 nodes per axis within ODE_POINTS = 20,000 points (27
per axis in three dimensions, 11 in four, 7 in five; ``ODE(nodes=...)`` overrides).

Smoothed loss (``model.needs_norm``): c also depends on the sample's |x|^2, whose chi^2(d - P)
part is independent of y; every expectation gets one more axis, a generalised
Gauss–Laguerre rule for chi (exact for polynomials in |x|^2, see ``_chi2_nodes``), and the
noise term is E[c c^T |x|^2] with that same |x|^2.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ._kernels import _tensor_rule
from .risk import quadrature_nodes
from .smoothing import DEFAULT_CHI2_NODES, chi2_rule, loss_degree_in_s

__all__ = ["ODE_POINTS", "drift", "poly_degree"]

ODE_POINTS = 20_000  # default tensor-rule budget of the velocity (evaluated at every solver stage)


def poly_degree(model) -> int | None:
    """Degree of c(z) in the fields, when everything is polynomial (else None)."""
    stu, prob, tr = model.student, model.problem, model.training
    ds = stu.activation.degree
    dg = prob.link.degree if prob.is_committee else None
    if ds is None or dg is None or tr.loss not in ("square", "correlation"):
        return None
    dy = max(dg, 1 if prob.noise > 0 else 0)
    return (max(ds, dy) if tr.loss == "square" else dy) + max(ds - 1, 0)


def _chi2_nodes(model) -> int:
    """Gauss–Laguerre nodes for |x|^2 - |y|^2 ~ chi^2(d - P) (smoothed loss).

    For a polynomial loss of degree D in the smoothed field, c is a polynomial of degree
    floor(D / 2) in |x|^2, so E[c c^T |x|^2] has degree 2 floor(D / 2) + 1: floor(D / 2) + 1
    nodes are exact. Otherwise DEFAULT_CHI2_NODES.
    """
    deg = loss_degree_in_s(model.student.activation.degree, model.training.loss)
    if deg is None or not (model.problem.is_committee and model.problem.link.degree is not None):
        return DEFAULT_CHI2_NODES
    return deg // 2 + 1


def _geometry(tr, Q, M, dQ, dM, A1, moments, n, lr, lr2, metric=None):
    """Add the spherical (tangent projection) and renormalisation terms to (dQ, dM).

    ``A1`` = E[lambda c^T] (p, p) per sample; ``moments()`` returns (E[cl cl^T],
    E[cl_i lambda_i c_j]) with cl_j = c_j lambda_j (p-vectors per sample; for a sequence
    sample both are E[cl^2] with cl = sum_l c_l lambda_l); they are only evaluated for
    spherical SGD. D_j = sum_b cl_bj / (n Q_jj) over a batch of n samples.

    ``metric``: B (a, a) of the covariance norm (Sigma = I + U^T B U), or ``None`` (Euclidean).
    With it, cl_j = c_j lambda^Sigma_j with the Sigma-field lambda^Sigma_j = x^T Sigma w_j,
    ``moments()`` returns a third item E[cl] (p,), Q_jj is replaced by q_j = Q_jj + M_j B M_j^T
    in D, and the renormalisation keeps q_j: dq_j = dQ_jj + 2 dM_j B M_j^T (first order, as the
    Euclidean one) is removed by M_j -> M_j - dq_j M_j / (2 q_j), Q_ij -> Q_ij - (dq_i / q_i +
    dq_j / q_j) Q_ij / 2, after which d q_j = 0 exactly for every q_j.
    """
    qd = jnp.diag(Q) if metric is None else jnp.diag(Q) + jnp.sum((M @ metric) * M, axis=1)
    if tr.spherical:
        mom = moments()
        Ecl2, Eclc = mom[0], mom[1]
        ED = (jnp.diag(A1) if metric is None else mom[2]) / qd
        EDD = (Ecl2 / n) / (qd[:, None] * qd[None, :])
        EDD = EDD + (1.0 - 1.0 / n) * ED[:, None] * ED[None, :]
        EDLC = Eclc / (n * qd[:, None])
        EDLC = EDLC + (1.0 - 1.0 / n) * ED[:, None] * A1
        dQ = dQ - lr * (ED[:, None] + ED[None, :]) * Q + lr2 * (Q * EDD - EDLC - EDLC.T)
        dM = dM - lr * ED[:, None] * M
    if tr.renormalise:
        if metric is None:
            dd = jnp.diag(dQ)
        else:
            dd = (jnp.diag(dQ) + 2.0 * jnp.sum((dM @ metric) * M, axis=1)) / qd
        dM = dM - 0.5 * dd[:, None] * M
        dQ = dQ - 0.5 * (dd[:, None] + dd[None, :]) * Q
    return dQ, dM


def traced_args(args, lr: float, lr_a: float, d: int):
    """(lr, lr_a, d, noise factor) of a field call: the model's own numbers when ``args`` is
    not a dict, else the traced ``lr``, ``lr_a`` and, when given, ``d`` and ``noise`` (a field
    built from ``model.structure(d=True)``, whose noise is 1, with the true noise traced)."""
    if not isinstance(args, dict):
        return lr, lr_a, d, 1.0
    return args["lr"], args["lr_a"], args.get("d", d), args.get("noise", 1.0)


EXPECTATIONS = ("auto", "decomposed", "tensor", "monte_carlo")
TENSOR_MIN_NODES = 5  # the tensor rule is used while it has at least this many nodes per axis
MC_POINTS = ODE_POINTS  # fixed-seed Monte Carlo points beyond that


def drift(model, second_order: bool, nodes: int | None = None, expectations: str = "auto"):
    """(field, nodes, exact): field(t, state, args) -> d state / d step for a one-row-per-sample
    Gaussian model; ``exact`` when the rule integrates the polynomial integrand exactly;
    ``field.expectations`` says how the expectations are taken.
    ``args``: ``None`` (the model's own numbers) or a dict with traced ``lr`` and ``lr_a`` and
    optionally ``d`` and ``noise`` (a factor on the label-noise nodes: the field of
    ``model.structure(d=True)``, whose noise is 1, with the true noise traced).

    ``expectations``: ``"decomposed"`` (``sgdlab._fields``: integrals over at most four fields,
    for square and correlation losses of a committee or cluster-label target), ``"tensor"``
    (this module's rule over all fields), ``"monte_carlo"`` (fixed-seed samples of all fields)
    or ``"auto"``: the tensor rule when it is exact for a polynomial integrand within
    ODE_POINTS points, else the decomposed drift when the loss decomposes, else the tensor
    rule while it has TENSOR_MIN_NODES nodes per axis, else Monte Carlo."""
    if model.rows != 1:
        raise ValueError(f"engine: got 'ode' for data with {model.rows} rows per sample; allowed: 'chain' or 'full'")
    if expectations not in EXPECTATIONS:
        raise ValueError(f"ode.expectations: got {expectations!r}; allowed: {', '.join(EXPECTATIONS)}")
    from ._fields import decomposed_drift, not_decomposable

    why = not_decomposable(model)
    if why is None and model.norm_metric() is not None:
        why = "train.norm is 'covariance' (the decomposed drift has no Sigma-fields)"
    if expectations == "decomposed" and why is not None:
        raise ValueError(f"ode.expectations: got 'decomposed', but {why}; allowed: 'auto', 'tensor' or 'monte_carlo'")
    if expectations in ("auto", "decomposed") and why is None:
        deg = None if model.problem.uses_latent else poly_degree(model)
        k = model.p + model.a + (1 if model.problem.noise > 0 else 0)
        cheap_exact = deg is not None and (deg + 2) ** k <= ODE_POINTS
        if expectations == "decomposed" or not cheap_exact:
            return decomposed_drift(model, second_order, nodes)
    field, used, exact, how = _tensor_drift(model, second_order, nodes, expectations == "monte_carlo")
    field.expectations = {"method": how, "exact": exact, "why_not_decomposed": why,
                          "points": used if how == "monte_carlo" else int(used) ** (
                              model.p + model.a + (1 if model.problem.noise > 0 else 0))}
    return field, used, exact


def _tensor_drift(model, second_order: bool, nodes: int | None, monte_carlo: bool):
    p, a, r, d = model.p, model.a, model.r, model.problem.d
    tr, stu, law = model.training, model.student, model.data
    n, lr0, lr_a0 = tr.batch, tr.lr, tr.eta_a
    schedule = tr.lr_schedule
    P = p + a
    noisy = model.problem.noise > 0
    k = P + (1 if noisy else 0)
    deg = None if model.problem.uses_latent else poly_degree(model)
    exact = deg is not None and nodes is None
    if nodes is None:
        nodes = deg + 2 if deg is not None else quadrature_nodes(k, budget=ODE_POINTS)
        monte_carlo = monte_carlo or (deg is None and int(ODE_POINTS ** (1.0 / k) + 1e-9) < TENSOR_MIN_NODES)
    if monte_carlo:
        # fixed-seed samples (the seed is the node count, so a rule with other nodes is an
        # independent draw: the engine's quadrature_error is then a Monte Carlo error)
        exact = False
        pts = np.random.default_rng(int(nodes)).standard_normal((MC_POINTS, k))
        wts = np.full(MC_POINTS, 1.0 / MC_POINTS)
    else:
        pts, wts = _tensor_rule(int(nodes), k)
    norm = model.needs_norm
    if norm:
        # |x|^2 = |s|^2 + sigma^2 (|y|^2 - |N0|^2 + chi^2(d - P)), chi^2 independent of y
        cx, cw = chi2_rule(float(d - P), _chi2_nodes(model))
        pts = np.concatenate([np.repeat(pts, len(cx), axis=0), np.tile(cx, len(wts))[:, None]], axis=1)
        wts = np.outer(wts, cw).reshape(-1)
    Y = jnp.asarray(pts[:, :P])
    XI = jnp.asarray(pts[:, P]) if noisy else jnp.zeros(len(pts))
    CHI = jnp.asarray(pts[:, -1]) if norm else None
    w = jnp.asarray(wts)
    y2 = jnp.sum(Y * Y, axis=1)
    eye_a = jnp.eye(a)
    K = int(np.asarray(law.components(r, 0).prob).shape[0])
    metric = model.norm_metric()
    B = None if metric is None else jnp.asarray(metric)

    def E(x):
        return jnp.tensordot(w, x, axes=(0, 0))

    def field(t, s, args):
        Q, M, a_ = s["Q"], s["M"], s["a"]
        lr, lr_a, dd, nz = traced_args(args, lr0, lr_a0, d)
        base = CHI if norm else dd - P  # |g|^2 - |y|^2: chi^2(d - P), or its mean
        xi_ = XI * nz
        if schedule is not None:
            lr, lr_a = lr * schedule(t), lr_a * schedule(t)
        lr2 = lr**2 if second_order else 0.0
        G = jnp.block([[Q, M], [M.T, eye_a]])
        ev, V = jnp.linalg.eigh(G)
        L = V * jnp.sqrt(jnp.maximum(ev, 0.0))
        Z0 = Y @ L.T
        N0 = Z0[:, p:]
        comp = law.components(r, t)
        A1 = B1 = Ecc = g = Ega = Ecl2 = Eclc = Ecl1 = 0.0
        for kk in range(K):
            # component kk: latent s = mu + B N0, fields lam = sigma lam0 + M (s - sigma N0)
            S = N0 if comp.chol is None else N0 @ comp.chol[kk].T
            if comp.mean is not None:
                S = S + comp.mean[kk, 0]
            sig = 1.0 if comp.sigma is None else comp.sigma[kk, 0]
            lam, xE, x2 = Z0[:, :p], Y, y2 + base
            if comp.chol is not None or comp.mean is not None or comp.sigma is not None:
                delta = S - sig * N0
                lam = sig * lam + delta @ M.T
                xE = sig * Y + delta @ L[p:, :]
                x2 = jnp.sum(S * S, axis=1) + sig**2 * (y2 - jnp.sum(N0 * N0, axis=1) + base)
            Z = jnp.concatenate([lam, S], axis=1)
            cl_ = jnp.full((len(w),), kk, jnp.int32)
            if norm:
                c, ga = jax.vmap(model.sample_grads, in_axes=(0, None, 0, 0, 0))(Z, a_, xi_, cl_, x2)
            else:
                c, ga = jax.vmap(model.sample_grads, in_axes=(0, None, 0, 0))(Z, a_, xi_, cl_)
            pk = comp.prob[kk] if K > 1 else 1.0
            A1 = A1 + pk * E(lam[:, :, None] * c[:, None, :])  # E[lambda c^T]
            B1 = B1 + pk * E(c[:, :, None] * S[:, None, :])  # E[c s^T]
            Ecc = Ecc + pk * E(c[:, :, None] * c[:, None, :] * x2[:, None, None])  # E[c c^T |x|^2]
            g = g + pk * E(c[:, :, None] * xE[:, None, :])  # E[c xE^T]
            Ega = Ega + pk * E(ga)
            if tr.spherical:
                cl = c * (lam if B is None else lam + S @ (M @ B).T)  # c_j x^T Sigma w_j (covariance norm)
                Ecl2 = Ecl2 + pk * E(cl[:, :, None] * cl[:, None, :])
                Eclc = Eclc + pk * E((cl * lam)[:, :, None] * c[:, None, :])
                Ecl1 = Ecl1 + pk * E(cl)
        XX = Ecc / n + (1.0 - 1.0 / n) * g @ g.T
        dQ = lr * (A1 + A1.T) + lr2 * XX
        dM = lr * B1
        dQ, dM = _geometry(tr, Q, M, dQ, dM, A1, lambda: (Ecl2, Eclc, Ecl1), n, lr, lr2, B)
        da = -lr_a * Ega if stu.trained else jnp.zeros_like(a_)
        return {"Q": 0.5 * (dQ + dQ.T), "M": dM, "a": da}

    # frozen rows and second-layer weights: model.sample_grads returns zero gradients there
    return field, int(nodes), exact, "monte_carlo" if monte_carlo else "tensor"
