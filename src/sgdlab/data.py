"""Data laws: what one sample looks like, as a fixed frame plus a low-dimensional latent.

Every Gaussian family sgdlab simulates has the form

    x = U^T s + sigma_c z_perp,

where ``U`` (a x d) is a fixed orthonormal *frame* (the r teacher directions first, then
spikes of a covariance, cluster means, positional encodings), ``s`` (a numbers) are the
latent frame coordinates, whose law may depend on a discrete latent ``c`` (a cluster, a
task) and on the step ``t``, and ``z_perp`` is a standard Gaussian on the orthogonal
complement of the frame, scaled by ``sigma_c``. A sample may consist of several rows
(``rows``: the tokens of a sequence); row ``l`` may have its own latent mean (a positional
encoding). For such laws the chain stays exact and its cost independent of d: the frame
is part of its Gram matrix, the latent is drawn in a coordinates, and ``sigma_c`` scales
the part of the batch orthogonal to the span of [W; U] (docs/chain.md). The ODE takes its
Gaussian expectations per mixture component.

A Gaussian law is described by its mixture components (:class:`Components`): per cluster a
probability, a latent mean per row, a Cholesky factor of the latent covariance and the
orthogonal standard deviation. Any parameter of a law may be a function of the step ``t``
(a *schedule*, e.g. :class:`Switch`): the step from count t to t + 1 draws its samples from
the law at t.

Non-Gaussian inputs are a :class:`Sampler` (``sample(key, n, t) -> x`` or ``(x, c)``): only
the full d-dimensional engine can run them; the frame is then the first ``frame``
coordinates of x, which is what the target and the order parameters M see.

Laws here know nothing of engines. Engines use three entry points: ``frame(r)``,
``draw(key, g, r, t)`` (latent of a batch given standard Gaussian frame coordinates ``g``)
and ``sample(key, n, d, r, t, dtype)`` (a batch of d-dimensional rows, for the full engine).
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._errors import _bad

__all__ = [
    "Components",
    "DataLaw",
    "GaussianLaw",
    "Isotropic",
    "Latent",
    "Mixture",
    "Sampler",
    "Spiked",
    "Switch",
    "Tokens",
    "at",
    "schedule_jumps",
]


def at(value: Any, t: Any) -> Any:
    """The value of a law parameter at step ``t``: ``value(t)`` for a schedule, else ``value``."""
    return value(t) if callable(value) else value


def schedule_jumps(*objs: Any) -> tuple[float, ...]:
    """The steps at which the schedules among ``objs`` and their parameters (one level down:
    the fields of a law or a training) jump, sorted: a schedule declares them as its
    ``jumps`` attribute (:class:`Switch`: its step). The ODE engine stops its adaptive steps
    there instead of locating each discontinuity by rejected steps."""
    out: set[float] = set()

    def visit(v: Any, depth: int) -> None:
        if callable(v) and not isinstance(v, type):
            out.update(float(x) for x in getattr(v, "jumps", ()))
        if depth == 0 or isinstance(v, type):
            return
        if dataclasses.is_dataclass(v):
            children = [getattr(v, f.name) for f in dataclasses.fields(v)]
        elif isinstance(v, tuple) and hasattr(v, "_fields"):
            children = list(v)
        else:
            return
        for c in children:
            visit(c, depth - 1)

    for o in objs:
        visit(o, 1)
    return tuple(sorted(out))


@dataclass(frozen=True)
class Switch:
    """A schedule that is ``before`` for steps t < ``at`` and ``after`` from step ``at`` on."""

    at: int
    before: Any
    after: Any

    @property
    def jumps(self) -> tuple[int, ...]:
        return (self.at,)

    def __call__(self, t):
        return jnp.where(jnp.asarray(t) < self.at, jnp.asarray(self.before, jnp.float64),
                         jnp.asarray(self.after, jnp.float64))


class Latent(NamedTuple):
    """The latent part of a batch of ``n`` samples with ``R`` rows each.

    ``s`` (n, R, a): frame coordinates, or ``None`` when they are the standard Gaussian
    coordinates the engine passed in (isotropic data); ``c`` (n,): the discrete latent;
    ``sigma`` (n, R): orthogonal standard deviation, or ``None`` for 1."""

    s: jax.Array | None
    c: jax.Array
    sigma: jax.Array | None


class Components(NamedTuple):
    """A Gaussian mixture in frame coordinates, at one step: K components.

    ``prob`` (K,); ``mean`` (K, R, a) or ``None`` (zero); ``chol`` (K, a, a) factors B_k
    of the latent covariances (B_k B_k^T), or ``None`` (identity); ``sigma`` (K, R)
    orthogonal standard deviations, or ``None`` (1)."""

    prob: jax.Array
    mean: jax.Array | None
    chol: jax.Array | None
    sigma: jax.Array | None


class DataLaw(ABC):
    """Base class of data laws. ``gaussian`` laws run on every engine, the others on ``full`` only."""

    name: str = "data"
    gaussian: bool = True

    @property
    def rows(self) -> int:
        """Rows (d-dimensional vectors) per sample: 1, or the tokens of a sequence."""
        return 1

    @abstractmethod
    def frame(self, r: int) -> int:
        """The number a of frame directions for a target with r teacher directions."""

    def validate(self, r: int) -> None:
        """Raise a one-line ``ValueError`` if the law cannot serve a target with r directions."""
        if self.frame(r) < r:
            raise _bad("data.frame", self.frame(r), f"at least the {r} teacher directions")

    @abstractmethod
    def sample(self, key: jax.Array, n: int, d: int, r: int, t, dtype) -> tuple[jax.Array, jax.Array]:
        """A batch for the full engine: rows X (n * rows, d), sample-major, and c (n,)."""

    def draw(self, key: jax.Array, g: jax.Array, r: int, t) -> Latent:
        raise ValueError(f"data: got {self.name!r}; allowed on engine 'chain' and 'ode': Gaussian data laws")


class GaussianLaw(DataLaw):
    """A law given by its mixture components in frame coordinates (see :class:`Components`)."""

    @abstractmethod
    def components(self, r: int, t) -> Components:
        """The mixture at step ``t`` (traceable in t)."""

    def draw(self, key: jax.Array, g: jax.Array, r: int, t) -> Latent:
        """Latent of a batch from standard Gaussian frame coordinates ``g`` (n, R, a):
        c ~ prob, s = mean_c + chol_c g, sigma = sigma_c. ``key`` draws c only."""
        comp = self.components(r, t)
        n = g.shape[0]
        if comp.prob.shape[0] > 1:
            c = jax.random.categorical(key, jnp.log(comp.prob), shape=(n,))
        else:
            c = jnp.zeros((n,), jnp.int32)
        s = None
        if comp.chol is not None:
            s = jnp.einsum("nab,nrb->nra", comp.chol[c].astype(g.dtype), g)
        if comp.mean is not None:
            s = (g if s is None else s) + comp.mean[c].astype(g.dtype)
        sigma = None if comp.sigma is None else comp.sigma[c].astype(g.dtype)
        return Latent(s, c, sigma)

    def sample(self, key, n, d, r, t, dtype):
        """x = U^T s + sigma z_perp with U the first a coordinates: a standard Gaussian batch
        whose first a coordinates are replaced by s and the rest scaled by sigma."""
        a, R = self.frame(r), self.rows
        X = jax.random.normal(key, (n * R, d), dtype)
        lat = self.draw(jax.random.fold_in(key, 1), X[:, :a].reshape(n, R, a), r, t)
        if lat.sigma is not None:  # z_perp: the coordinates off the frame
            X = X.at[:, a:].multiply(lat.sigma.reshape(n * R, 1))
        if lat.s is not None:
            X = X.at[:, :a].set(lat.s.reshape(n * R, a))
        return X, lat.c


# ----------------------------------------------------------------------------- the laws


@dataclass(frozen=True)
class Isotropic(GaussianLaw):
    """x ~ N(0, I_d); the frame is the r teacher directions."""

    name = "isotropic"

    def frame(self, r: int) -> int:
        return r

    def components(self, r, t) -> Components:
        return Components(jnp.ones(1), None, None, None)

    def draw(self, key, g, r, t) -> Latent:
        return Latent(None, jnp.zeros((g.shape[0],), jnp.int32), None)

    def sample(self, key, n, d, r, t, dtype):
        return jax.random.normal(key, (n, d), dtype), jnp.zeros((n,), jnp.int32)


def _as_tuple(name: str, value: Any) -> tuple:
    v = np.atleast_1d(np.asarray(value, dtype=np.float64))
    if v.ndim != 1 or not np.all(np.isfinite(v)):
        raise _bad(name, value, "a finite number or a list of finite numbers")
    return tuple(float(x) for x in v)


@dataclass(frozen=True)
class Spiked(GaussianLaw):
    """x ~ N(0, I_d + sum_k strength_k v_k v_k^T), v_k = sum_j overlap_kj w*_j + sqrt(1 - |overlap_k|^2) u_k.

    ``strength``: one number per spike (> -1; a schedule allowed); ``overlap``: per spike
    its overlap with teacher direction 0 (a number) or with each of the r teacher
    directions (a list of r numbers), |overlap_k| <= 1. The unit vectors u_k are orthogonal
    to the teacher span and to each other; the frame is [w*_0..w*_{r-1}, u_1..u_k]. The
    target sees the raw teacher fields w*.x (variance 1 + strength * overlap^2)."""

    strength: Any = 1.0
    overlap: Any = 0.0
    name = "spiked"

    def __post_init__(self) -> None:
        st = self.strength
        if not callable(st):
            st = _as_tuple("data.strength", st)
            if any(v <= -1 for v in st):
                raise _bad("data.strength", self.strength, "numbers > -1 (the covariance must stay positive)")
        else:
            st = (st,)
        object.__setattr__(self, "strength", st)
        ov = np.asarray(self.overlap, dtype=np.float64)
        if ov.ndim == 0:
            ov = np.broadcast_to(ov, (len(st),))[:, None]
        elif ov.ndim == 1 and len(st) == 1:
            ov = ov[None, :]
        elif ov.ndim == 1:
            ov = ov[:, None]
        if ov.ndim != 2 or ov.shape[0] != len(st) or not np.all(np.isfinite(ov)):
            raise _bad("data.overlap", self.overlap, f"a number or one overlap (list) per spike ({len(st)} spikes)")
        if np.any(np.sum(ov**2, axis=1) > 1 + 1e-12):
            raise _bad("data.overlap", self.overlap, "overlaps with |overlap_k| <= 1")
        object.__setattr__(self, "overlap", tuple(tuple(float(x) for x in row) for row in ov))

    @property
    def spikes(self) -> int:
        return len(self.strength)

    def frame(self, r: int) -> int:
        return r + self.spikes

    def validate(self, r: int) -> None:
        if len(self.overlap[0]) > r:
            raise _bad("data.overlap", [list(o) for o in self.overlap],
                       f"at most {r} overlaps per spike (one per teacher direction)")

    def spike_vectors(self, r: int) -> np.ndarray:
        """v_k in frame coordinates, shape (k, r + k)."""
        k = self.spikes
        V = np.zeros((k, r + k))
        for i, ov in enumerate(self.overlap):
            V[i, : len(ov)] = ov
            V[i, r + i] = math.sqrt(max(1.0 - float(np.sum(np.square(ov))), 0.0))
        return V

    def covariance(self, r: int, t=0) -> jax.Array:
        """The latent covariance I + sum_k strength_k v_k v_k^T (a x a) at step t."""
        V = jnp.asarray(self.spike_vectors(r))
        beta = jnp.stack([jnp.asarray(at(b, t), jnp.float64) for b in self.strength])
        return jnp.eye(V.shape[1]) + (V.T * beta) @ V

    def components(self, r, t) -> Components:
        chol = jnp.linalg.cholesky(self.covariance(r, t))
        return Components(jnp.ones(1), None, chol[None], None)


def _per_cluster(name: str, value: Any, K: int) -> Any:
    if callable(value):
        return value
    v = np.asarray(value, dtype=np.float64)
    if v.ndim == 0:
        v = np.full(K, float(v))
    if v.shape != (K,) or not np.all(np.isfinite(v)):
        raise _bad(name, value, f"a finite number or a list of {K} finite numbers (one per cluster)")
    return tuple(float(x) for x in v)


@dataclass(frozen=True)
class Mixture(GaussianLaw):
    """A Gaussian mixture x = U^T (mu_c + B_c g) + sigma_c z_perp, c ~ probs.

    ``means``: K rows of a frame coordinates (the first r of them are along the teacher
    directions); ``probs``: K probabilities (default uniform); ``latent_std``: per cluster
    the standard deviation of s around its mean inside the frame (a number or K numbers,
    default 1) or ``latent_cov``: K covariance matrices (a x a); ``sigma_perp``: the
    orthogonal standard deviation per cluster (a number or K numbers). Any of ``probs``,
    ``latent_std`` and ``sigma_perp`` may be a schedule (a function of the step returning
    the K values), e.g. a curriculum that changes the orthogonal noise at a switch step.
    Labels that depend on the cluster are the problem's ``function(s, c)``."""

    means: Any
    probs: Any = None
    latent_std: Any = 1.0
    latent_cov: Any = None
    sigma_perp: Any = 1.0
    name = "mixture"

    def __post_init__(self) -> None:
        m = np.asarray(self.means, dtype=np.float64)
        if m.ndim != 2 or m.shape[0] < 1 or m.shape[1] < 1 or not np.all(np.isfinite(m)):
            raise _bad("data.means", self.means, "a list of K >= 1 rows of frame coordinates (equal length)")
        object.__setattr__(self, "means", tuple(tuple(float(x) for x in row) for row in m))
        K = m.shape[0]
        probs = np.full(K, 1.0 / K) if self.probs is None else self.probs
        if not callable(probs):
            pv = np.asarray(probs, dtype=np.float64)
            if pv.shape != (K,) or np.any(pv < 0) or not math.isclose(float(pv.sum()), 1.0, rel_tol=1e-9):
                raise _bad("data.probs", self.probs, f"{K} non-negative numbers that sum to 1")
            probs = tuple(float(x) for x in pv)
        object.__setattr__(self, "probs", probs)
        object.__setattr__(self, "latent_std", _per_cluster("data.latent_std", self.latent_std, K))
        object.__setattr__(self, "sigma_perp", _per_cluster("data.sigma_perp", self.sigma_perp, K))
        if not callable(self.sigma_perp) and any(s <= 0 for s in self.sigma_perp):
            raise _bad("data.sigma_perp", self.sigma_perp, "positive numbers")
        if self.latent_cov is not None:
            c = np.asarray(self.latent_cov, dtype=np.float64)
            a = m.shape[1]
            if c.shape != (K, a, a) or not np.all(np.isfinite(c)):
                raise _bad("data.latent_cov", self.latent_cov, f"{K} symmetric {a} x {a} matrices")
            if np.any(np.linalg.eigvalsh(0.5 * (c + np.swapaxes(c, 1, 2))) < -1e-12):
                raise _bad("data.latent_cov", self.latent_cov, "positive semi-definite matrices")
            object.__setattr__(self, "latent_cov", tuple(map(tuple, c.reshape(K, -1).tolist())))

    @property
    def clusters(self) -> int:
        return len(self.means)

    def frame(self, r: int) -> int:
        return len(self.means[0])

    def components(self, r, t) -> Components:
        K, a = self.clusters, self.frame(r)
        prob = jnp.asarray(at(self.probs, t), jnp.float64).reshape(K)
        mean = jnp.asarray(self.means)[:, None, :]
        if self.latent_cov is not None:
            c = np.asarray(self.latent_cov).reshape(K, a, a)
            ev, V = np.linalg.eigh(0.5 * (c + np.swapaxes(c, 1, 2)))
            chol = jnp.asarray(V * np.sqrt(np.maximum(ev, 0.0))[:, None, :])  # any B with B B^T = cov
        else:
            std = jnp.asarray(at(self.latent_std, t), jnp.float64).reshape(K)
            chol = std[:, None, None] * jnp.eye(a)
        sigma = jnp.asarray(at(self.sigma_perp, t), jnp.float64).reshape(K, 1)
        return Components(prob, mean, chol, sigma)


@dataclass(frozen=True)
class Tokens(GaussianLaw):
    """A sample of L i.i.d. N(0, I_d) tokens, token l shifted by a fixed vector p_l in the
    frame (a positional encoding: a latent mean that depends on the row).

    ``means``: L rows of a frame coordinates (``None``: no shift; then ``frame_size``
    gives a)."""

    length: int = 1
    means: Any = None
    frame_size: int = 1
    name = "tokens"

    @property
    def rows(self) -> int:
        return self.length

    def frame(self, r: int) -> int:
        return self.frame_size if self.means is None else len(self.means[0])

    def components(self, r, t) -> Components:
        mean = None if self.means is None else jnp.asarray(self.means)[None]
        return Components(jnp.ones(1), mean, None, None)

    def draw(self, key, g, r, t) -> Latent:
        c = jnp.zeros((g.shape[0],), jnp.int32)
        if self.means is None:
            return Latent(None, c, None)
        return Latent(g + jnp.asarray(self.means, g.dtype)[None], c, None)


@dataclass(frozen=True, eq=False)
class Sampler(DataLaw):
    """Non-Gaussian inputs from a function ``sample(key, n, t) -> x`` (n, d) or ``(x, c)``.

    The frame is the first ``frame`` coordinates of x: the target sees them (and c), and
    the order parameters M are the student's weights on them. Only the full engine can run
    a sampler (the chain and the ODE need a Gaussian law given the frame)."""

    fn: Callable
    frame_dims: int = 1
    label: str = "custom"
    gaussian = False

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise _bad("data.sample", self.fn, "a JAX function sample(key, n, t) -> x or (x, c)")

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.label

    def frame(self, r: int) -> int:
        return self.frame_dims

    def sample(self, key, n, d, r, t, dtype):
        out = self.fn(key, n, t)
        x, c = out if isinstance(out, tuple) else (out, jnp.zeros((n,), jnp.int32))
        if x.shape != (n, d):
            raise _bad("data.sample", f"an array of shape {tuple(x.shape)}", f"shape (n, d) = ({n}, {d})")
        return x.astype(dtype), c
