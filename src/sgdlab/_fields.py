r"""The ODE's drift decomposed into Gaussian integrals over at most four fields.

For the square and correlation losses the per-sample error is a sum over *units*,

    e = f - y = sum_u W_u phi_u(z_{f(u)})     (square: the p student units W_j = s a_j,
                                               phi = sigma; the r teacher units W = -b_k,
                                               phi = g; a constant unit W = -y_c for labels
                                               given by the cluster),
    e = -y                                    (correlation: the teacher and constant units),

where z = (lambda, s) are the p student fields and the a frame coordinates, Gaussian given
the mixture component k: mean m_k = (M mu_k, mu_k), covariance C_k (``risk._component_gaussian``).
The negative gradient is c_j = -s a_j sigma'(lambda_j) e (frozen rows: 0) and
d loss / d a_j = s e sigma(lambda_j). Every expectation of the drift (``sgdlab._drift``) is a
sum of integrals over the fields of one tuple of units:

* order lr (two fields, (j, u)): with (z_j, z_u) = m + L eps, L lower triangular,
  E[z_alpha sigma'(z_j) phi_u] = m_alpha K0 + beta_1 K1 + beta_2 K2 for every field alpha
  (the regression of z_alpha on eps: beta = L^{-1} C_{(j,u), alpha}), K_a = E[eps_a sigma' phi_u]
  (K0 without eps); this gives E[lambda c^T] and E[c s^T]; E[sigma(z_j) phi_u] gives d a;
* order lr^2 (four fields, (i, j, u, v)): E[c_i c_j |x|^2] with the error squared expanded
  into pairs of units, sum_{u v} W_u W_v E[sigma'_i sigma'_j phi_u phi_v |x|^2]; with
  z_A = m_A + L_A eps for the tuple's fields A and B = C_{., A} C_AA^+ L_A,
  |x|^2 = z^T G^+ z + sigma_k^2 chi^2(d - P) (G the Gram matrix of [W; U]) and
  E[h z^T G^+ z] = E[h] (m^T G^+ m + tr G^+ C - tr B^T G^+ B) + 2 m^T G^+ B E[h eps]
  + <B^T G^+ B, E[h eps eps^T]>: moments up to degree 2 of the same four fields. The label
  noise adds noise^2 to the (constant, constant) pair. The squared mean gradient is
  E[c_i x] . E[c_j x] = E[c_i z]^T G^+ E[c_j z] (no new integral). Spherical SGD needs
  E[c_i c_j lambda_i lambda_j] and E[c_i c_j lambda_i^2]: the same moments.

The integrals are evaluated, per tuple and vectorised over all tuples (index arrays gather
the covariance sub-blocks), by

* closed forms for erf (zero-mean components; Saad & Solla 1995): I2, I3 and, for the
  d-proportional part of the lr^2 term, I4;
* exact Gauss–Hermite rules when activation and link are polynomials;
* otherwise, order lr: a nested two-dimensional Gauss–Legendre rule on [-12, 12] split at
  the kink of each function (relu, sign, abs), PANEL nodes per panel (spectral; measured
  below 1e-12 for relu); order lr^2: a four-dimensional Gauss–Hermite rule per tuple for
  smooth functions while tuples x nodes^4 stays within SECOND_ORDER_POINTS (ERF_REST_POINTS
  for erf, where this rule only gives the O(P/d) rest of the term), else (and for
  kinked functions, where such a rule converges slowly) a quasi-Monte Carlo rule over all
  P fields (QMC_POINTS scrambled Sobol points, fixed seed, so the field is a smooth
  function of the state).

The choice is reported by ``expectations(model, ...)`` (the ODE's ``info["expectations"]``);
the error of the rules is stated by the engine (``info["quadrature_error"]``: the change of
the initial velocity against a rule with 3/4 of the nodes, or another QMC seed).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from ._functions import gauss_hermite
from ._kernels import _is, _leggauss, _phi

__all__ = ["PANEL", "QMC_POINTS", "SECOND_ORDER_POINTS", "decomposed_drift", "not_decomposable"]

PANEL = 32  # Gauss-Legendre nodes per panel of the order-lr rule (two panels per axis)
SECOND_ORDER_POINTS = 4_000_000  # per-tuple Gauss-Hermite budget of the lr^2 term (tuples x nodes^4)
# for erf (zero-mean data) the per-tuple rule only gives the O(P/d) rest of the lr^2 term (its
# d-proportional part is closed form): beyond this budget the quasi-Monte Carlo rule takes the
# rest, which is far cheaper (erf committee, d = 1000, 10^5 steps, second call: p = 8 74.6 s on
# the per-tuple rule (1980 tuples x 6^4 nodes) against 7.4 s at p = 16 on the QMC rule) and,
# on a term P/d of the whole, accurate enough (relative error ~1e-3 of a 1e-2 correction)
ERF_REST_POINTS = 1 << 16
QMC_POINTS = 1 << 14  # quasi-Monte Carlo points of the lr^2 term beyond that budget
SMOOTH = 0.02  # width (in standard deviations) of the smoothed step of relu' in the QMC rule
DEFAULT_NODES = 6  # Gauss-Hermite nodes per axis of the lr^2 rule for non-polynomial functions
_T = 12.0
STUDENT, LINK, ONE = 0, 1, 2  # unit kinds


def cluster_labels(model) -> np.ndarray | None:
    """Labels y_c of a target ``function(s, c)`` that depends on the cluster only (checked at
    8 fixed random frame points per cluster), else None."""
    prob = model.problem
    if not prob.uses_latent:
        return None
    K = int(np.asarray(model.data.components(model.r, 0).prob).shape[0])
    s = np.random.default_rng(0).normal(size=(8, model.a)) * 2.0
    out = []
    for c in range(K):
        v = np.asarray(prob.function(jnp.asarray(s), jnp.full((8,), c, jnp.int32)), np.float64).reshape(-1)
        if v.shape != (8,) or np.ptp(v) > 1e-12 * (1.0 + np.abs(v).max()):
            return None
        out.append(float(v[0]))
    return np.asarray(out)


def not_decomposable(model) -> str | None:
    """Why the drift of ``model`` does not decompose over units (None when it does)."""
    from .model import Model

    if not isinstance(model, Model) or model.rows != 1:
        return "the student is not a sum over units of one-row samples"
    tr, prob = model.training, model.problem
    if tr.loss not in ("square", "correlation"):
        return f"the loss {tr.loss_name!r} does not decompose over units"
    if tr.smoothed:
        return "the smoothed loss does not decompose over units"
    if not prob.is_committee and cluster_labels(model) is None:
        return "the target is neither a committee nor a label of the cluster"
    return None


def _units(model, labels):
    """Static unit table: kinds, field indices; and which units enter e."""
    p, r = model.p, model.r
    square = model.training.loss == "square"
    kinds, fields = [], []
    if square:
        kinds += [STUDENT] * p
        fields += list(range(p))
    if model.problem.is_committee:
        kinds += [LINK] * r
        fields += [p + k for k in range(r)]
    if labels is not None or model.problem.noise > 0:
        kinds.append(ONE)
        fields.append(0)
    return np.asarray(kinds, np.int32), np.asarray(fields, np.int32)


def _split_rule(kink, m: int):
    """Gauss–Legendre nodes and N(0,1)-weights on [-T, k] and [k, T] (k clipped): (..., 2m)."""
    x, w = _leggauss(m)
    k = jnp.clip(kink, -_T, _T)
    h1, c1 = 0.5 * (k + _T), 0.5 * (k - _T)
    h2, c2 = 0.5 * (_T - k), 0.5 * (_T + k)
    z = jnp.concatenate([c1[..., None] + h1[..., None] * x, c2[..., None] + h2[..., None] * x], axis=-1)
    wz = jnp.concatenate([h1[..., None] * w, h2[..., None] * w], axis=-1) * _phi(z)
    return z, wz


def _gh(n: int):
    x, w = gauss_hermite(n)
    return jnp.asarray(x), jnp.asarray(w)


def _erf_I2(cuu, cvv, cuv):
    return (2.0 / math.pi) * jnp.arcsin(cuv / jnp.sqrt((1.0 + cuu) * (1.0 + cvv)))


def _erf_I3(cjj, cja, cju, cau, cuu):
    """E[g'(z_j) z_alpha g(z_u)], g = erf(./sqrt 2), zero mean (Saad & Solla 1995)."""
    lam3 = (1.0 + cjj) * (1.0 + cuu) - cju**2
    return (2.0 / math.pi) / jnp.sqrt(lam3) * (cau * (1.0 + cjj) - cja * cju) / (1.0 + cjj)


def _erf_I4(C):
    """E[g'(z_0) g'(z_1) g(z_2) g(z_3)] for a (..., 4, 4) covariance, zero mean (Saad & Solla)."""
    c = lambda a, b: C[..., a, b]  # noqa: E731
    l4 = (1.0 + c(0, 0)) * (1.0 + c(1, 1)) - c(0, 1) ** 2
    l0 = (l4 * c(2, 3) - c(1, 2) * c(1, 3) * (1.0 + c(0, 0)) - c(0, 2) * c(0, 3) * (1.0 + c(1, 1))
          + c(0, 1) * c(0, 2) * c(1, 3) + c(0, 1) * c(0, 3) * c(1, 2))
    l1 = l4 * (1.0 + c(2, 2)) - c(1, 2) ** 2 * (1.0 + c(0, 0)) - c(0, 2) ** 2 * (1.0 + c(1, 1)) \
        + 2.0 * c(0, 1) * c(0, 2) * c(1, 2)
    l2 = l4 * (1.0 + c(3, 3)) - c(1, 3) ** 2 * (1.0 + c(0, 0)) - c(0, 3) ** 2 * (1.0 + c(1, 1)) \
        + 2.0 * c(0, 1) * c(0, 3) * c(1, 3)
    return (4.0 / math.pi**2) / jnp.sqrt(l4) * jnp.arcsin(jnp.clip(l0 / jnp.sqrt(l1 * l2), -1.0, 1.0))


def _erf_pair_one(C):
    """E[g'(z_0) g'(z_1)] (the two constant units of I4)."""
    return (2.0 / math.pi) / jnp.sqrt((1.0 + C[..., 0, 0]) * (1.0 + C[..., 1, 1]) - C[..., 0, 1] ** 2)


def _erf_main(C, A, ku, kv):
    """E[g'(z_i) g'(z_j) phi_u phi_v] per tuple in closed form (erf, zero mean): I4, the two
    constant units E[g' g'], and 0 with one constant unit (odd integrand)."""
    CA = C[A[:, :, None], A[:, None, :]]
    one_u, one_v = ku == ONE, kv == ONE
    return jnp.where(one_u & one_v, _erf_pair_one(CA), jnp.where(one_u | one_v, 0.0, _erf_I4(CA)))


class _Plan:
    """Everything static about the decomposed drift of one model."""

    def __init__(self, model, second_order: bool, nodes: int | None):
        stu, prob = model.student, model.problem
        self.model = model
        self.p, self.r, self.P = model.p, model.r, model.p + model.a
        self.sig, self.link = stu.activation, (prob.link if prob.is_committee else None)
        self.labels = cluster_labels(model)
        self.kinds, self.fields = _units(model, self.labels)
        self.U = len(self.kinds)
        comp = model.data.components(model.r, 0)
        self.K = int(np.asarray(comp.prob).shape[0])
        self.zero_mean = comp.mean is None
        fns = [self.sig] + ([self.link] if self.link is not None else [])
        self.poly = all(f.degree is not None for f in fns)
        self.erf = self.zero_mean and all(_is(f, "erf") for f in fns)
        self.kink = any(f.kink for f in fns)
        dsig = self.sig.degree
        if self.poly:
            dphi = max([f.degree for f in fns] + [0])
            self.n2 = max(dsig - 1 + dphi + 1, dsig + dphi) // 2 + 1
            self.n4 = (2 * max(dsig - 1, 0) + 2 * dphi + 2) // 2 + 1
        else:
            self.n2 = None
            self.n4 = DEFAULT_NODES
        if nodes is not None:
            self.n4 = int(nodes)
            if self.poly:
                self.n2 = int(nodes)
        self.panel = PANEL if nodes is None else max(8, int(round(PANEL * nodes / DEFAULT_NODES)))
        # order lr: pairs (student j, unit u)
        jj, uu = np.meshgrid(np.arange(self.p), np.arange(self.U), indexing="ij")
        self.pj, self.pu = jj.reshape(-1), uu.reshape(-1)
        # order lr^2: tuples (i <= j students, u <= v units)
        self.second = second_order
        iu, ju = np.triu_indices(self.p)
        uu2, vv2 = np.triu_indices(self.U)
        self.ti = np.repeat(iu, len(uu2))
        self.tj = np.repeat(ju, len(uu2))
        self.tu = np.tile(uu2, len(iu))
        self.tv = np.tile(vv2, len(iu))
        self.T = len(self.ti)
        # kinked functions (relu: sigma' a step) defeat a Gauss-Hermite rule in four dimensions
        budget = ERF_REST_POINTS if self.erf else SECOND_ORDER_POINTS
        self.qmc = second_order and not self.poly and (self.kink or self.T * self.n4**4 > budget)
        self.seed = 0 if nodes is None else int(nodes)

    def describe(self) -> dict:
        first = ("closed form (erf, Saad-Solla I2, I3)" if self.erf else
                 f"Gauss-Hermite, exact ({self.n2} nodes per axis, {len(self.pj)} pairs)" if self.poly else
                 f"2-D Gauss-Legendre split at the kinks ({2 * self.panel} nodes per axis, {len(self.pj)} pairs)")
        if not self.second:
            second = None
        else:
            rest = (f"quasi-Monte Carlo ({QMC_POINTS} scrambled Sobol points over {self.P} fields, fixed seed)"
                    if self.qmc else
                    f"4-D Gauss-Hermite per tuple ({self.n4}^4 points, {self.T} tuples"
                    + (", exact)" if self.poly else ")"))
            second = (f"closed form (erf, Saad-Solla I4) for the d-proportional part; {rest} for the rest"
                      if self.erf else rest)
        return {"method": "decomposed", "first_order": first, "second_order": second,
                "exact": bool(self.poly)}

    # ------------------------------------------------------------------ functions
    def phi(self, kind, x):
        """phi_u(x) for unit kinds ``kind`` (broadcast)."""
        out = jnp.where(kind == STUDENT, self.sig(x), 1.0)
        if self.link is not None:
            out = jnp.where(kind == LINK, self.link(x), out)
        return out

    def dsig(self, x):
        return jnp.vectorize(jax.grad(lambda t: jnp.asarray(self.sig(t), jnp.float64)))(x)

    def dsig_smooth(self, x, sd):
        """sigma' for the quasi-Monte Carlo rule: for relu and abs the step convolved with a
        Gaussian of width SMOOTH * sd (Phi(x / (SMOOTH sd))), so that the rule is a smooth
        function of the state (a step at fixed points would jump by 1 / QMC_POINTS each time
        a point crosses the kink, and the adaptive solver would crawl); the bias is
        O(SMOOTH^2), below the rule's error."""
        if _is(self.sig, "relu") or _is(self.sig, "abs"):
            st = jax.scipy.stats.norm.cdf(x / (SMOOTH * sd))
            return st if _is(self.sig, "relu") else 2.0 * st - 1.0
        return self.dsig(x)

    def kinked(self, kind):
        k = jnp.where(kind == STUDENT, self.sig.kink, False)
        if self.link is not None:
            k = jnp.where(kind == LINK, self.link.kink, k)
        return k


def _chol2(c11, c12, c22):
    l11 = jnp.sqrt(jnp.maximum(c11, 0.0))
    l21 = jnp.where(l11 > 0, c12 / jnp.where(l11 > 0, l11, 1.0), 0.0)
    l22 = jnp.sqrt(jnp.maximum(c22 - l21**2, 0.0))
    return l11, l21, l22


def _first_order(pl: _Plan, m, C):
    """T3 (P, p, U) = E[z_alpha sigma'(z_j) phi_u] and S0 (p, U) = E[sigma(z_j) phi_u]."""
    j, u = pl.pj, pl.fields[pl.pu]
    kind = jnp.asarray(pl.kinds[pl.pu])
    p, U = pl.p, pl.U
    cjj, cju, cuu = C[j, j], C[j, u], C[u, u]
    if pl.erf:
        t3 = _erf_I3(cjj[None], C[:, j], cju[None], C[:, u], cuu[None])  # (P, pairs)
        t3 = jnp.where(kind[None] == ONE, 0.0, t3)
        s0 = jnp.where(kind == ONE, 0.0, _erf_I2(cjj, cuu, cju))
        return t3.reshape(-1, p, U), s0.reshape(p, U)
    l11, l21, l22 = _chol2(cjj, cju, cuu)
    # a student unit paired with itself: z_u = z_j exactly; the rounding of c_uu - l21^2 would
    # give l22 ~ sqrt(eps) noise that the adaptive solver sees at tight tolerances
    l22 = jnp.where(jnp.asarray((pl.kinds[pl.pu] == STUDENT) & (pl.fields[pl.pu] == pl.pj)), 0.0, l22)
    mj, mu = m[j], m[u]
    if pl.poly:
        x, w = _gh(pl.n2)
        e1 = jnp.broadcast_to(x[:, None], (len(x), len(x)))[None]
        e2 = jnp.broadcast_to(x[None, :], (len(x), len(x)))[None]
        ww = (w[:, None] * w[None, :])[None]
    else:
        t1 = jnp.where(pl.sig.kink & (l11 > 0), -mj / jnp.where(l11 > 0, l11, 1.0), 0.0)
        e1, w1 = _split_rule(t1, pl.panel)  # (pairs, n)
        zu0 = mu[:, None] + l21[:, None] * e1
        ok = pl.kinked(kind)[:, None] & (l22[:, None] > 0)
        t2 = jnp.where(ok, -zu0 / jnp.where(l22[:, None] > 0, l22[:, None], 1.0), 0.0)
        e2, w2 = _split_rule(t2, pl.panel)  # (pairs, n, n)
        e1 = jnp.broadcast_to(e1[:, :, None], e2.shape)
        ww = w1[:, :, None] * w2
    zj = mj[:, None, None] + l11[:, None, None] * e1
    zu = mu[:, None, None] + l21[:, None, None] * e1 + l22[:, None, None] * e2
    ph = pl.phi(kind[:, None, None], zu)
    hd = ww * pl.dsig(zj) * ph
    K0 = jnp.sum(hd, axis=(1, 2))
    K1 = jnp.sum(hd * e1, axis=(1, 2))
    K2 = jnp.sum(hd * e2, axis=(1, 2))
    s0 = jnp.sum(ww * pl.sig(zj) * ph, axis=(1, 2))
    b1 = jnp.where(l11 > 0, C[:, j] / jnp.where(l11 > 0, l11, 1.0), 0.0)  # (P, pairs)
    b2 = jnp.where(l22 > 0, (C[:, u] - l21 * b1) / jnp.where(l22 > 0, l22, 1.0), 0.0)
    t3 = m[:, None] * K0 + b1 * K1 + b2 * K2
    return t3.reshape(-1, p, U), s0.reshape(p, U)


def _factor(C):
    """Batched Cholesky factor L (..., k, k) of a PSD C that allows zero pivots (repeated or
    dependent fields: their column is 0), and X^T with X the matching left inverse (rows of
    zero pivots 0), so that z_A = m_A + L eps and E[z | eps] = m + C_{., A} X^T eps.
    Unlike an eigen-decomposition, L is continuous in C, so the rules built on it are smooth
    in the state (the adaptive solver needs that)."""
    k = C.shape[-1]
    tol = 1e-12 * jnp.max(jnp.abs(jnp.diagonal(C, axis1=-2, axis2=-1)), axis=-1)
    L = [[None] * k for _ in range(k)]
    ok = [None] * k
    for j in range(k):
        piv = C[..., j, j] - sum((L[j][q] ** 2 for q in range(j)), start=jnp.zeros_like(tol))
        ok[j] = piv > tol
        L[j][j] = jnp.sqrt(jnp.where(ok[j], piv, 1.0)) * ok[j]
        inv = jnp.where(ok[j], 1.0 / jnp.where(ok[j], L[j][j], 1.0), 0.0)
        for i in range(j + 1, k):
            L[i][j] = (C[..., i, j] - sum((L[i][q] * L[j][q] for q in range(j)), start=jnp.zeros_like(tol))) * inv
        for i in range(j):
            L[i][j] = jnp.zeros_like(tol)
    X = [[jnp.zeros_like(tol) for _ in range(k)] for _ in range(k)]
    for i in range(k):
        inv = jnp.where(ok[i], 1.0 / jnp.where(ok[i], L[i][i], 1.0), 0.0)
        X[i][i] = inv
        for j in range(i):
            X[i][j] = -sum((L[i][q] * X[q][j] for q in range(j, i)), start=jnp.zeros_like(tol)) * inv
    Lm = jnp.stack([jnp.stack(row, axis=-1) for row in L], axis=-2)
    Xm = jnp.stack([jnp.stack(row, axis=-1) for row in X], axis=-2)
    return Lm, jnp.swapaxes(Xm, -1, -2)


def _tuple_moments(pl: _Plan, m, C, Hm, hm, A):
    """Per tuple: (E[h], E[h z_0 z_1], E[h z_0^2], E[h z_1^2], tr B^T G^+ B, 2 m^T G^+ B E[h eps]
    + <B^T G^+ B, E[h eps eps^T]>) with h = sigma'(z_0) sigma'(z_1) phi_u(z_2) phi_v(z_3),
    z_A = m_A + L eps, on the four-dimensional Gauss–Hermite rule."""
    x, w = _gh(pl.n4)
    eps = jnp.stack(jnp.meshgrid(x, x, x, x, indexing="ij"), axis=-1).reshape(-1, 4)
    wt = jnp.prod(jnp.stack(jnp.meshgrid(w, w, w, w, indexing="ij"), axis=-1).reshape(-1, 4), axis=1)

    def one(args):
        a_idx, ku, kv = args
        mA = m[a_idx]
        CA = C[a_idx[:, None], a_idx[None, :]]
        L, Li = _factor(CA)
        z = mA + eps @ L.T  # (N, 4)
        h = wt * pl.dsig(z[:, 0]) * pl.dsig(z[:, 1]) * pl.phi(ku, z[:, 2]) * pl.phi(kv, z[:, 3])
        M0 = jnp.sum(h)
        M1 = h @ eps
        M2 = (eps * h[:, None]).T @ eps
        BGB = Li.T @ Hm[a_idx[:, None], a_idx[None, :]] @ Li
        mGB = hm[a_idx] @ Li
        rest = 2.0 * mGB @ M1 + jnp.sum(BGB * M2)
        LM1 = L @ M1
        Ezz = jnp.outer(mA, mA) * M0 + jnp.outer(mA, LM1) + jnp.outer(LM1, mA) + L @ M2 @ L.T  # E[h z_A z_A^T]
        return jnp.stack([M0, Ezz[0, 1], Ezz[0, 0], Ezz[1, 1], jnp.trace(BGB), rest])

    ku, kv = jnp.asarray(pl.kinds[pl.tu]), jnp.asarray(pl.kinds[pl.tv])
    return jax.lax.map(one, (A, ku, kv), batch_size=256)


def decomposed_drift(model, second_order: bool, nodes: int | None = None):
    """(field, nodes, exact) of the decomposed drift (same contract as ``_drift.drift``);
    ``field.expectations`` describes the rules."""
    from ._drift import _geometry, traced_args
    from .risk import _component_gaussian

    pl = _Plan(model, second_order, nodes)
    p, P, U, K = pl.p, pl.P, pl.U, pl.K
    tr, stu, law, prob = model.training, model.student, model.data, model.problem
    n, lr0, lr_a0, d = tr.batch, tr.lr, tr.eta_a, prob.d
    schedule = tr.lr_schedule
    scale = stu.scale
    b = jnp.asarray(prob.weights) if prob.is_committee else jnp.zeros(0)
    labels = None if pl.labels is None else jnp.asarray(pl.labels)
    m1, m2 = model.update_masks()
    kinds = jnp.asarray(pl.kinds)
    A = jnp.asarray(np.stack([pl.ti, pl.tj, pl.fields[pl.tu], pl.fields[pl.tv]], axis=1))
    pair_mult = jnp.asarray(np.where(pl.tu == pl.tv, 1.0, 2.0))
    if pl.qmc:
        from jax.scipy.special import ndtri
        from scipy.stats import qmc

        sob = qmc.Sobol(P, scramble=True, seed=1234 + pl.seed).random(QMC_POINTS)
        Yq = ndtri(jnp.asarray(np.clip(sob, 1e-16, 1 - 1e-16)))
    r = model.r

    def weights(a_, kk):
        """Unit weights W (U,) of the error e in component kk."""
        parts = []
        if tr.loss == "square":
            parts.append(scale * a_)
        if prob.is_committee:
            parts.append(-b)
        if len(pl.kinds) and pl.kinds[-1] == ONE:
            parts.append(jnp.reshape(-labels[kk] if labels is not None else 0.0, (1,)))
        return jnp.concatenate([jnp.atleast_1d(x_) for x_ in parts])

    def field(t, s, args):
        Q, M, a_ = s["Q"], s["M"], s["a"]
        lr, lr_a, dd, nz = traced_args(args, lr0, lr_a0, d)
        if schedule is not None:
            lr, lr_a = lr * schedule(t), lr_a * schedule(t)
        lr2 = lr**2 if second_order else 0.0
        noise2 = (prob.noise * nz) ** 2
        wc = scale * a_ if m1 is None else scale * a_ * m1  # c_j = -wc_j sigma'_j e
        G = jnp.block([[Q, M], [M.T, jnp.eye(P - p)]])
        Gp = jnp.linalg.pinv(G, hermitian=True)
        comp = law.components(r, t)
        A1 = B1 = Ega = Ecc = Ecl2 = Eclc = 0.0
        for kk in range(K):
            mk, Ck = _component_gaussian(model, M, Q, comp, kk)
            pk = comp.prob[kk] if K > 1 else 1.0
            sig2 = 1.0 if comp.sigma is None else comp.sigma[kk, 0] ** 2
            W = weights(a_, kk)
            t3, s0 = _first_order(pl, mk, Ck)
            T3 = -wc[None, :] * jnp.einsum("ajt,t->aj", t3, W)  # E[z_alpha c_j]
            A1 = A1 + pk * T3[:p]
            B1 = B1 + pk * T3[p:].T
            Ega = Ega + pk * scale * (s0 @ W)
            if not second_order:
                continue
            Om = W[pl.tu] * W[pl.tv] * pair_mult
            Om = Om + jnp.where((kinds[pl.tu] == ONE) & (kinds[pl.tv] == ONE), noise2, 0.0)
            Hm, hm = Ck @ Gp @ Ck, Ck @ Gp @ mk
            c0 = mk @ Gp @ mk + jnp.trace(Gp @ Ck)
            ww = wc[pl.ti] * wc[pl.tj] * Om
            base = sig2 * (dd - P)
            main = _erf_main(Ck, A, kinds[pl.tu], kinds[pl.tv]) if pl.erf else None
            if not pl.qmc:
                mom = _tuple_moments(pl, mk, Ck, Hm, hm, A)
                main = mom[:, 0] if main is None else main
                vcc = (base + c0 - mom[:, 4]) * main + mom[:, 5]
                Ecc = Ecc + pk * _sym(p, pl.ti, pl.tj, ww * vcc)
                if tr.spherical:
                    off = np.asarray(pl.ti != pl.tj)
                    Ecl2 = Ecl2 + pk * _sym(p, pl.ti, pl.tj, ww * mom[:, 1])
                    Eclc = Eclc + pk * (_tri(p, pl.ti, pl.tj, ww * mom[:, 2])
                                        + _tri(p, pl.tj, pl.ti, jnp.where(off, ww * mom[:, 3], 0.0)))
            else:
                Lk = jnp.linalg.cholesky(Ck + 1e-12 * jnp.trace(Ck) / P * jnp.eye(P))  # continuous in the state
                Z = mk + Yq @ Lk.T
                e = Z[:, pl.fields] if U else jnp.zeros((QMC_POINTS, 0))
                e = jnp.sum(pl.phi(kinds[None, :], e) * W, axis=1)
                ds = pl.dsig_smooth(Z[:, :p], jnp.sqrt(jnp.diag(Ck)[:p]))
                c = -wc * ds * e[:, None]
                cn = -wc * ds  # the noise part: e -> noise xi, E[xi^2] = 1
                x2 = base + jnp.einsum("na,ab,nb->n", Z, Gp, Z)
                Ecc = Ecc + pk * ((c * x2[:, None]).T @ c + noise2 * (cn * x2[:, None]).T @ cn) / QMC_POINTS
                if main is not None:  # the d-proportional part in closed form
                    mc = (c.T @ c + noise2 * cn.T @ cn) / QMC_POINTS
                    Ecc = Ecc + pk * base * (_sym(p, pl.ti, pl.tj, ww * main) - mc)
                if tr.spherical:
                    lam = Z[:, :p]
                    cl, cln = c * lam, cn * lam
                    Ecl2 = Ecl2 + pk * (cl.T @ cl + noise2 * cln.T @ cln) / QMC_POINTS
                    Eclc = Eclc + pk * ((cl * lam).T @ c + noise2 * (cln * lam).T @ cn) / QMC_POINTS
        if second_order:
            Hg = jnp.concatenate([A1.T, B1], axis=1)  # rows E[c_j z]
            XX = Ecc / n + (1.0 - 1.0 / n) * Hg @ Gp @ Hg.T
        else:
            XX = 0.0
        dQ = lr * (A1 + A1.T) + lr2 * XX
        dM = lr * B1
        dQ, dM = _geometry(tr, Q, M, dQ, dM, A1, lambda: (Ecl2, Eclc), n, lr, lr2)
        ga = Ega if m2 is None else Ega * m2
        da = -lr_a * ga if stu.trained else jnp.zeros_like(a_)
        return {"Q": 0.5 * (dQ + dQ.T), "M": dM, "a": da}

    field.expectations = pl.describe()
    return field, pl.n4, bool(pl.poly)


def _sym(p, i, j, v):
    """Symmetric (p, p) matrix from upper-triangle entries (i <= j) summed over tuples."""
    out = jnp.zeros((p, p)).at[i, j].add(v)
    return out + out.T - jnp.diag(jnp.diag(out))


def _tri(p, i, j, v):
    return jnp.zeros((p, p)).at[i, j].add(v)
