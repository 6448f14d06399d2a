"""Initial states as objects, exact on every engine.

An initial state says how the student starts: the law of its first-layer rows W (p x d)
and, optionally, of its second layer. Each class gives the same law three ways:

- ``gram(key, model, start)``: a draw of (Q, M) = (W W^T, W U^T) for the chain, exact at
  finite d (U the data law's frame);
- ``weights(key, model, start, dtype)``: a draw of W itself for the full engine, with the
  frame as the first a coordinates;
- ``order_parameters(model)``: the deterministic start of the ODE.

``start`` is this seed's slice of ``per_seed(model, seeds)`` (``None`` for the random
starts): the given Gram state, or the final state of an earlier run, seed by seed. Every
start that is not fully random is completed by a uniformly random part orthogonal to the
frame, which is exact in law: the SGD process is invariant under rotations that fix the
frame, so given its Gram matrix the orthogonal part of W is uniform.

``second_layer(model, start)`` gives a (p,) (``None``: the student's ``a0``).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._errors import _bad
from ._wishart import psd_cholesky, wishart

__all__ = ["FromResult", "Gram", "Init", "OnEllipsoid", "PCA", "PCA_SIGNS", "Random", "RandomPositive", "Warm",
           "as_init", "complete_weights"]


def complete_weights(key: jax.Array, Q: jax.Array, M: jax.Array, d: int, dtype) -> jax.Array:
    """W (p, d) with W W^T = Q and W[:, :a] = M, its part orthogonal to the first a coordinates
    uniformly random: W[:, a:] = R V, R R^T = Q - M M^T, V (p, d - a) Haar-distributed
    orthonormal rows ((G G^T)^{-1/2} G for a Gaussian G)."""
    p, a = M.shape
    G = jax.random.normal(key, (p, d - a), jnp.float64)
    ev, vec = jnp.linalg.eigh(G @ G.T)
    V = (vec / jnp.sqrt(ev)) @ vec.T @ G
    C = 0.5 * (Q - M @ M.T + (Q - M @ M.T).T)
    R, _ = psd_cholesky(C)
    # every row inside the frame (C = 0 up to rounding): psd_cholesky's pivot tolerance is relative
    # to trace(C), itself rounding, so a denormal pivot would pass and blow R up; the part off the
    # frame is then exactly 0
    R = jnp.where(jnp.trace(C) > 1e-12 * jnp.trace(Q), R, 0.0)
    return jnp.concatenate([M, R @ V], axis=1).astype(dtype)


class Init(ABC):
    """Base class of initial states (see the module docstring)."""

    name: str = "init"

    def check(self, model) -> None:  # noqa: B027 (optional hook: most starts fit every model)
        """Raise a one-line ``ValueError`` when this start cannot serve ``model``."""

    def per_seed(self, model, seeds: int) -> dict | None:
        """Per-seed data (arrays with a leading axis of ``seeds``), or ``None``."""
        return None

    @abstractmethod
    def gram(self, key, model, start, d=None) -> tuple[jax.Array, jax.Array]:
        """A draw of (Q (p, p), M (p, a)); ``d`` (possibly traced) overrides ``model.problem.d``."""

    @abstractmethod
    def weights(self, key, model, start, dtype) -> jax.Array:
        """A draw of W (p, d), the frame being the first a coordinates."""

    @abstractmethod
    def order_parameters(self, model) -> tuple[np.ndarray, np.ndarray]:
        """The ODE's start (Q, M)."""

    def second_layer(self, model, start) -> jax.Array | None:
        return None

    def structure(self) -> Init:
        """This start with the numbers it takes from ``per_seed`` set to canonical values."""
        return self


@dataclass(frozen=True)
class Random(Init):
    """Rows w_j = g_j / |g_j|, g_j ~ N(0, I_d): uniform on the unit sphere.

    Chain: the frame components of g are N(0, 1), the Gram matrix of the rest is
    Wishart_p(d - a, I). ODE: Q = I and the typical overlap M = d^{-1/2} (positive) with
    every frame direction."""

    name = "random"

    def _flip(self, T, perp):
        return T, perp

    def gram(self, key, model, start, d=None):
        p, a = model.p, model.a
        d = model.problem.d if d is None else d
        kt, kw = jax.random.split(key)
        perp = wishart(kw, p, d - a)
        T = jax.random.normal(kt, (p, a))
        T, perp = self._flip(T, perp)
        Qg = perp + T @ T.T
        s = 1.0 / jnp.sqrt(jnp.diag(Qg))
        return Qg * s[:, None] * s[None, :], T * s[:, None]

    def _flip_rows(self, g):
        return g

    def weights(self, key, model, start, dtype):
        g = jax.random.normal(key, (model.p, model.problem.d), dtype)
        g = self._flip_rows(g)
        return g / jnp.linalg.norm(g, axis=1, keepdims=True)

    def order_parameters(self, model):
        return np.eye(model.p), np.full((model.p, model.a), 1.0 / math.sqrt(model.problem.d))


@dataclass(frozen=True)
class RandomPositive(Random):
    """The uniform start conditioned on M_j0 >= 0 for every row: a row with a negative overlap
    with teacher direction 0 is replaced by its opposite (the law of |m0|)."""

    name = "random_positive"

    def _flip(self, T, perp):
        f = jnp.where(T[:, 0] < 0, -1.0, 1.0)
        return T * f[:, None], perp * f[:, None] * f[None, :]

    def _flip_rows(self, g):
        return g * jnp.where(g[:, :1] < 0, -1.0, 1.0).astype(g.dtype)


@dataclass(frozen=True)
class Warm(Init):
    """Every row has overlap ``m0`` with each of the first k frame directions (k =
    ``directions``, default the model's ``warm_directions``: its teacher directions), zero
    with the other frame directions, and a uniformly random unit part orthogonal to the
    frame (norm 1 in all)."""

    m0: float = 0.0
    directions: int | None = None
    name = "warm"

    def _k(self, model) -> int:
        return model.warm_directions if self.directions is None else self.directions

    def check(self, model) -> None:
        k = self._k(model)
        if k > model.a:
            raise _bad("train.init.directions", k, f"at most the {model.a} frame directions")
        if k * self.m0**2 > 1:
            raise _bad("train.init", self.m0, f"|m0| <= 1/sqrt(directions) = {1 / math.sqrt(k):.4g}")

    def _M(self, model, m0=None):
        k = self._k(model)
        return jnp.zeros((model.p, model.a)).at[:, :k].set(self.m0 if m0 is None else m0)

    def per_seed(self, model, seeds):
        return {"m0": np.full(seeds, self.m0)}  # traced: runs differing in m0 share one program

    def structure(self) -> Init:
        return Warm(0.0, self.directions)

    def _m0(self, start):
        return start["m0"] if isinstance(start, dict) and "m0" in start else self.m0

    def gram(self, key, model, start, d=None):
        p, a, k = model.p, model.a, self._k(model)
        d = model.problem.d if d is None else d
        m0 = self._m0(start)
        _, kw = jax.random.split(key)
        perp = wishart(kw, p, d - a)
        s = 1.0 / jnp.sqrt(jnp.diag(perp))
        V = perp * s[:, None] * s[None, :]
        Q = k * m0**2 + (1.0 - k * m0**2) * V
        return Q, self._M(model, m0)

    def weights(self, key, model, start, dtype):
        p, a, d, k = model.p, model.a, model.problem.d, self._k(model)
        m0 = self._m0(start)
        g = jax.random.normal(key, (p, d), dtype)
        v = g.at[:, :a].set(0.0)
        v = v / jnp.linalg.norm(v, axis=1, keepdims=True)
        coef = jnp.sqrt(1.0 - k * jnp.asarray(m0, jnp.float64) ** 2).astype(dtype)  # in float64, as m0 is given
        return (coef * v).at[:, :k].set(jnp.asarray(m0, dtype))

    def order_parameters(self, model):
        p, k = model.p, self._k(model)
        Q = np.full((p, p), k * self.m0**2) + (1.0 - k * self.m0**2) * np.eye(p)
        return Q, np.asarray(self._M(model))


def _gram_arrays(Q0, M0, a0, p: int, a: int, what: str):
    Q = np.asarray(Q0, dtype=np.float64)
    M = np.asarray(M0, dtype=np.float64)
    if Q.shape[-2:] != (p, p) or M.shape[-2:] != (p, a):
        raise _bad(what, f"Q {Q.shape[-2:]}, M {M.shape[-2:]}", f"Q of shape ({p}, {p}) and M of shape ({p}, {a})")
    if not (np.all(np.isfinite(Q)) and np.all(np.isfinite(M))):
        raise _bad(what, "non-finite entries", "a finite Gram state")
    R = Q - M @ np.swapaxes(M, -1, -2)
    ev = np.linalg.eigvalsh(0.5 * (R + np.swapaxes(R, -1, -2)))
    if np.any(ev < -1e-9 * max(1.0, float(np.abs(Q).max()))):
        raise _bad(what, f"Q - M M^T with eigenvalue {float(ev.min()):.3g}",
                   "a Gram state of real weights (Q - M M^T positive semi-definite)")
    A = None if a0 is None else np.asarray(a0, dtype=np.float64)
    if A is not None and A.shape[-1:] != (p,):
        raise _bad(what, f"a of shape {A.shape}", f"a of shape ({p},)")
    return Q, M, A


class _GramStart(Init):
    """A start given by (Q, M, a) per seed (``_arrays``), completed uniformly off the frame."""

    def check(self, model) -> None:
        self._arrays(model)

    def per_seed(self, model, seeds):
        Q, M, A = self._arrays(model)
        if Q.ndim == 2:
            Q, M = Q[None], M[None]
            A = None if A is None else A[None]
        S = Q.shape[0]
        if S != 1 and S < seeds:
            raise _bad("seeds", seeds, f"at most the {S} seeds of the result to continue")
        idx = np.zeros(seeds, dtype=np.int64) if S == 1 else np.arange(seeds)
        out = {"Q": Q[idx], "M": M[idx]}
        if A is not None:
            out["a"] = A[idx]
        return out

    def gram(self, key, model, start, d=None):
        return start["Q"], start["M"]

    def weights(self, key, model, start, dtype):
        return complete_weights(key, start["Q"], start["M"], model.problem.d, dtype)

    def order_parameters(self, model):
        Q, M, _ = self._arrays(model)
        return (Q.mean(axis=0), M.mean(axis=0)) if Q.ndim == 3 else (Q, M)

    def second_layer(self, model, start):
        return start.get("a") if isinstance(start, dict) else None

    def structure(self) -> Init:
        """The compiled programs read the state from ``per_seed`` only: every given-state start
        shares one structure, so runs from different states share one compilation."""
        return _GivenState()


@dataclass(frozen=True)
class _GivenState(_GramStart):
    """The structure of a given-state start (:meth:`_GramStart.structure`): (Q, M, a) come from
    the traced per-seed data; it has no arrays of its own."""

    name = "gram"

    def _arrays(self, model):
        raise _bad("train.init", "the structure of a given-state start", "a Gram or FromResult start")


@dataclass(frozen=True, eq=False)
class Gram(_GramStart):
    """A given Gram state: Q0 = W W^T (p, p), M0 = W U^T (p, a) (overlaps with the frame),
    optionally a0 (p,); completed by a uniformly random part orthogonal to the frame."""

    Q0: Any = None
    M0: Any = None
    a0: Any = None
    name = "gram"

    def _arrays(self, model):
        return _gram_arrays(self.Q0, self.M0, self.a0, model.p, model.a, "train.init")


@dataclass(frozen=True, eq=False)
class FromResult(_GramStart):
    """The state of an earlier :class:`~sgdlab.Result` at record ``record`` (default: the
    last), seed by seed: seed i of the new run continues seed i of the old one (a one-seed
    result, e.g. an ODE, serves every seed). The new problem must share the frame (same p
    and a); the second layer is taken over when the old run trained it. The ODE starts from
    the mean over the old seeds. Continue training on a new target, a new data law, with
    frozen rows: transfer and weak-to-strong protocols."""

    result: Any = None
    record: int = -1
    name = "from_result"

    def _arrays(self, model):
        res = self.result
        if res is None or not hasattr(res, "Q"):
            raise _bad("train.init", type(res).__name__, "FromResult(result) with a sgdlab Result")
        Q, M = res.Q[:, self.record], res.M[:, self.record]
        if not (np.all(np.isfinite(Q)) and np.all(np.isfinite(M))):
            raise _bad("train.init", "a result with diverged seeds at that record", "a finite state for every seed")
        A = res.a[:, self.record] if res.trained_second_layer else None
        return _gram_arrays(Q, M, A, model.p, model.a, "train.init")


PCA_SIGNS = ("random", "labels", "positive")


def _label_sign(key, model, u, S, c):
    """+1 or -1: the sign that makes sum_i y_i f(u_i) >= 0 on labelled samples (student fields
    u (n,), frame coordinates S (n, a), latents c (n,)), with f the student's output."""
    xi = jax.random.normal(key, u.shape, u.dtype)
    y = model.problem.target(S, c) + model.problem.noise * xi
    f = model.student.output(u[:, None], jnp.asarray(model.student.a0, u.dtype))
    return jnp.where(jnp.sum(y * f) < 0, -1.0, 1.0)


@dataclass(frozen=True)
class PCA(Init):
    """Pre-training by PCA: the row is the top eigenvector of the sample covariance
    (1/n') sum_i x_i x_i^T of ``samples`` = n' fresh unlabelled inputs of the data law (at
    step 0), exact at finite d on every stochastic engine.

    ``sign``: ``"random"`` (the eigenvector's sign is arbitrary: a uniformly random one, as
    PCA gives it), ``"labels"`` (the sign that makes sum_i y_i f(w.x_i) >= 0 on ``labels``
    fresh labelled samples, f the student: these samples count in the sample budget,
    :attr:`labelled_samples`) or ``"positive"`` (an oracle: the sign of the overlap with
    teacher direction 0, the law conditioned on m0 >= 0, as ``"random_positive"``).

    Full engine: the eigenvector of the n' x d data itself (through the smaller of X X^T and
    X^T X). Chain: its frame coordinates drawn exactly through a tridiagonal n' x n' problem
    (``sgdlab._pca``, docs/chain.md), cost O(n') per bisection step, independent of d. The
    chain needs a law whose part orthogonal to the frame is standard (no orthogonal scale, one
    row per sample): isotropic and spiked inputs, mixtures with ``sigma_perp = 1``. ODE:
    spiked inputs only, from the BBP limit (:func:`sgdlab.spiked.bbp_overlap`) along the
    spike, positive sign."""

    samples: int = 1
    sign: str = "random"
    labels: int = 0
    name = "pca"

    def __post_init__(self) -> None:
        for name, v, lo in (("train.pca_samples", self.samples, 1), ("train.pca_labels", self.labels, 0)):
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < lo:
                raise _bad(name, v, f"an integer >= {lo}")
        if self.sign not in PCA_SIGNS:
            raise _bad("train.pca_sign", self.sign, "'random', 'labels' or 'positive'")
        if self.sign == "labels" and self.labels < 1:
            raise _bad("train.pca_labels", self.labels, "an integer >= 1 when train.pca_sign = 'labels'")

    @property
    def labelled_samples(self) -> int:
        """Labelled samples the start consumes (0 unless ``sign = "labels"``)."""
        return self.labels if self.sign == "labels" else 0

    def check(self, model) -> None:
        if model.p != 1:
            raise _bad("train.init", "pca", "a one-row student (width = 1) for a PCA start")
        if model.rows != 1:
            raise _bad("train.init", "pca", "data with one row per sample for a PCA start")

    def _check_chain(self, model) -> None:
        comp = model.data.components(model.r, 0) if model.data.gaussian else None
        if comp is None or comp.sigma is not None:
            raise _bad("train.init", f"pca on data {model.data.name!r}",
                       "on the chain: a Gaussian law whose orthogonal part is standard (sigma_perp = 1)")

    def _sign(self, key, model, w_frame, fields):
        """The factor +1 or -1 of the sign convention for a row with frame coordinates
        ``w_frame``; ``fields(key, s)`` draws (u, S, c) of the labelled samples for the row
        multiplied by s."""
        kr, kl = jax.random.split(key)
        if self.sign == "positive":
            return jnp.where(w_frame[0] < 0, -1.0, 1.0)
        s = jnp.where(jax.random.bernoulli(kr), 1.0, -1.0)
        if self.sign == "labels":
            k1, k2 = jax.random.split(kl)
            u, S, c = fields(k1, s)
            s = s * _label_sign(k2, model, u, S, c)
        return s

    def rows(self) -> int:
        """The static number of sample rows: n' rounded up to a power of two (the count
        itself is traced, so runs that differ in n' within a bucket share one program)."""
        return 1 << max(int(self.samples) - 1, 0).bit_length()

    def per_seed(self, model, seeds):
        return {"n": np.full(seeds, float(self.samples))}

    def structure(self) -> Init:
        return PCA(self.rows(), self.sign, self.labels)

    def _n(self, start):
        return start["n"] if isinstance(start, dict) and "n" in start else float(self.samples)

    def gram(self, key, model, start, d=None):
        from ._pca import pca_frame

        self._check_chain(model)
        a, r, law, size = model.a, model.r, model.data, self.rows()
        d = model.problem.d if d is None else d
        kt, ks, kc, kl = jax.random.split(key, 4)
        g = jax.random.normal(ks, (size, 1, a), jnp.float64)
        lat = law.draw(kc, g, r, 0)
        S = (g if lat.s is None else lat.s).reshape(size, a)
        wf, _ = pca_frame(kt, S, jnp.asarray(d, jnp.float64) - a, self._n(start))

        def fields(k, s):  # u = w.x = w_frame.s + |w_perp| z for fresh samples (sigma_perp = 1)
            k1, k2, k3 = jax.random.split(k, 3)
            gl = jax.random.normal(k1, (self.labels, 1, a), jnp.float64)
            lat_l = law.draw(k2, gl, r, 0)
            Sl = (gl if lat_l.s is None else lat_l.s).reshape(self.labels, a)
            perp = jnp.sqrt(jnp.maximum(1.0 - jnp.sum(wf * wf), 0.0))
            return s * (Sl @ wf + perp * jax.random.normal(k3, (self.labels,), jnp.float64)), Sl, lat_l.c

        wf = wf * self._sign(kl, model, wf, fields)
        return jnp.ones((1, 1)), wf[None, :]

    def weights(self, key, model, start, dtype):
        a, r, d, law, size = model.a, model.r, model.problem.d, model.data, self.rows()
        kx, kl = jax.random.split(key)
        X, _ = law.sample(kx, size, d, r, 0, jnp.float64)
        X = jnp.where((jnp.arange(size) < self._n(start))[:, None], X, 0.0)  # the first n' inputs
        if size < d:  # the smaller of the two Gram matrices
            _, vec = jnp.linalg.eigh(X @ X.T)
            w = X.T @ vec[:, -1]
        else:
            _, vec = jnp.linalg.eigh(X.T @ X)
            w = vec[:, -1]
        w = w / jnp.linalg.norm(w)

        def fields(k, s):
            Xl, c = law.sample(k, self.labels, d, r, 0, jnp.float64)
            return s * (Xl @ w), Xl[:, :a], c

        return (w * self._sign(kl, model, w[:a], fields))[None, :].astype(dtype)

    def order_parameters(self, model):
        from .data import Spiked, at
        from .spiked import bbp_overlap

        if not isinstance(model.data, Spiked) or model.data.spikes != 1:
            raise _bad("train.init", f"pca on data {model.data.name!r}", "on the ODE: one-spike spiked data")
        v = model.data.spike_vectors(model.r)[0]
        gamma = model.problem.d / self.samples
        rho = math.sqrt(float(bbp_overlap(float(at(model.data.strength[0], 0)), gamma)))
        return np.eye(1), (rho * v)[None, :]


def _sigma_scale(Q, M, B, xp):
    """1 / |w_j|_Sigma per row from (Q, M): |w|_Sigma^2 = Q_jj + M_j B M_j^T."""
    return 1.0 / xp.sqrt(xp.diagonal(Q, axis1=-2, axis2=-1) + xp.sum((M @ B) * M, axis=-1))


@dataclass(frozen=True)
class OnEllipsoid(Init):
    """The start ``base`` moved radially onto the covariance-norm sphere |w|_Sigma = 1
    (``Training(norm="covariance")``; the model wraps its start in this itself): every row
    w -> w / |w|_Sigma, |w|_Sigma^2 = Q_jj + M_j B M_j^T with Sigma = I + U^T B U
    (:meth:`sgdlab.model.BaseModel.norm_metric`). The map acts row by row on the Gram state,
    so it is exact in law on the chain (applied to the exact draw of (Q, M)), on the full
    engine (applied to W) and on the ODE's start alike. It keeps each row's direction: a warm
    start m0 keeps the cosine m0 = M_j0 / sqrt(Q_jj) with the teacher, a PCA start the top
    eigenvector's direction, a uniform start a uniform direction."""

    base: Init = None  # type: ignore[assignment]

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.base.name

    def __getattr__(self, item):  # what else the wrapped start offers (e.g. PCA.labelled_samples)
        if item.startswith("__") or item == "base":
            raise AttributeError(item)
        return getattr(self.base, item)

    def check(self, model) -> None:
        self.base.check(model)

    def per_seed(self, model, seeds):
        return self.base.per_seed(model, seeds)

    def structure(self) -> Init:
        return self.base.structure()  # the model wraps it again

    def second_layer(self, model, start):
        return self.base.second_layer(model, start)

    def gram(self, key, model, start, d=None):
        Q, M = self.base.gram(key, model, start, d=d)
        s = _sigma_scale(Q, M, jnp.asarray(model.norm_metric(), M.dtype), jnp)
        return Q * s[:, None] * s[None, :], M * s[:, None]

    def weights(self, key, model, start, dtype):
        W = self.base.weights(key, model, start, dtype)
        Wf = W[:, : model.a]
        B = jnp.asarray(model.norm_metric(), W.dtype)
        return W / jnp.sqrt(jnp.sum(W * W, axis=1) + jnp.sum((Wf @ B) * Wf, axis=1))[:, None]

    def order_parameters(self, model):
        Q, M = self.base.order_parameters(model)
        Q, M = np.asarray(Q, np.float64), np.asarray(M, np.float64)
        s = _sigma_scale(Q, M, model.norm_metric(), np)
        return Q * s[:, None] * s[None, :], M * s[:, None]


def as_init(value: Any) -> Init:
    """``"random"``, ``"random_positive"``, a number m0 (warm start) or an :class:`Init`."""
    if isinstance(value, Init):
        return value
    if value == "random":
        return Random()
    if value == "random_positive":
        return RandomPositive()
    return Warm(float(value))
