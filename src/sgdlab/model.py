"""What is learned, who learns it and how: problems, students and training rules.

Everything here is written as functions of the *local fields* of one sample,

    lambda = W x   (p student fields),     nu = W* x   (r teacher fields),

so that every engine (``full``, ``chain``, ``ode``) consumes the very same definitions:
the full simulation evaluates them on fields of sampled d-dimensional inputs, the chain on
fields sampled from the Gram matrix, the ODE takes their Gaussian expectations.
Nothing in this module knows about engines.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import smoothing as _sm
from ._errors import _bad
from ._functions import resolve_fn
from .data import DataLaw, Isotropic
from .init import PCA, Init, OnEllipsoid, as_init

__all__ = ["BaseModel", "Model", "Problem", "Record", "Student", "Training", "INITS", "LOSSES", "NORMS",
           "OUTPUT_SCALES"]


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value) or value < 1:
        raise _bad(name, value, "a positive integer")
    return int(value)


def _finite(name: str, value: Any, *, minimum: float | None = None, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _bad(name, value, "a finite number")
    if minimum is not None and (value < minimum or (strict and value == minimum)):
        raise _bad(name, value, f"a number {'>' if strict else '>='} {minimum}")
    return float(value)


# --------------------------------------------------------------------------------------
# Problem: data and target
# --------------------------------------------------------------------------------------


def _takes_latent(fn: Callable) -> bool:
    """True when ``fn`` takes two positional arguments (frame coordinates and the latent c)."""
    try:
        params = [q for q in inspect.signature(fn).parameters.values()
                  if q.kind in (q.POSITIONAL_ONLY, q.POSITIONAL_OR_KEYWORD) and q.default is q.empty]
    except (TypeError, ValueError):
        return False
    return len(params) >= 2


@dataclass(frozen=True)
class Problem:
    """Inputs from a data law (default x ~ N(0, I_d)) and an index target y = g(W* x) + noise * xi.

    ``W*`` has ``directions`` (= r) orthonormal rows: the first r directions of the data
    law's frame (``sgdlab.data``; the frame also holds spikes, cluster means, ...). The
    target is either a committee ``y = sum_k weights_k * link(nu_k)`` of the raw teacher
    fields nu = W* x (``link`` a name such as ``"h3"``, a list of orthonormal-Hermite
    coefficients or a JAX function of one field) or, with ``function``, any JAX function:
    ``function(nu)`` of the r teacher fields (shape ``(..., r)``; e.g. the staircase
    ``nu1 + nu1 * nu2``) or ``function(s, c)`` of all a frame coordinates s (``(..., a)``)
    and the discrete latent c of the data law (a cluster index), e.g. an XOR of the
    cluster. ``xi ~ N(0, 1)`` is drawn per sample from the run's own key.
    """

    d: int
    link: Any = "h3"
    directions: int = 1
    weights: tuple[float, ...] | None = None
    noise: float = 0.0
    function: Callable | None = None
    data: DataLaw | None = None

    def __post_init__(self) -> None:
        if self.data is None:
            object.__setattr__(self, "data", Isotropic())
        elif not isinstance(self.data, DataLaw):
            raise _bad("data", self.data, "a data law (sgdlab.data: Isotropic, Spiked, Mixture, Sampler, ...)")
        object.__setattr__(self, "d", _positive_int("d", self.d))
        object.__setattr__(self, "directions", _positive_int("target.directions", self.directions))
        object.__setattr__(self, "noise", _finite("target.noise", self.noise, minimum=0.0))
        if self.function is None:
            object.__setattr__(self, "link", resolve_fn(self.link, field="target.link"))
            w = self.weights if self.weights is not None else (1.0,) * self.directions
            w = tuple(_finite("target.weights", float(v)) for v in w)
            if len(w) != self.directions:
                raise _bad("target.weights", list(w), f"a list of {self.directions} numbers (one per direction)")
            object.__setattr__(self, "weights", w)
        elif not callable(self.function):
            raise _bad("target.function", self.function, "a JAX function of the (..., r) teacher fields")
        self.data.validate(self.directions)

    @property
    def r(self) -> int:
        return self.directions

    @property
    def frame(self) -> int:
        """a: the number of frame directions (teacher directions first)."""
        return self.data.frame(self.directions)

    @property
    def uses_latent(self) -> bool:
        """True when the target is ``function(s, c)`` of the frame coordinates and the latent."""
        return self.function is not None and _takes_latent(self.function)

    def target(self, s: jax.Array, c: jax.Array) -> jax.Array:
        """Noise-free label from frame coordinates ``s`` (..., a) and the latent ``c`` (...)."""
        if self.uses_latent:
            return self.function(s, c)
        return self.label(s[..., : self.directions])

    @property
    def is_committee(self) -> bool:
        return self.function is None

    def label(self, nu: jax.Array) -> jax.Array:
        """Noise-free label g(nu) for fields ``nu`` of shape ``(..., r)``."""
        if self.function is not None:
            return self.function(nu)
        w = jnp.asarray(self.weights, dtype=nu.dtype)
        return jnp.sum(w * self.link(nu), axis=-1)


# --------------------------------------------------------------------------------------
# Student: a two-layer network
# --------------------------------------------------------------------------------------

OUTPUT_SCALES = {"mean": lambda p: 1.0 / p, "sqrt": lambda p: 1.0 / math.sqrt(p), "sum": lambda p: 1.0}


@dataclass(frozen=True)
class Student:
    """f(x) = s * sum_j a_j sigma(w_j . x) with p = ``width`` neurons.

    ``output_scale`` fixes s explicitly: ``mean`` (1/p), ``sqrt`` (1/sqrt p) or ``sum`` (1).
    ``second_layer`` is ``fixed`` (a stays at ``a0``) or ``trained`` (online SGD on a too).
    ``a0`` is one number for all neurons or one per neuron.
    """

    width: int = 1
    activation: Any = "h3"
    second_layer: str = "fixed"
    output_scale: str = "mean"
    a0: float | tuple[float, ...] = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "width", _positive_int("student.width", self.width))
        object.__setattr__(self, "activation", resolve_fn(self.activation, field="student.activation"))
        if self.second_layer not in ("fixed", "trained"):
            raise _bad("student.second_layer", self.second_layer, "'fixed' or 'trained'")
        if self.output_scale not in OUTPUT_SCALES:
            raise _bad("student.output_scale", self.output_scale, "'mean', 'sqrt' or 'sum'")
        a0 = self.a0
        if isinstance(a0, int | float) and not isinstance(a0, bool):
            a0 = (float(a0),) * self.width
        a0 = tuple(_finite("student.a0", float(v)) for v in a0)
        if len(a0) != self.width:
            raise _bad("student.a0", list(a0), f"one number or a list of {self.width} numbers")
        object.__setattr__(self, "a0", a0)

    @property
    def p(self) -> int:
        return self.width

    @property
    def scale(self) -> float:
        return OUTPUT_SCALES[self.output_scale](self.width)

    @property
    def trained(self) -> bool:
        return self.second_layer == "trained"

    def output(self, lam: jax.Array, a: jax.Array) -> jax.Array:
        """f = s * sum_j a_j sigma(lambda_j) for fields ``lam`` of shape ``(..., p)``."""
        return self.scale * jnp.sum(a * self.activation(lam), axis=-1)


# --------------------------------------------------------------------------------------
# Training: loss, step size, batch, geometry, initial condition, recording
# --------------------------------------------------------------------------------------


def _square(f: jax.Array, y: jax.Array) -> jax.Array:
    return 0.5 * (f - y) ** 2


def _correlation(f: jax.Array, y: jax.Array) -> jax.Array:
    return -y * f


LOSSES: dict[str, Callable] = {"square": _square, "correlation": _correlation}
INITS = ("random", "random_positive")  # random starts; a number m0 is a warm start
NORMS = ("euclidean", "covariance")  # the norm a renormalised row keeps equal to 1


@dataclass(frozen=True)
class Training:
    """One-pass minibatch SGD: ``W <- W - lr * grad`` of the batch-mean loss.

    - ``loss``: ``square`` (1/2 (f - y)^2), ``correlation`` (-y f) or a JAX function
      ``loss(f, y)``.
    - ``spherical``: project each row's gradient on the tangent space of its sphere, step,
      renormalise the row. ``projected``: step, then renormalise (no tangent projection).
    - ``norm``: the sphere of the renormalised geometries. ``"euclidean"`` (default): |w| = 1.
      ``"covariance"``: |w|_Sigma = 1, |w|_Sigma^2 = w^T Sigma w with Sigma the covariance of the
      inputs (the ellipsoid on which the student's field w.x has unit variance). Spherical SGD
      then uses the Sigma-orthogonal tangent projection g - (g^T Sigma w / w^T Sigma w) w (the
      Riemannian gradient of the ellipsoid for the metric <a, b>_Sigma = a^T Sigma b, applied
      to the Euclidean gradient g: the step W <- (I - lr D) W + lr C^T X keeps its form, with
      D_j = sum_i C_ij (x_i^T Sigma w_j) / |w_j|_Sigma^2), and every row is renormalised by its
      Sigma-norm. Inputs must have Sigma = I + a fixed part inside the frame (isotropic or
      spiked data with constant strengths); every start (:mod:`sgdlab.init`) is the Euclidean
      one moved radially onto the ellipsoid (w / |w|_Sigma: the same direction, so the same
      cosine m / sqrt(Q_jj) with the teacher, on which escape is measured). docs/chain.md.
    - ``lr_second``: step size of the second layer when it is trained (default ``lr``).
    - ``init``: ``"random"`` (rows uniform on the unit sphere), ``"random_positive"`` (the
      same, conditioned on a non-negative overlap M_j0 of every row with teacher direction 0:
      a row with M_j0 < 0 is replaced by its opposite; the law of |m0|, for the odd links
      whose escape is studied from a positive start) or a number m0: every row has
      overlap m0 with every teacher direction and a uniformly random unit part orthogonal
      to the teacher span (norm 1 in all); ``"pca"``: the top eigenvector of the sample
      covariance of ``pca_samples`` fresh inputs, sign ``pca_sign`` (``"random"``,
      ``"labels"`` with ``pca_labels`` labelled samples, ``"positive"``; :class:`sgdlab.init.PCA`);
      or any :class:`sgdlab.init.Init`.
    - ``frozen``: first-layer rows that are not updated (their gradient is zero);
      ``frozen_second``: second-layer weights that are not updated.
    - ``lr_schedule``: ``None`` or a JAX function of the step count t multiplying ``lr`` (and
      ``lr_second``) at the step from t to t + 1.
    - ``record_every``: steps between recorded order parameters (step 0 and the last step
      are always recorded).
    - ``escape_threshold``: escape (weak recovery) is the first step at which some row has
      |M_j0| / sqrt(Q_jj) >= threshold; it is checked after every step.
    - ``stop_fraction``: ``None`` (run all ``steps``) or a number in (0, 1]: the stochastic
      engines end the run at the first record at which at least this fraction of the seeds
      has escaped or diverged; the others are censored there (``escape_step`` = -1, the
      last recorded step is the horizon). With ``stop_fraction > 1/2`` the Kaplan–Meier
      median is the same as with the full horizon, at a fraction of the cost.
    - ``smoothing``: ``None`` (off) or the radius lam > 0 of the smoothed loss of Damian,
      Nichani, Ge, Lee (2023) (``sgdlab.smoothing``; ``smoothing_lam(d)`` = d^{1/4}): SGD
      runs on E_z loss((w + lam z) / |w + lam z|), z uniform on the unit sphere orthogonal
      to the row. It needs the sample's |x|^2 (every engine provides it) and renormalised
      rows (``spherical`` or ``projected``). ``loss`` stays the *base* loss: the population
      risk reports the unsmoothed base loss. ``smoothing_nodes``: Gauss–Jacobi nodes in the
      smoothing variable (default: exact for polynomial activations with square/correlation
      loss, else 40).
    """

    loss: Any = "square"
    lr: float = 0.01
    batch: int = 1
    steps: int = 1000
    spherical: bool = False
    projected: bool = False
    init: str | float = "random"
    record_every: int = 100
    escape_threshold: float = 0.5
    lr_second: float | None = None
    smoothing: float | None = None
    smoothing_nodes: int | None = None
    stop_fraction: float | None = None
    frozen: tuple[int, ...] = ()
    frozen_second: tuple[int, ...] = ()
    lr_schedule: Callable | None = None
    pca_samples: int | None = None
    pca_sign: str = "random"
    pca_labels: int = 0
    norm: str = "euclidean"

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise _bad("train.norm", self.norm, "'euclidean' or 'covariance'")
        for name in ("frozen", "frozen_second"):
            v = getattr(self, name)
            items = list(v) if isinstance(v, list | tuple) else None
            if items is None or any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in items) or len(
                set(items)
            ) != len(items):
                raise _bad(f"train.{name}", v, "a list of distinct non-negative integer row indices")
            object.__setattr__(self, name, tuple(sorted(items)))
        if self.lr_schedule is not None and not callable(self.lr_schedule):
            raise _bad("train.lr_schedule", self.lr_schedule, "a JAX function of the step count, or none")
        if self.stop_fraction is not None:
            f = _finite("train.stop_fraction", self.stop_fraction)
            if not 0 < f <= 1:
                raise _bad("train.stop_fraction", self.stop_fraction, "a number in (0, 1] or none")
            object.__setattr__(self, "stop_fraction", f)
        if self.smoothing is not None:
            object.__setattr__(self, "smoothing", _finite("train.smoothing", self.smoothing, minimum=0.0, strict=True))
        if self.smoothing_nodes is not None:
            object.__setattr__(self, "smoothing_nodes", _positive_int("train.smoothing_nodes", self.smoothing_nodes))
        if isinstance(self.loss, str):
            if self.loss not in LOSSES:
                raise _bad("train.loss", self.loss, "'square', 'correlation' or a JAX function loss(f, y)")
        elif not callable(self.loss):
            raise _bad("train.loss", self.loss, "'square', 'correlation' or a JAX function loss(f, y)")
        object.__setattr__(self, "lr", _finite("train.lr", self.lr, minimum=0.0, strict=True))
        if self.lr_second is not None:
            object.__setattr__(self, "lr_second", _finite("train.lr_second", self.lr_second, minimum=0.0))
        object.__setattr__(self, "batch", _positive_int("train.batch", self.batch))
        object.__setattr__(self, "steps", _positive_int("train.steps", self.steps))
        object.__setattr__(self, "record_every", _positive_int("train.record_every", self.record_every))
        for name in ("spherical", "projected"):
            if not isinstance(getattr(self, name), bool):
                raise _bad(f"train.{name}", getattr(self, name), "true or false")
        if self.spherical and self.projected:
            raise _bad("train.projected", True, "false when train.spherical is true (pick one geometry)")
        if self.norm != "euclidean" and not (self.spherical or self.projected):
            raise _bad("train.norm", self.norm,
                       "'euclidean' unless train.spherical or train.projected is true (the norm a renormalised "
                       "row keeps)")
        init = self.init
        if isinstance(init, Init):
            pass
        elif init == "pca":
            if self.pca_samples is None:
                raise _bad("train.pca_samples", None, "an integer >= 1 (unlabelled samples) with train.init = 'pca'")
            PCA(self.pca_samples, self.pca_sign, self.pca_labels)  # checks the three fields
        elif isinstance(init, str):
            if init not in INITS:
                raise _bad("train.init", init, "'random', 'random_positive', 'pca' or a number m0 in [-1, 1]")
        else:
            init = _finite("train.init", init)
            if abs(init) > 1:
                raise _bad("train.init", init, "'random', 'random_positive' or a number m0 in [-1, 1]")
            object.__setattr__(self, "init", init)
        t = _finite("train.escape_threshold", self.escape_threshold, minimum=0.0, strict=True)
        object.__setattr__(self, "escape_threshold", t)

    @property
    def loss_fn(self) -> Callable:
        return LOSSES[self.loss] if isinstance(self.loss, str) else self.loss

    @property
    def loss_name(self) -> str:
        return self.loss if isinstance(self.loss, str) else getattr(self.loss, "__name__", "custom")

    @property
    def smoothed(self) -> bool:
        return self.smoothing is not None

    @property
    def renormalise(self) -> bool:
        return self.spherical or self.projected

    @property
    def eta_a(self) -> float:
        return self.lr if self.lr_second is None else self.lr_second


D_CANONICAL = 1 << 40  # d of a canonical structure (the chain takes the real d traced)


@dataclass(frozen=True)
class Record:
    """What is recorded, apart from how it is trained (as diffrax keeps ``SaveAt`` apart
    from the solver): order parameters every ``every`` steps (step 0 and the last step
    always), escape as the first step at which some row has |M_j0| / sqrt(Q_jj) >=
    ``escape_threshold``, and ``stop_fraction`` (end the run once that fraction of seeds
    escaped or diverged; see :class:`Training`). ``Record.of(training)`` takes the values
    of a :class:`Training`."""

    every: int = 100
    escape_threshold: float = 0.5
    stop_fraction: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "every", _positive_int("record.every", self.every))
        t = _finite("record.escape_threshold", self.escape_threshold, minimum=0.0, strict=True)
        object.__setattr__(self, "escape_threshold", t)
        if self.stop_fraction is not None:
            f = _finite("record.stop_fraction", self.stop_fraction)
            if not 0 < f <= 1:
                raise _bad("record.stop_fraction", self.stop_fraction, "a number in (0, 1] or none")
            object.__setattr__(self, "stop_fraction", f)

    @classmethod
    def of(cls, training: Training) -> Record:
        return cls(training.record_every, training.escape_threshold, training.stop_fraction)


# --------------------------------------------------------------------------------------
# The one place where the model meets the data: gradients as functions of the fields
# --------------------------------------------------------------------------------------


class BaseModel:
    """What every engine needs of a model (a problem, a student and a training rule).

    Sizes: ``p`` student rows, ``r`` teacher directions, ``a`` frame directions of the data
    law (``data``), ``rows`` d-dimensional rows per sample. ``init`` is the initial state
    (:mod:`sgdlab.init`). ``batch_grads(Z, a, xi, c, x2)`` maps the fields of a batch,
    Z = (student fields, frame coordinates) of shape (n * rows, p + a), the second layer a,
    label noise xi (n * rows,), latent c (n,) and, when ``needs_norm``, the squared norms
    x2 (n * rows,), to C = -d(batch-mean loss)/d(student fields) (n * rows, p) and the
    gradient of the second layer. ``ode_field`` is the expected increment of the order
    parameters per step (the ODE's vector field); ``population_risk`` the loss at (M, Q, a).
    """

    problem: Any
    student: Any
    training: Training

    @property
    def p(self) -> int:
        return self.student.width

    @property
    def r(self) -> int:
        return self.problem.r

    @property
    def data(self) -> DataLaw:
        return self.problem.data

    @property
    def a(self) -> int:
        return self.data.frame(self.r)

    @property
    def rows(self) -> int:
        return self.data.rows

    @property
    def warm_directions(self) -> int:
        """Frame directions a warm start m0 has overlap with (the teacher directions)."""
        return self.r

    @property
    def init(self) -> Init:
        tr = self.training
        if isinstance(tr.init, str) and tr.init == "pca":
            start = PCA(tr.pca_samples, tr.pca_sign, tr.pca_labels)
        else:
            start = as_init(tr.init)
        if self.norm_metric() is not None and not isinstance(start, OnEllipsoid):
            return OnEllipsoid(start)
        return start

    def norm_metric(self) -> np.ndarray | None:
        """B (a, a) with Sigma = I + U^T B U (U the frame): the covariance norm of a row is
        |w|_Sigma^2 = Q_jj + M_j B M_j^T and x^T Sigma w = w.x + s^T B M_j^T (s the frame
        coordinates of x). ``None`` for the Euclidean norm, and for isotropic inputs (B = 0:
        the two norms agree). A one-line error for laws whose covariance is not of this form
        with a fixed B (mixtures, sequences, non-Gaussian samplers, scheduled spike strengths)."""
        if self.training.norm == "euclidean":
            return None
        from .data import Isotropic, Spiked

        law = self.data
        if isinstance(law, Isotropic):
            return None
        if isinstance(law, Spiked) and not any(callable(b) for b in law.strength) and self.rows == 1:
            V = law.spike_vectors(self.r)  # (k, a): Sigma - I = sum_k strength_k v_k v_k^T in the frame
            return (V.T * np.asarray(law.strength, np.float64)) @ V
        raise _bad("train.norm", self.training.norm,
                   f"'euclidean' on data {law.name!r} (the covariance norm needs Sigma = I + a fixed part inside "
                   "the frame: isotropic or spiked data with constant strengths)")

    @property
    def needs_norm(self) -> bool:
        return False

    def update_masks(self) -> tuple[Any, Any]:
        """(rows (p,), second layer (p,)) multipliers of the gradients: 0 for frozen entries."""
        p = self.p
        for name in ("frozen", "frozen_second"):
            bad = [i for i in getattr(self.training, name) if i >= p]
            if bad:
                raise _bad(f"train.{name}", list(getattr(self.training, name)), f"row indices below width = {p}")
        m1 = None if not self.training.frozen else jnp.ones(p).at[jnp.asarray(self.training.frozen)].set(0.0)
        m2 = None if not self.training.frozen_second else jnp.ones(p).at[
            jnp.asarray(self.training.frozen_second)].set(0.0)
        return m1, m2

    def _masked(self, C, ga):
        m1, m2 = self.update_masks()
        if m1 is not None:
            C = C * m1.astype(C.dtype)
        if m2 is not None:
            ga = ga * m2.astype(ga.dtype)
        return C, ga

    def check(self) -> None:
        """Cross-field checks that no single section can make."""
        self.update_masks()
        self.norm_metric()  # a one-line error where the covariance norm is not expressible
        self.init.check(self)

    def structure(self, d: bool = False) -> BaseModel:
        """This model with the numbers that compiled programs take traced set to canonical
        values (step sizes, horizon, recording, warm-start m0, label noise, and d when ``d``):
        runs that differ only in them share one build and one compilation."""
        import dataclasses

        tr = dataclasses.replace(self.training, lr=1.0, lr_second=None, steps=1, record_every=1,
                                 escape_threshold=0.5, stop_fraction=None, init=self.init.structure())
        changes: dict[str, Any] = {}
        if self.problem.noise > 0:
            changes["noise"] = 1.0  # the programs scale the noise draws by the traced ``noise``
        if d and not self.needs_norm:  # the smoothed loss's quadrature rule depends on d
            changes["d"] = D_CANONICAL
        prob = dataclasses.replace(self.problem, **changes) if changes else self.problem
        return dataclasses.replace(self, problem=prob, training=tr)

    def traced_numbers(self, noise: float | None = None) -> dict[str, float]:
        """The traced numbers for a program built from :meth:`structure` (``noise``: the factor
        on the noise draws; 1.0 for a program built from this model itself)."""
        tr, prob = self.training, self.problem
        if noise is None:
            noise = prob.noise if prob.noise > 0 else 1.0
        return {"lr": tr.lr, "lr_a": tr.eta_a, "noise": noise, "d": float(prob.d)}

    def population_risk(self, M, Q, a):  # pragma: no cover - abstract
        raise NotImplementedError

    def ode_field(self, second_order: bool, nodes: int | None = None):  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True)
class Model(BaseModel):
    """A problem, a student and a training rule bound together.

    ``sample_loss(z, a, xi, c)`` is the loss of one sample with fields ``z = (lambda, s)``
    (student fields and frame coordinates, shape ``(p + a,)``), second layer ``a``,
    label-noise draw ``xi`` and latent ``c``; ``sample_grads`` returns
    ``c = -d loss / d lambda`` (the negative gradient with respect to the student fields,
    shape ``(p,)``) and ``d loss / d a``. The SGD step on W is ``W <- W + lr * C^T X`` with
    ``C`` the batch mean of ``c``.

    A loss that also needs the sample's squared norm (``needs_norm``: the smoothed loss)
    takes it as ``x2`` (a scalar per sample; ``(n,)`` in ``batch_grads``); it is an error
    to leave it out then. Without ``needs_norm``, ``x2`` is ignored and the code path is
    the one of the base loss. ``base_loss`` is always the unsmoothed training loss.
    """

    problem: Problem
    student: Student
    training: Training

    @property
    def needs_norm(self) -> bool:
        """True when the per-sample loss needs |x|^2 (engines must pass ``x2``)."""
        return self.training.smoothed

    def check(self) -> None:
        """Cross-field checks that no single section can make."""
        p, a, d = self.p, self.a, self.problem.d
        if not self.data.gaussian:
            # full engine only: the frame may be every coordinate (M is then the whole W); the
            # chain's Wishart constraints below do not apply (the chain refuses these laws)
            if a > d:
                raise _bad("data.frame", a, f"at most d = {d} frame coordinates")
        elif d <= p + a:
            raise _bad("d", d, f"an integer > width + frame directions = {p + a}")
        else:
            # the chain draws Wishart(d - p - a) matrices of size min(batch, width), or batch x batch
            # when the loss needs |x|^2 (Bartlett needs at least that many degrees of freedom)
            need = self.training.batch if self.training.smoothed else min(self.training.batch, p)
            if d - p - a < need:
                what = "batch" if self.training.smoothed else "min(batch, width)"
                raise _bad("d", d, f"an integer >= width + frame directions + {what} = {p + a + need}")
        if self.training.smoothed and not self.training.renormalise:
            raise _bad("train.smoothing", self.training.smoothing,
                       "null unless the rows stay on the unit sphere (spherical or projected)")
        if self.training.smoothed and self.norm_metric() is not None:
            raise _bad("train.smoothing", self.training.smoothing,
                       "null with train.norm = 'covariance' (the smoothed loss averages over the Euclidean sphere)")
        super().check()

    def base_loss(self, z: jax.Array, a: jax.Array, xi: jax.Array, c: jax.Array = 0) -> jax.Array:
        """The unsmoothed training loss of one sample."""
        lam, s = z[: self.p], z[self.p :]
        y = self.problem.target(s, c) + self.problem.noise * xi
        return self.training.loss_fn(self.student.output(lam, a), y)

    @property
    def smoothing_rule(self) -> tuple:
        """(points (N, p), weights (N,)) of the smoothing variables s (float64 numpy)."""
        deg = _sm.loss_degree_in_s(self.student.activation.degree, self.training.loss)
        n = _sm.node_count(deg, self.training.smoothing_nodes)
        return _sm.tensor_sphere_rule(self.problem.d, n, self.p)

    def sample_loss(
        self, z: jax.Array, a: jax.Array, xi: jax.Array, c: jax.Array = 0, x2: jax.Array | None = None
    ) -> jax.Array:
        if not self.needs_norm:
            return self.base_loss(z, a, xi, c)
        if x2 is None:
            raise ValueError("this loss (smoothed) needs the sample's squared norm x2 = |x|^2")
        p, lam_s = self.p, self.training.smoothing
        s_np, w_np = self.smoothing_rule
        s, w = jnp.asarray(s_np, z.dtype), jnp.asarray(w_np, z.dtype)
        u = _sm.smoothed_fields(z[:p][None, :], x2, lam_s, s)  # (N, p)
        zs = jnp.concatenate([u, jnp.broadcast_to(z[p:], (u.shape[0], z.shape[0] - p))], axis=1)
        return jnp.sum(w * jax.vmap(lambda zz: self.base_loss(zz, a, xi, c))(zs))

    def sample_grads(
        self, z: jax.Array, a: jax.Array, xi: jax.Array, c: jax.Array = 0, x2: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array]:
        p = self.p

        def loss_of(lam, a_):
            return self.sample_loss(jnp.concatenate([lam, z[p:]]), a_, xi, c, x2)

        g_lam, g_a = jax.grad(loss_of, argnums=(0, 1))(z[:p], a)
        return self._masked(-g_lam, g_a)

    def batch_grads(
        self, Z: jax.Array, a: jax.Array, xi: jax.Array, c: jax.Array | None = None, x2: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array]:
        """Batch of fields ``Z`` (n, p + a) -> (C (n, p), grad_a (p,)) of the batch-mean loss.

        ``c`` (n,): the samples' latents (default 0); ``x2`` (n,): their squared norms,
        required when ``needs_norm``.
        """
        n = Z.shape[0]
        c = jnp.zeros((n,), jnp.int32) if c is None else c
        if self.needs_norm:
            if x2 is None:
                raise ValueError("this loss (smoothed) needs the samples' squared norms x2 = |x|^2")
            C, ga = jax.vmap(self.sample_grads, in_axes=(0, None, 0, 0, 0))(Z, a, xi, c, x2)
        else:
            C, ga = jax.vmap(self.sample_grads, in_axes=(0, None, 0, 0))(Z, a, xi, c)
        return C / n, jnp.mean(ga, axis=0)

    def population_risk(self, M, Q, a):
        from .risk import _population_risk

        return _population_risk(self, M, Q, a)

    def ode_field(self, second_order: bool, nodes: int | None = None, expectations: str = "auto"):
        from ._drift import drift

        return drift(self, second_order, nodes, expectations)
