"""Sequence single-index models and single-layer attention (Arnaboldi et al. 2025).

A sample is a sequence of L tokens x_1..x_L in R^d, i.i.d. N(0, I_d), optionally shifted by
fixed positional encodings p_l. The target sees the teacher fields of the raw tokens,

    y = g(nu_1, ..., nu_L),      nu_l = w* . x_l,

and a student sees the token fields of the shifted tokens,

    lambda_l = w_{j(l)} . (x_l + p_l),

with j(l) = 0 for the tied network and the attention layer (one row w) and j(l) = l for the
position-specific ("plain") network (one row per token). Everything is a function of these
fields, so the three engines run sequence models with the machinery of the single-sample
models: the tokens of a batch are the rows of the batch, and the positional encodings are
fixed directions u_1..u_a of the Gram matrix (docs/chain.md). The encodings are given by
their coefficients in an orthonormal basis u_1..u_a orthogonal to w*:

    p_l = sum_k positional[l][k] u_k,

so ``positional="opposite"`` (L = 2) is p_1 = s u, p_2 = -s u with s = ``positional_scale``.
The order parameters are M = [w.w*, w.u_1, ..., w.u_a] per row (semantic alignment m and
positional alignments e) and Q = W W^T; the escape statistic is the semantic |m|/sqrt(Q).

>>> from sgdlab import run, Training
>>> from sgdlab.sequence import SequenceProblem, SequenceStudent
>>> prob = SequenceProblem(d=500, length=4, link="h2", combine="pooled")
>>> res = run(prob, SequenceStudent(kind="tied", activation="h2"),
...           Training(lr=0.5 / 500, steps=20_000, spherical=True), seeds=32)
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._functions import resolve_fn
from ._kernels import _tensor_rule
from .data import Tokens
from .init import Init
from .model import BaseModel, Training, _bad, _finite, _positive_int

__all__ = [
    "COMBINES",
    "KINDS",
    "READOUTS",
    "SequenceModel",
    "SequenceProblem",
    "SequenceStudent",
    "positional_pattern",
    "softmax_rows",
]

COMBINES = ("sum", "pooled", "product", "difference", "staircase", "attention")
SCALES = {"one": lambda L: 1.0, "mean": lambda L: 1.0 / L, "sqrt": lambda L: 1.0 / math.sqrt(L)}
KINDS = ("tied", "plain", "attention")
POOLINGS = ("field", "sum")
READOUTS = ("matrix", "trace", "projection")


def softmax_rows(A: jax.Array) -> jax.Array:
    """Row-wise softmax of a (..., L, L) matrix."""
    return jax.nn.softmax(A, axis=-1)


def positional_pattern(L: int) -> np.ndarray:
    """The alternating sign pattern s_l = (-1)^l (s = (1, -1) for L = 2)."""
    return np.array([(-1.0) ** k for k in range(L)])


def _matrix(name: str, value: Any, rows: int, cols: int | None = None) -> tuple[tuple[float, ...], ...]:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        arr = None
    want = f"{rows} rows" + (f" of {cols} numbers" if cols is not None else " of equal length")
    if arr is None or arr.ndim != 2 or arr.shape[0] != rows or (cols is not None and arr.shape[1] != cols):
        raise _bad(name, value, f"a list of {want}")
    if not np.all(np.isfinite(arr)):
        raise _bad(name, value, "finite numbers")
    return tuple(tuple(float(v) for v in row) for row in arr)


# --------------------------------------------------------------------------------------
# Problem: token inputs, positional encodings and a sequence target
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SequenceProblem:
    """L Gaussian tokens (plus positional encodings) and a target of the L teacher fields.

    ``combine`` names the target family, with g = ``link`` (a name such as ``"h2"``, a list
    of orthonormal-Hermite coefficients or a JAX function of one field) and
    c = ``scale`` ("one": 1, "mean": 1/L, "sqrt": 1/sqrt(L)):

    - ``sum``: c sum_l g(nu_l);
    - ``pooled``: g(L^{-1/2} sum_l nu_l) (a single-index model of the pooled token);
    - ``product``: prod_l g(nu_l);
    - ``difference``: c sum_l (-1)^l g(nu_l) (g(nu_1) - g(nu_2) for L = 2, c = 1);
    - ``staircase``: c sum_k prod_{l <= k} g(nu_l) (nu_1 + nu_1 nu_2 + ... with g = h1);
    - ``attention``: the matrix (1 - omega) softmax(nu nu^T) + omega A with
      A = softmax(a^2 s s^T), s_l = (-1)^l (for L = 2, A = softmax([[a^2, -a^2], [-a^2, a^2]]));
      a = ``attention_a``. Row-wise softmax.

    ``function``: any JAX function of the token fields, ``function(nu) -> y`` with ``nu`` of
    shape ``(..., L)`` and ``y`` of shape ``(...)`` or ``(..., L, L)``; it replaces ``combine``.
    ``positional``: ``None``, ``"opposite"`` (L = 2: p_1 = s u, p_2 = -s u) or a list of L
    rows of coefficients (p_l = sum_k row_l[k] u_k, u_k orthonormal and orthogonal to w*);
    ``positional_scale`` multiplies them. ``noise``: label noise on scalar targets.
    """

    d: int
    length: int = 2
    link: Any = "h2"
    combine: str = "sum"
    scale: str = "sqrt"
    function: Callable | None = None
    positional: Any = None
    positional_scale: float = 1.0
    omega: float = 0.0
    attention_a: float = 1.0
    noise: float = 0.0

    def __post_init__(self) -> None:
        set_ = functools.partial(object.__setattr__, self)
        set_("d", _positive_int("d", self.d))
        L = _positive_int("sequence.length", self.length)
        set_("length", L)
        set_("noise", _finite("target.noise", self.noise, minimum=0.0))
        set_("positional_scale", _finite("sequence.positional_scale", self.positional_scale))
        set_("attention_a", _finite("sequence.attention_a", self.attention_a))
        om = _finite("sequence.omega", self.omega)
        if not 0.0 <= om <= 1.0:
            raise _bad("sequence.omega", self.omega, "a number in [0, 1]")
        set_("omega", om)
        if self.function is not None:
            if not callable(self.function):
                raise _bad("target.function", self.function, "a JAX function of the (..., L) token fields")
        else:
            if self.combine not in COMBINES:
                raise _bad("sequence.combine", self.combine, ", ".join(repr(c) for c in COMBINES))
            if self.scale not in SCALES:
                raise _bad("sequence.scale", self.scale, "'one', 'mean' or 'sqrt'")
            if self.combine != "attention":
                set_("link", resolve_fn(self.link, field="target.link"))
            if self.combine == "difference" and L < 2:
                raise _bad("sequence.length", L, "an integer >= 2 for the 'difference' target")
        pos = self.positional
        if isinstance(pos, str):
            if pos != "opposite":
                raise _bad("sequence.positional", pos, "none, 'opposite' or a list of L rows of coefficients")
            if L != 2:
                raise _bad("sequence.positional", pos, f"'opposite' only for length 2 (got length {L})")
            pos = ((1.0,), (-1.0,))
        elif pos is not None:
            pos = _matrix("sequence.positional", pos, L)
            if len(pos[0]) == 0:
                raise _bad("sequence.positional", self.positional, "at least one coefficient per token")
        set_("positional", pos)
        if self.is_matrix and self.noise > 0:
            raise _bad("target.noise", self.noise, "0 for a matrix-valued (attention) target")

    @property
    def L(self) -> int:
        return self.length

    @property
    def n_positional(self) -> int:
        """a: the number of positional directions u_k."""
        return 0 if self.positional is None else len(self.positional[0])

    @property
    def r(self) -> int:
        """Fixed directions of the Gram matrix: w* and u_1..u_a."""
        return 1 + self.n_positional

    @property
    def offsets(self) -> np.ndarray:
        """(L, r): coefficients of p_l on the fixed directions [w*, u_1, ..., u_a]."""
        off = np.zeros((self.L, self.r))
        if self.positional is not None:
            off[:, 1:] = self.positional_scale * np.asarray(self.positional)
        return off

    @property
    def data(self) -> Tokens:
        """The data law: L i.i.d. N(0, I_d) tokens, token l shifted by its positional encoding
        (a latent mean on the frame [w*, u_1, ..., u_a])."""
        off = self.offsets
        return Tokens(length=self.L, means=tuple(map(tuple, off)) if np.any(off) else None, frame_size=self.r)

    @property
    def is_matrix(self) -> bool:
        """True when the label is an L x L matrix (the attention target)."""
        if self.function is not None:
            out = jax.eval_shape(self.function, jax.ShapeDtypeStruct((self.L,), jnp.float64))
            return len(out.shape) == 2
        return self.combine == "attention"

    def positional_matrix(self) -> jax.Array:
        """A = softmax(a^2 s s^T): the positional part of the attention target."""
        s = jnp.asarray(positional_pattern(self.L))
        return softmax_rows(self.attention_a**2 * jnp.outer(s, s))

    def label(self, nu: jax.Array) -> jax.Array:
        """Noise-free label for token fields ``nu`` of shape ``(L,)``."""
        if self.function is not None:
            return self.function(nu)
        L, c = self.L, SCALES[self.scale](self.L)
        if self.combine == "attention":
            return (1.0 - self.omega) * softmax_rows(jnp.outer(nu, nu)) + self.omega * self.positional_matrix()
        g = self.link
        if self.combine == "pooled":
            return g(jnp.sum(nu) / math.sqrt(L))
        if self.combine == "sum":
            return c * jnp.sum(g(nu))
        if self.combine == "product":
            return jnp.prod(g(nu))
        if self.combine == "difference":
            return c * jnp.sum(jnp.asarray(positional_pattern(L)) * g(nu))
        return c * jnp.sum(jnp.cumprod(g(nu)))  # staircase


# --------------------------------------------------------------------------------------
# Students: tied, position-specific (plain), single-layer attention
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SequenceStudent:
    """A network of the token fields lambda_l = w_{j(l)} . (x_l + p_l).

    - ``tied``: one row w; ``pooling="field"`` gives f = sigma(L^{-1/2} sum_l lambda_l)
      (Arnaboldi et al. 2025), ``pooling="sum"`` gives f = L^{-1/2} sum_l sigma(lambda_l).
    - ``plain``: one row w_l per token (position-specific weights), the same two poolings;
      on the flattened sequence it is a single-index model in dimension L d.
    - ``attention``: S = softmax(q q^T) (row-wise), q_l = w . (x_l + p_l), read out as the
      matrix (``readout="matrix"``: the loss is summed over its entries, so the square loss
      is 1/2 the squared Frobenius norm), its trace, or the projection <S, B> with the L x L
      matrix B = ``projection``. A matrix target is read out the same way.

    ``length`` is filled in from the problem when the model is built (``plain`` has one row
    per token).
    """

    kind: str = "tied"
    activation: Any = "h2"
    pooling: str = "field"
    readout: str = "matrix"
    projection: Any = None
    length: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise _bad("sequence.student", self.kind, "'tied', 'plain' or 'attention'")
        if self.pooling not in POOLINGS:
            raise _bad("sequence.pooling", self.pooling, "'field' or 'sum'")
        if self.readout not in READOUTS:
            raise _bad("sequence.readout", self.readout, "'matrix', 'trace' or 'projection'")
        if self.kind != "attention":
            object.__setattr__(self, "activation", resolve_fn(self.activation, field="student.activation"))
        if self.length is not None:
            L = _positive_int("sequence.length", self.length)
            object.__setattr__(self, "length", L)
            if self.kind == "attention" and self.readout == "projection":
                if self.projection is None:
                    raise _bad("sequence.projection", None, f"a {L} x {L} matrix for readout 'projection'")
                object.__setattr__(self, "projection", _matrix("sequence.projection", self.projection, L, L))

    @property
    def width(self) -> int:
        if self.kind == "plain":
            if self.length is None:
                raise ValueError("sequence.student: the plain network's width is its problem's length")
            return self.length
        return 1

    @property
    def p(self) -> int:
        return self.width

    @property
    def a0(self) -> tuple[float, ...]:
        return (1.0,) * self.width

    @property
    def trained(self) -> bool:
        return False

    def rows(self, L: int) -> np.ndarray:
        """j(l): the row that token l's field uses."""
        return np.arange(L) if self.kind == "plain" else np.zeros(L, dtype=np.int64)

    def readout_of(self, S: jax.Array) -> jax.Array:
        if self.readout == "matrix":
            return S
        if self.readout == "trace":
            return jnp.trace(S, axis1=-2, axis2=-1)
        return jnp.sum(S * jnp.asarray(self.projection), axis=(-2, -1))

    def output(self, lam: jax.Array) -> jax.Array:
        """Output for the L token fields ``lam`` (shape ``(L,)``) of one sample."""
        if self.kind == "attention":
            return self.readout_of(softmax_rows(jnp.outer(lam, lam)))
        L = lam.shape[-1]
        if self.pooling == "field":
            return self.activation(jnp.sum(lam) / math.sqrt(L))
        return jnp.sum(self.activation(lam)) / math.sqrt(L)


# --------------------------------------------------------------------------------------
# The model the engines consume
# --------------------------------------------------------------------------------------

RISK_POINTS = 20_000  # quadrature budget of the population risk; beyond it a fixed Monte Carlo sample
_MC_KEY = 20251128


@dataclass(frozen=True)
class SequenceModel(BaseModel):
    """A sequence problem, a sequence student and a training rule, seen by the engines.

    Same interface as :class:`sgdlab.model.Model`: the data law (:class:`sgdlab.data.Tokens`)
    has ``rows = L``, so the engines draw ``batch * L`` rows per step (the tokens of
    ``batch`` samples, sample-major), shifted by the positional encodings (latent means on
    the frame), and pass the shifted fields Z (``batch * L``, p + r) to :meth:`batch_grads`,
    which returns C = -d(batch-mean loss)/d(student fields) per token row.
    """

    problem: SequenceProblem
    student: SequenceStudent
    training: Training

    def __post_init__(self) -> None:
        if self.student.length != self.problem.length:
            stu = dataclasses.replace(self.student, length=self.problem.length)
            object.__setattr__(self, "student", stu)
        if self.training.smoothed:
            raise _bad("train.smoothing", self.training.smoothing, "null for sequence models")

    @property
    def tokens(self) -> int:
        return self.problem.length

    @property
    def offsets(self) -> np.ndarray:
        return self.problem.offsets

    @property
    def warm_directions(self) -> int:
        """A warm start m0 has overlap m0 with w* and with every positional direction."""
        return self.a

    @property
    def token_rows(self) -> np.ndarray:
        return self.student.rows(self.tokens)

    def check(self) -> None:
        p, r, d, L = self.p, self.r, self.problem.d, self.tokens
        need = min(self.training.batch * L, p)
        if d < p + r + need:
            raise _bad("d", d, f"an integer >= width + fixed directions + min(batch * length, width) = {p + r + need}")
        if self.problem.is_matrix and self.student.kind != "attention":
            raise _bad("sequence.student", self.student.kind, "'attention' for a matrix-valued target")
        init = self.training.init
        if not isinstance(init, str) and not isinstance(init, Init) and r * init**2 > 1:
            raise _bad("train.init", init, f"|m0| <= 1/sqrt(fixed directions) = {1 / math.sqrt(r):.4g}")
        super().check()

    # ------------------------------------------------------------------ one sample
    def token_loss(self, lam: jax.Array, nu: jax.Array, xi: jax.Array) -> jax.Array:
        """Loss of one sample from its student token fields ``lam`` (L,) (shifted by the
        positional encodings), teacher token fields ``nu`` (L,) and label noise ``xi``."""
        f = self.student.output(lam)
        y = self.problem.label(nu)
        if self.problem.is_matrix and f.ndim < 2:
            y = self.student.readout_of(y)
        y = y + self.problem.noise * xi
        return jnp.sum(self.training.loss_fn(f, y))

    def sample_loss(self, Zs: jax.Array, xi: jax.Array) -> jax.Array:
        """Loss of one sample from its shifted fields ``Zs`` (L, p + r)."""
        L = self.tokens
        lam = Zs[jnp.arange(L), jnp.asarray(self.token_rows)]
        return self.token_loss(lam, Zs[:, self.p], xi)

    def batch_grads(self, Z: jax.Array, a: jax.Array, xi: jax.Array, c=None, x2=None) -> tuple[jax.Array, jax.Array]:
        """Shifted token fields ``Z`` (n L, p + r) -> (C (n L, p), zero grad of a)."""
        L, p = self.tokens, self.p
        n = Z.shape[0] // L
        Zs = Z.reshape(n, L, -1)
        xs = xi.reshape(n, L)[:, 0]

        def grad_one(zs, x):
            return -jax.grad(lambda lam: self.sample_loss(jnp.concatenate([lam, zs[:, p:]], axis=1), x))(zs[:, :p])

        C = jax.vmap(grad_one)(Zs, xs)
        return self._masked(C.reshape(n * L, p) / n, jnp.zeros_like(a))

    # ------------------------------------------------------------------ population quantities
    def token_field_moments(self, M: jax.Array, Q: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Law of the used token fields at order parameters (M (p, r), Q (p, p)): per token
        l the pair (lambda_l, nu_l) has mean (mu_l, 0), mu_l = sum_k M_{j(l), k} offsets[l, k],
        variance (Q_jj, 1) and covariance M_{j(l), 0}; tokens are independent.
        Returns (mu (L,), var (L,), cov (L,))."""
        j = jnp.asarray(self.token_rows)
        mu = jnp.sum(M[j] * jnp.asarray(self.offsets), axis=1)
        return mu, jnp.diag(Q)[j], M[j, 0]

    def expectation(self, fun: Callable, M: jax.Array, Q: jax.Array, points: int = RISK_POINTS) -> jax.Array:
        """E[fun(lam (N, L), nu (N, L), xi (N,))] over the used token fields, in the 2L (+ 1 with
        label noise) standard coordinates: an exact tensor Gauss–Hermite rule when target,
        activation and loss are polynomials and it fits 4 x ``points``; otherwise a tensor rule
        with at least 8 nodes per axis within ``points`` (L = 2: 11 nodes, relative error
        ~1e-3 for the attention loss); otherwise a fixed Monte Carlo sample of ``points``
        draws (relative error ~ points^-1/2, e.g. L >= 3 attention or L >= 5 in general)."""
        rule = self._rule(points)
        y, w = jnp.asarray(rule[0]), jnp.asarray(rule[1])
        L = self.tokens
        mu, var, cov = self.token_field_moments(M, Q)
        u, v = y[:, :L], y[:, L : 2 * L]
        s = jnp.sqrt(jnp.maximum(var, 0.0))
        rho = jnp.where(s > 0, cov / jnp.where(s > 0, s, 1.0), 0.0)  # nu = rho u + sqrt(1 - rho^2) v
        nu = rho * u + jnp.sqrt(jnp.maximum(1.0 - rho**2, 0.0)) * v
        lam = mu + s * u
        xi = y[:, 2 * L] if self.problem.noise > 0 else jnp.zeros(y.shape[0])
        return jnp.tensordot(w, fun(lam, nu, xi), axes=(0, 0))

    def _degree_per_axis(self) -> int | None:
        """Polynomial degree of the loss in each standard coordinate, when known."""
        prob, stu, tr = self.problem, self.student, self.training
        if prob.function is not None or prob.combine == "attention" or stu.kind == "attention":
            return None
        if tr.loss not in ("square", "correlation") or prob.link.degree is None or stu.activation.degree is None:
            return None
        dg, ds = prob.link.degree, stu.activation.degree
        return 2 * max(dg, ds, 1) if tr.loss == "square" else dg + ds

    @functools.lru_cache(maxsize=8)  # noqa: B019 (frozen, hashable model)
    def _rule(self, points: int) -> tuple[np.ndarray, np.ndarray]:
        k = 2 * self.tokens + (1 if self.problem.noise > 0 else 0)
        deg = self._degree_per_axis()
        if deg is not None and (deg // 2 + 1) ** k <= 4 * points:
            return _tensor_rule(max(2, deg // 2 + 1), k)
        n = int(points ** (1.0 / k) + 1e-9)
        if n >= 8:
            return _tensor_rule(min(n, 40), k)
        y = np.random.default_rng(_MC_KEY).standard_normal((points, k))
        return y, np.full(points, 1.0 / points)

    def population_risk(self, M: jax.Array, Q: jax.Array, a: jax.Array | None = None) -> jax.Array:
        """Population value of the training loss at (M, Q) (see :meth:`expectation`)."""
        loss = jax.vmap(self.token_loss)
        return self.expectation(loss, M, Q)

    def ode_field(self, second_order: bool, nodes: int | None = None):
        """The ODE's field for one-row students (tied, attention): ``sgdlab._sequence_drift``."""
        from ._sequence_drift import sequence_velocity

        field, n = sequence_velocity(self, second_order=second_order, nodes=nodes)
        return field, n, False
