r"""Weak-to-strong generalisation by feature elicitation: multi-task problems, a pre-trained
strong two-layer reward model, weak supervisors, and the fine-tuning pipelines W2S, SFT and the
ceiling (after Awano & Suzuki 2026, whose model section is not public: every choice below that
their abstract does not fix is a *reconstruction*, listed in :data:`RECONSTRUCTED`).

**Tasks** (:class:`Tasks`). Inputs x ~ N(0, I_d). Task k = 0..K-1 has an r-dimensional subspace
V_k and a target direction beta_k in V_k; its reward is r_k(x) = g(beta_k . x). The task to
fine-tune is kappa = 0. Everything lives in a frame of a = K r + ``spare`` orthonormal
directions e_0, e_1, ... (the chain's fixed directions; every quantity below is a function of
the frame coordinates, so the chain is exact and the ODE closes):

- V_0 = span(e_0, ..., e_{r-1}), beta_0 = e_0;
- for k >= 1, V_k = span(b_k, e_{kr+1}, ..., e_{kr+r-1}) with b_k = rho e_0 + sqrt(1 - rho^2) e_{kr}
  and beta_k = b_k: the correlation knob is rho = beta_k . beta_kappa (the subspaces overlap
  along beta_kappa only; rho = 0 gives orthogonal subspaces);
- ``spare`` directions outside every V_k (the room of a weak model's spurious feature).

**Strong model** (:class:`Strong`, :func:`pretrain`). f(x) = s sum_j a_j sigma(w_j . x) with
``per_task`` = m neurons per task (p = K m); neuron j of task k(j) is uniform on the unit sphere
of V_{k(j)} (off-target neurons optionally with a given overlap with beta_k), drawn per seed, with
no part outside the frame. A multi-head reward model: one head A^(k) per task over the shared
first layer W. The head of each task k != kappa is the ridge least-squares fit of r_k over that
task's neurons (exact population normal equations from the order parameters); these heads are
pre-trained and stay frozen. The head of task kappa, the second layer a that fine-tuning trains,
starts at ``head_start`` (default 0): beta_kappa is given neither to the features nor to the
head.

**Weak supervisors** (:class:`Direction`, :class:`SmallNet`, :class:`SelfLabels`). A label is a
function of the frame coordinates. ``Direction(q)``: g(beta_hat . x) with beta_hat = q beta_kappa +
sqrt(1 - q^2) u, u = e_1 inside V_kappa (``noise="inside"``) or a spare direction outside every V_k
(``noise="outside"``); ``Direction(1)`` is the ground truth. ``SmallNet``: a small network of
``width`` units uniform in V_kappa whose readout is the ridge fit to ``samples`` noisy labelled
samples (a random-features model trained on few samples). ``SelfLabels``: the strong model's own
pre-trained outputs (head ``head``).

**Pipelines** (:class:`FineTune`, :func:`finetune`): from one pre-trained state (a per-seed Gram
start, :class:`sgdlab.init.Gram`), online SGD with the half square loss of the head-kappa output
on labels y = label(x) + noise * xi: W2S (the weak model's labels), SFT (the ground truth
``Direction(1)``), and the ceiling (:class:`AllTasks`: the strong model trained on the ground truth
of all tasks, the multi-task loss sum_k (f_k - r_k)^2 / 2 over every head, which PGR compares
against). Which layers train, at which rates, and whether the off-target rows move are knobs. A
Direction label is by default a committee target g(nu_0) in a frame rotated so that beta_hat is its
first direction (a Givens rotation of (e_0, u), the identity for q = 1); the state is rotated back.
With ``path='function'`` it is the weak model's own label function g(beta_hat . s) of the frame
coordinates instead: at q = 1 a code path different from SFT's committee target that gives SFT bit
for bit (the W2S = SFT control).

**Metrics** (:func:`metrics`), per seed and record: alignment |cos(w_j, beta_kappa)| of the
kappa-neurons; energy sum_j |P_{V_k} w_j|^2 / m of each task's own neurons in its subspace and of
all neurons in V_k; second-layer (head-kappa) mass sum_{j in task k} a_j^2; per-task population
error err_k = E[(f_k - r_k)^2] / 2 with f_kappa the trained head and f_k the frozen heads, exact from
(Q, M) through Gaussian pair kernels (Saad-Solla closed forms for erf). PGR = (err_weak - err_W2S)
/ (err_weak - err_ceiling) (Burns et al. 2023).

First-order leakage (:func:`leakage`): even at rho = 0 an off-target neuron j with a head-kappa
weight a_j is pulled out of V_k by lr s a_j E[sigma'(lambda_j)] c_1 per unit step along beta_kappa,
c_1 = E[(f_kappa - y) x . beta_kappa] the He1 part of the residual; the reproduction measures it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import jax.numpy as jnp
import numpy as np

from ._errors import _bad
from ._functions import resolve_fn
from ._kernels import pair_expectation
from .init import Gram, _gram_arrays
from .model import Model

__all__ = [
    "RECONSTRUCTED",
    "AllTasks",
    "Direction",
    "FineTune",
    "PreTrained",
    "Run",
    "SelfLabels",
    "stable_off_weight",
    "SmallNet",
    "Strong",
    "Tasks",
    "error",
    "finetune",
    "leakage",
    "metrics",
    "pgr",
    "pretrain",
    "weak_error",
]

RECONSTRUCTED = [
    "tasks: V_k of dimension r; beta_kappa = e_0; for k != kappa V_k = span(rho e_0 + sqrt(1 - rho^2) e_kr, "
    "e_kr+1, ...): the correlation rho = beta_k . beta_kappa through subspaces overlapping along beta_kappa only",
    "rewards r_k(x) = g(beta_k . x) with one link g for every task (default erf(z / sqrt 2))",
    "a multi-head reward model: one shared first layer, one head per task; off-target heads are ridge "
    "least-squares fits of r_k over their own task's neurons and stay frozen; fine-tuning trains the first "
    "layer and the head of task kappa, which starts at zero",
    "pre-trained neurons uniform on the unit sphere of their task's subspace, exactly inside the frame "
    "(no part orthogonal to it), drawn per seed; none is placed on beta_kappa",
    "weak model: a noisy direction beta_hat = q beta_kappa + sqrt(1 - q^2) u with u in V_kappa ('inside') or "
    "outside every V_k ('outside'), or a random-features network on V_kappa fitted to few noisy samples",
    "SFT = fine-tuning on the ground truth of task kappa with the same rates and layers as W2S",
    "the ceiling of PGR: the strong model fine-tuned on the ground truth of all tasks (sum of every head's half "
    "square loss on its own reward, off-target rewards noise-free), off-target heads trained at the head rate from "
    "their fit (each on its own task's neurons), same rates and SGD seeds; PGR against SFT at the same time is "
    "also reported, as a reference",
    "loss: half square loss of the head-kappa output; online SGD, batch 1, lr = eta / d for both layers",
    "per-task error: half the mean square error of each task's head against its reward (population, exact)",
    "retention: energy of each off-target task's own neurons in its subspace, sum_j |P_Vk w_j|^2 / m",
]


def _unit(name: str, value: Any, lo: float = -1.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _bad(name, value, f"a number in [{lo:g}, 1]")
    if not lo <= value <= 1:
        raise _bad(name, value, f"a number in [{lo:g}, 1]")
    return float(value)


def _count(name: str, value: Any, lo: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < lo:
        raise _bad(name, value, f"an integer >= {lo}")
    return int(value)


# ----------------------------------------------------------------------------- tasks


@dataclass(frozen=True)
class Tasks:
    """K tasks with r-dimensional subspaces and target directions in one frame (module docstring)."""

    K: int = 2
    r: int = 2
    rho: float = 0.0
    spare: int = 1
    link: Any = "erf"

    def __post_init__(self) -> None:
        object.__setattr__(self, "K", _count("tasks.K", self.K, 2))
        object.__setattr__(self, "r", _count("tasks.r", self.r, 1))
        object.__setattr__(self, "rho", _unit("tasks.rho", self.rho))
        object.__setattr__(self, "spare", _count("tasks.spare", self.spare, 0))
        object.__setattr__(self, "link", resolve_fn(self.link, field="tasks.link"))

    @property
    def a(self) -> int:
        """Frame directions: K r + spare."""
        return self.K * self.r + self.spare

    def basis(self, k: int) -> np.ndarray:
        """Orthonormal rows (r, a) spanning V_k in frame coordinates."""
        B = np.zeros((self.r, self.a))
        if k == 0:
            B[:, : self.r] = np.eye(self.r)
            return B
        B[0, 0], B[0, k * self.r] = self.rho, math.sqrt(1.0 - self.rho**2)
        for i in range(1, self.r):
            B[i, k * self.r + i] = 1.0
        return B

    def beta(self, k: int) -> np.ndarray:
        """beta_k (a,): the first basis row of V_k."""
        return self.basis(k)[0]

    def spare_direction(self, i: int = 0) -> np.ndarray:
        if i >= self.spare:
            raise _bad("weak.noise", "outside", f"a frame with a spare direction (tasks.spare = {self.spare})")
        e = np.zeros(self.a)
        e[self.K * self.r + i] = 1.0
        return e


# ----------------------------------------------------------------------------- strong model


@dataclass(frozen=True)
class Strong:
    """The pre-trained strong model: ``per_task`` neurons per task, activation, output scale
    ('sum', 'sqrt', 'mean'), ridge of the head fits, ``overlap`` of the off-target neurons with
    their beta_k (``None``: uniform on the sphere of V_k) and the start of the head of task kappa."""

    per_task: int = 4
    activation: Any = "erf"
    output_scale: str = "sum"
    ridge: float = 1e-3
    overlap: float | None = None
    head_start: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "per_task", _count("strong.per_task", self.per_task))
        object.__setattr__(self, "activation", resolve_fn(self.activation, field="strong.activation"))
        if self.output_scale not in ("sum", "sqrt", "mean"):
            raise _bad("strong.output_scale", self.output_scale, "'sum', 'sqrt' or 'mean'")
        if not (isinstance(self.ridge, int | float) and math.isfinite(self.ridge) and self.ridge >= 0):
            raise _bad("strong.ridge", self.ridge, "a number >= 0")
        if self.overlap is not None:
            object.__setattr__(self, "overlap", _unit("strong.overlap", self.overlap))
        if not (isinstance(self.head_start, int | float) and math.isfinite(self.head_start)):
            raise _bad("strong.head_start", self.head_start, "a finite number")

    def width(self, tasks: Tasks) -> int:
        return tasks.K * self.per_task

    def scale(self, tasks: Tasks) -> float:
        p = self.width(tasks)
        return {"sum": 1.0, "sqrt": 1.0 / math.sqrt(p), "mean": 1.0 / p}[self.output_scale]

    def task_of(self, tasks: Tasks) -> np.ndarray:
        """k(j) for every neuron (p,)."""
        return np.repeat(np.arange(tasks.K), self.per_task)


@dataclass(frozen=True)
class PreTrained:
    """The pre-trained state per seed: M (S, p, a) = W in frame coordinates, Q (S, p, p),
    heads (S, K, p) (row 0: the head of task kappa at its start)."""

    tasks: Tasks
    strong: Strong
    M: np.ndarray
    Q: np.ndarray
    heads: np.ndarray

    @property
    def seeds(self) -> int:
        return self.M.shape[0]


def _pair(f, g, q1, q2, c):
    return np.asarray(pair_expectation(f, g, jnp.asarray(q1), jnp.asarray(q2), jnp.asarray(c)))


def _normal_terms(tasks: Tasks, strong: Strong, M, Q, b):
    """K_ij = E[sigma(lambda_i) sigma(lambda_j)] (..., p, p) and c_j = E[sigma(lambda_j) g(b . x)]
    (..., p) for student fields of covariance Q and overlaps M b with the unit direction b."""
    sig, g = strong.activation, tasks.link
    qd = np.einsum("...jj->...j", Q)
    Kss = _pair(sig, sig, qd[..., :, None], qd[..., None, :], Q)
    c = _pair(sig, g, qd, np.ones_like(qd), M @ b)
    return Kss, c


def pretrain(tasks: Tasks, strong: Strong, seeds: int, seed: int = 0) -> PreTrained:
    """Draw the pre-trained strong model for ``seeds`` seeds (module docstring)."""
    rng = np.random.default_rng([seed, 15])
    p, m, a, r = strong.width(tasks), strong.per_task, tasks.a, tasks.r
    M = np.zeros((seeds, p, a))
    for k in range(tasks.K):
        B = tasks.basis(k)
        u = rng.normal(size=(seeds, m, r))
        if strong.overlap is not None and k != 0 and r > 1:
            rest = u[..., 1:] / np.linalg.norm(u[..., 1:], axis=-1, keepdims=True)
            u = np.concatenate([np.full((seeds, m, 1), strong.overlap),
                                math.sqrt(1.0 - strong.overlap**2) * rest], axis=-1)
        u = u / np.linalg.norm(u, axis=-1, keepdims=True)
        M[:, k * m:(k + 1) * m] = u @ B
    Q = M @ np.swapaxes(M, -1, -2)
    s = strong.scale(tasks)
    heads = np.zeros((seeds, tasks.K, p))
    heads[:, 0] = strong.head_start
    for k in range(1, tasks.K):
        J = slice(k * m, (k + 1) * m)
        Kss, c = _normal_terms(tasks, strong, M[:, J], Q[:, J, J], tasks.beta(k))
        A = s**2 * Kss + strong.ridge * np.eye(m)
        heads[:, k, J] = np.linalg.solve(A, s * c[..., None])[..., 0]
    return PreTrained(tasks, strong, M, Q, heads)


# ----------------------------------------------------------------------------- labels


@dataclass(frozen=True)
class Direction:
    """Labels g(beta_hat . x), beta_hat = q beta_kappa + sqrt(1 - q^2) u (u = e_1 'inside' V_kappa, or
    the first spare direction 'outside' every V_k). ``Direction(1.0)``: the ground truth.
    ``path``: how the pipeline evaluates the labels: ``'rotation'`` (a committee g(nu_0) in a frame
    rotated so that beta_hat is its first direction; the state is rotated back) or ``'function'``
    (the weak model's own label function g(beta_hat . s) of the frame coordinates s, in the
    original frame). The two are the same process; at q = 1 the second is a different code path
    from SFT's committee target that must give SFT bit for bit."""

    q: float = 1.0
    noise: str = "inside"
    path: str = "rotation"

    def __post_init__(self) -> None:
        object.__setattr__(self, "q", _unit("weak.q", self.q, lo=0.0))
        if self.noise not in ("inside", "outside"):
            raise _bad("weak.noise", self.noise, "'inside' (a direction of V_kappa) or 'outside' (a spare one)")
        if self.path not in ("rotation", "function"):
            raise _bad("weak.path", self.path, "'rotation' (a committee in the rotated frame) or 'function' "
                       "(the weak model's own label function of the frame coordinates)")

    def function(self, tasks: Tasks):
        """The weak model's label function of the frame coordinates, nu -> g(nu . beta_hat): the
        weak model evaluated through its own code (no rotation of the frame). One function object
        per (weak model, tasks), so runs with it share one compilation."""
        return _memo(self, tasks, lambda: _direction_function(self.direction(tasks), tasks.link))

    def u(self, tasks: Tasks) -> np.ndarray:
        if self.noise == "inside":
            if tasks.r < 2:
                raise _bad("weak.noise", "inside", "'outside' when tasks.r = 1 (V_kappa has no room)")
            e = np.zeros(tasks.a)
            e[1] = 1.0
            return e
        return tasks.spare_direction(0)

    def direction(self, tasks: Tasks) -> np.ndarray:
        return self.q * tasks.beta(0) + math.sqrt(1.0 - self.q**2) * self.u(tasks)

    def rotation(self, tasks: Tasks) -> np.ndarray:
        """R (a, a) orthogonal with R beta_hat = e_0: a Givens rotation of (e_0, u); exactly I at q = 1."""
        R = np.eye(tasks.a)
        if self.q == 1.0:
            return R
        i = int(np.argmax(self.u(tasks)))
        s = math.sqrt(1.0 - self.q**2)
        R[0, 0], R[0, i], R[i, 0], R[i, i] = self.q, s, -s, self.q
        return R


def _memo(label, tasks: Tasks, build):
    """``build()`` once per (label object, tasks): the label function is part of a compiled
    program's structure, so a fresh function object per call would recompile every run."""
    cache = label.__dict__.setdefault("_functions", {})
    if tasks not in cache:
        cache[tasks] = build()
    return cache[tasks]


def _direction_function(b: np.ndarray, g):
    bj = jnp.asarray(b)
    return lambda nu: g(nu @ bj)


@dataclass(frozen=True, eq=False)
class SmallNet:
    """A weak network: ``width`` units uniform on the unit sphere of V_kappa (seeded by ``seed``),
    readout the ridge least-squares fit to ``samples`` labelled samples y = r_kappa(x) + ``noise`` xi."""

    width: int = 3
    samples: int = 32
    noise: float = 0.5
    ridge: float = 1e-3
    seed: int = 0
    activation: Any = "erf"

    def __post_init__(self) -> None:
        object.__setattr__(self, "width", _count("weak.width", self.width))
        object.__setattr__(self, "samples", _count("weak.samples", self.samples))
        object.__setattr__(self, "activation", resolve_fn(self.activation, field="weak.activation"))

    def fit(self, tasks: Tasks) -> tuple[np.ndarray, np.ndarray]:
        """(U (width, a) unit rows in V_kappa, readout c (width,))."""
        rng = np.random.default_rng([self.seed, 1515])
        u = rng.normal(size=(self.width, tasks.r))
        U = (u / np.linalg.norm(u, axis=1, keepdims=True)) @ tasks.basis(0)
        x = rng.normal(size=(self.samples, tasks.r))  # coordinates in V_kappa (beta_kappa = first)
        F = np.asarray(self.activation(jnp.asarray(x @ u.T / np.linalg.norm(u, axis=1))))
        y = np.asarray(tasks.link(jnp.asarray(x[:, 0]))) + self.noise * rng.normal(size=self.samples)
        c = np.linalg.solve(F.T @ F + self.ridge * self.samples * np.eye(self.width), F.T @ y)
        return U, c

    def function(self, tasks: Tasks):
        def build():
            U, c = self.fit(tasks)
            Uj, cj, act = jnp.asarray(U), jnp.asarray(c), self.activation
            return lambda nu: jnp.sum(cj * act(nu @ Uj.T), axis=-1)

        return _memo(self, tasks, build)


@dataclass(frozen=True, eq=False)
class SelfLabels:
    """The strong model's own pre-trained output s sum_j A_j sigma(w_j . x) of seed ``seed`` (head
    ``A`` = its head of task ``head``): a function of the frame coordinates (rows in the frame)."""

    pre: PreTrained
    head: int = 0
    seed: int = 0

    def function(self, tasks: Tasks):
        def build():
            st = self.pre.strong
            W = jnp.asarray(self.pre.M[self.seed])
            A = jnp.asarray(self.pre.heads[self.seed, self.head]) * st.scale(tasks)
            act = st.activation
            return lambda nu: jnp.sum(A * act(nu @ W.T), axis=-1)

        return _memo(self, tasks, build)


@dataclass(frozen=True)
class AllTasks:
    """The ceiling's labels: the ground truth of *every* task. The strong model is fine-tuned on
    the multi-task loss sum_k (f_k(x) - r_k(x))^2 / 2, each head f_k on its own reward, with the
    shared first layer getting the gradient of every head: head kappa as in SFT (label noise
    ``FineTune.noise``), the off-target heads on their noise-free rewards. ``off_heads``:
    ``'trained'`` (each off-target head, supported on its own task's neurons, trains at the rate
    of the second layer from its pre-trained fit) or ``'frozen'`` (the heads stay at their fit;
    only their gradient on the first layer acts). ``off_weight``: the weight w of the off-target
    losses, sum = loss_kappa + w sum_{k != kappa} loss_k (1: the plain multi-task loss). With batch 1
    and lr = eta / d an off-target neuron j is stable only while eta w A_j^2 E[sigma'(lambda_j)^2] is
    below about 2 (one step multiplies its error by 1 - that); :func:`stable_off_weight` gives the
    largest w with margin 2 for a pre-trained state."""

    off_heads: str = "trained"
    off_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.off_heads not in ("trained", "frozen"):
            raise _bad("ceiling.off_heads", self.off_heads, "'trained' or 'frozen'")
        w = self.off_weight
        if isinstance(w, bool) or not isinstance(w, int | float) or not (math.isfinite(w) and 0 < w <= 1):
            raise _bad("ceiling.off_weight", w, "a number in (0, 1]")
        object.__setattr__(self, "off_weight", float(w))


def stable_off_weight(pre: PreTrained, eta: float) -> float:
    """min(1, 1 / (eta max_j (s A_j)^2 E[sigma'(lambda_j)^2])): the weight of the off-target losses at
    which every pre-trained off-target neuron (all seeds) sits at half the batch-1 SGD stability
    bound eta w (s A_j)^2 E[sigma'^2] = 2 (|x|^2 = d, Q_jj at its pre-trained value)."""
    from ._functions import gauss_hermite

    tasks, strong = pre.tasks, pre.strong
    m, s = strong.per_task, strong.scale(tasks)
    qd = np.einsum("...jj->...j", pre.Q)[:, m:]
    x, w = gauss_hermite(60)
    u = np.sqrt(qd)[..., None] * x
    h = 1e-6
    act = strong.activation
    d1 = (np.asarray(act(jnp.asarray(u + h))) - np.asarray(act(jnp.asarray(u - h)))) / (2 * h)
    e2 = np.sum(w * d1**2, -1)
    A = np.max(np.abs(pre.heads[:, 1:, m:]), axis=1)
    return float(f"{min(1.0, 1.0 / (eta * np.max((s * A) ** 2 * e2))):.4g}")  # 4 digits: one value per state law


class _HeadsGram(Gram):
    """A given Gram start whose second layer is every head and the off-target target directions
    flattened, (S, K p + (K - 1) a)."""

    def __init__(self, Q0, M0, a0, size: int):
        super().__init__(Q0, M0, a0)
        object.__setattr__(self, "size", size)

    def _arrays(self, model):
        Q, M, _ = _gram_arrays(self.Q0, self.M0, None, model.p, model.a, "train.init")
        A = np.asarray(self.a0, dtype=np.float64)
        if A.shape[-1:] != (self.size,):
            raise _bad("train.init", f"a of shape {A.shape}", f"a of shape ({self.size},)")
        return Q, M, A


@dataclass(frozen=True)
class _AllTasksModel(Model):
    """The engines' model of the all-tasks ceiling: the per-seed second layer holds every head and
    the off-target target directions, a = (head kappa, heads k != kappa, beta_k for k != kappa)
    flattened (K p + (K - 1) a,); the loss of one sample is the sum of every head's loss on its own
    task's label (head kappa: the problem's target with its noise; head k: the noise-free r_k =
    g(beta_k . s), weighted ``off_weight``). The beta_k never train (``head_mask`` 0); carried as
    per-seed data rather than as constants, they let one compilation serve every rho."""

    tasks: int = 2  # K
    off_link: Any = None
    head_mask: tuple = ()  # (K p + (K - 1) a,): 1 where a head weight trains
    off_weight: float = 1.0  # weight of the off-target losses

    def base_loss(self, z, a, xi, c=0):
        p, K, na = self.p, self.tasks, self.a
        lam, s = z[:p], z[p:]
        A = a[: K * p].reshape(K, p)
        B = a[K * p:].reshape(K - 1, na)
        y = self.problem.target(s, c) + self.problem.noise * xi
        loss = self.training.loss_fn(self.student.output(lam, A[0]), y)
        for k in range(1, K):
            yk = self.off_link(s @ B[k - 1])
            loss = loss + self.off_weight * self.training.loss_fn(self.student.output(lam, A[k]), yk)
        return loss

    def _masked(self, C, ga):
        m1, _ = self.update_masks()
        if m1 is not None:
            C = C * m1.astype(C.dtype)
        return C, ga * jnp.asarray(self.head_mask, ga.dtype)

    def population_risk(self, M, Q, a):
        raise _bad("engine", "the population risk", "w2s.metrics for the all-tasks ceiling")

    def ode_field(self, second_order, nodes=None, expectations="auto"):
        raise _bad("engine", "ode", "'chain' or 'full' for the all-tasks ceiling (its ODE is not built)")


# ----------------------------------------------------------------------------- errors


def error(tasks: Tasks, strong: Strong, M, Q, head, b, *, scale: float | None = None) -> np.ndarray:
    """err = E[(s head . sigma(lambda) - g(b . x))^2] / 2 over leading axes, exact from (M, Q)."""
    g = tasks.link
    s = strong.scale(tasks) if scale is None else scale
    Kss, c = _normal_terms(tasks, strong, np.asarray(M), np.asarray(Q), np.asarray(b))
    head = np.asarray(head)
    ff = s**2 * np.einsum("...i,...ij,...j->...", head, Kss, head)
    fy = s * np.einsum("...j,...j->...", head, c)
    yy = float(_pair(g, g, 1.0, 1.0, 1.0))
    return 0.5 * (ff - 2.0 * fy + yy)


def weak_error(tasks: Tasks, weak) -> float:
    """The weak model's error on task kappa, E[(f_weak - r_kappa)^2] / 2 (exact)."""
    g = tasks.link
    if isinstance(weak, Direction):
        return float(0.5 * (2.0 * _pair(g, g, 1.0, 1.0, 1.0) - 2.0 * _pair(g, g, 1.0, 1.0, weak.q)))
    if isinstance(weak, SmallNet):
        U, c = weak.fit(tasks)
        st = Strong(per_task=weak.width, activation=weak.activation)
        return float(error(tasks, st, U, U @ U.T, c, tasks.beta(0), scale=1.0))
    raise _bad("weak", type(weak).__name__, "Direction or SmallNet")


# ----------------------------------------------------------------------------- pipelines


@dataclass(frozen=True)
class FineTune:
    """Fine-tuning: rates eta (first layer) and eta_second (head kappa) with lr = eta / d, horizon
    ``t`` in units of d samples, ``records`` records, label ``noise``, batch, and ``freeze``:
    ``'none'``, ``'offtarget'`` (the rows of tasks k != kappa do not move) or ``'first'`` (no row
    moves: a linear probe)."""

    eta: float = 1.0
    eta_second: float = 1.0
    t: float = 4.0
    records: int = 40
    noise: float = 0.0
    batch: int = 1
    freeze: str = "none"

    def __post_init__(self) -> None:
        for name in ("eta", "t"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise _bad(f"finetune.{name}", v, "a positive number")
        if not (isinstance(self.eta_second, int | float) and math.isfinite(self.eta_second) and self.eta_second >= 0):
            raise _bad("finetune.eta_second", self.eta_second, "a number >= 0")
        if self.freeze not in ("none", "offtarget", "first"):
            raise _bad("finetune.freeze", self.freeze, "'none', 'offtarget' or 'first'")
        object.__setattr__(self, "records", _count("finetune.records", self.records))
        object.__setattr__(self, "batch", _count("finetune.batch", self.batch))

    def steps(self, d: int) -> int:
        return max(1, int(round(self.t * d / self.batch)))


def _objects(pre: PreTrained, label, ft: FineTune, d: int, *, start=None):
    """(model, R): the run of ``label`` from the pre-trained state (or ``start``: dict of per-seed
    Q, M, a (and, for the all-tasks ceiling, heads (S, K, p)) in the original frame) in the
    label's frame (rotation R)."""
    from .model import Problem, Student, Training

    tasks, strong = pre.tasks, pre.strong
    p, a = strong.width(tasks), tasks.a
    committee = Problem(d, link=tasks.link, directions=a, weights=(1.0,) + (0.0,) * (a - 1), noise=ft.noise)
    if isinstance(label, AllTasks):
        R, problem = np.eye(a), committee  # head kappa: SFT's ground-truth target
    elif isinstance(label, Direction) and label.path == "rotation":
        R, problem = label.rotation(tasks), committee
    elif isinstance(label, Direction | SmallNet | SelfLabels):
        R = np.eye(a)
        problem = Problem(d, function=label.function(tasks), directions=a, noise=ft.noise)
    else:
        raise _bad("label", type(label).__name__, "Direction, SmallNet, SelfLabels or AllTasks")
    Q0 = pre.Q if start is None else start["Q"]
    M0 = pre.M if start is None else start["M"]
    a0 = pre.heads[:, 0] if start is None else start["a"]
    M0 = M0 @ R.T if R is not None and not np.array_equal(R, np.eye(a)) else M0
    frozen = {"none": (), "offtarget": tuple(range(strong.per_task, p)), "first": tuple(range(p))}[ft.freeze]
    steps = ft.steps(d)
    student = Student(width=p, activation=strong.activation, second_layer="trained",
                      output_scale=strong.output_scale, a0=0.0)
    if isinstance(label, AllTasks):
        heads = pre.heads if start is None else start["heads"]
        heads = np.concatenate([np.asarray(a0)[:, None], heads[:, 1:]], axis=1)  # (S, K, p)
        betas = np.stack([tasks.beta(k) for k in range(1, tasks.K)]).ravel()
        A0 = np.concatenate([heads.reshape(heads.shape[0], -1), np.broadcast_to(betas, (heads.shape[0], betas.size))],
                            axis=1)
        init = _HeadsGram(Q0, M0, A0, A0.shape[1])
    else:
        init = Gram(Q0, M0, a0)
    training = Training(lr=ft.eta / d, lr_second=ft.eta_second / d, batch=ft.batch, steps=steps,
                        record_every=max(1, steps // ft.records), init=init, frozen=frozen,
                        escape_threshold=1e9)
    if isinstance(label, AllTasks):
        own = (strong.task_of(tasks)[None, :] == np.arange(1, tasks.K)[:, None]).astype(float)
        off = own if label.off_heads == "trained" else np.zeros_like(own)
        mask = np.concatenate([np.ones(p), off.ravel(), np.zeros((tasks.K - 1) * a)])
        model = _AllTasksModel(problem, student, training, tasks=tasks.K, off_link=tasks.link,
                               head_mask=tuple(mask.tolist()), off_weight=label.off_weight)
    else:
        model = Model(problem, student, training)
    return model, R


@dataclass
class Run:
    """A fine-tuning trajectory in the original frame: steps (R,), M (S, R, p, a), Q, a (S, R, p),
    diverged_step (S,), t = samples / d, wall time."""

    steps: np.ndarray
    M: np.ndarray
    Q: np.ndarray
    a: np.ndarray
    diverged_step: np.ndarray
    d: int
    batch: int
    wall_s: float = 0.0
    info: dict = field(default_factory=dict)
    heads: np.ndarray | None = None  # (S, R, K, p): every head, when the off-target heads train

    @property
    def t(self) -> np.ndarray:
        return self.steps * self.batch / self.d


def finetune(pre: PreTrained, label, ft: FineTune, d: int, *, engine: Any = "chain", seed: int = 0,
             seeds: int | None = None, start=None) -> Run:
    """Fine-tune the pre-trained strong model on ``label`` (W2S: a weak model; SFT:
    ``Direction(1.0)``) with ``ft`` on ``engine`` ('chain', 'full', 'ode' or an engine object);
    seed i continues pre-trained seed i (the ODE starts from the mean pre-trained state). The
    same ``seed`` gives the same SGD draws, so W2S with ground-truth labels is SFT bit for bit.
    ``start``: a per-seed state (dict of Q, M, a) instead of the pre-trained one. The ODE takes
    the second layer of seed 0 (``Gram``): give it a one-seed state."""
    import time

    from .api import _built, _engine
    from .engines._driver import drive, seed_keys
    from .engines.base import DeterministicEngine
    from .model import Record

    model, R = _objects(pre, label, ft, d, start=start)
    training = model.training
    eng = _engine(engine)
    t0 = time.perf_counter()
    info: dict = {}
    model.check()
    eng.check(model)
    if isinstance(eng, DeterministicEngine):
        out = eng.solve(model, Record.of(training))
        info = dict(out.info)
    else:  # the keys of sgdlab.run: the same seeds give the same process
        S = seeds or pre.seeds
        out = drive(_built(eng, model), seed_keys(seed, S), steps=training.steps, every=training.record_every,
                    threshold=1e9, hyper=eng.hyper(model), start=model.init.per_seed(model, S))
    M = np.asarray(out.M)
    if not np.array_equal(R, np.eye(R.shape[0])):
        M = M @ R
    a, heads = np.asarray(out.a), None
    if isinstance(label, AllTasks):
        heads = a[..., : pre.tasks.K * pre.strong.width(pre.tasks)].reshape(*a.shape[:-1], pre.tasks.K, -1)
        a = heads[..., 0, :]
    return Run(np.asarray(out.steps), M, np.asarray(out.Q), a, np.asarray(out.diverged_step),
               d, ft.batch, time.perf_counter() - t0, info, heads)


# ----------------------------------------------------------------------------- metrics


def metrics(pre: PreTrained, run: Run) -> dict[str, np.ndarray]:
    """Per seed and record: ``align`` (S, R) mean |cos(w_j, beta_kappa)| over the kappa-neurons;
    ``align_max``; ``energy_own`` (S, R, K): sum_{j in task k} |P_Vk w_j|^2 / m; ``energy_all``
    (S, R, K): sum_j |P_Vk w_j|^2 / m over all neurons; ``mass`` (S, R, K): head-kappa mass
    sum_{j in task k} a_j^2; ``err`` (S, R, K): per-task error (task kappa: the trained head; others:
    their frozen pre-trained heads, seed by seed)."""
    tasks, strong = pre.tasks, pre.strong
    m, K = strong.per_task, tasks.K
    M, Q, a = run.M, run.Q, run.a
    S = M.shape[0]
    qd = np.einsum("...jj->...j", Q)
    cos = (M @ tasks.beta(0)) / np.sqrt(qd)
    out: dict[str, np.ndarray] = {"align": np.mean(np.abs(cos[..., :m]), -1),
                                  "align_max": np.max(np.abs(cos[..., :m]), -1)}
    own, allv, mass, err = (np.zeros((*M.shape[:2], K)) for _ in range(4))
    heads = pre.heads if S == pre.seeds else np.broadcast_to(pre.heads.mean(0), (S, *pre.heads.shape[1:]))
    for k in range(K):
        J = slice(k * m, (k + 1) * m)
        P = M @ tasks.basis(k).T  # (S, R, p, r)
        e = np.sum(P**2, -1)
        own[..., k] = e[..., J].sum(-1) / m
        allv[..., k] = e.sum(-1) / m
        mass[..., k] = np.sum(a[..., J] ** 2, -1)
        if k == 0:
            head = a
        elif run.heads is not None:  # the all-tasks ceiling: its trained off-target heads
            head = run.heads[..., k, :]
        else:
            head = np.broadcast_to(heads[:, None, k], a.shape)
        err[..., k] = error(tasks, strong, M, Q, head, tasks.beta(k))
    out |= {"energy_own": own, "energy_all": allv, "mass": mass, "err": err}
    return out


def pgr(err_weak: float, err_w2s, err_ceiling) -> np.ndarray:
    """PGR = (err_weak - err_W2S) / (err_weak - err_ceiling)."""
    return (err_weak - np.asarray(err_w2s)) / (err_weak - np.asarray(err_ceiling))


def leakage(pre: PreTrained, M, Q, a, label, *, noise_free: bool = True) -> np.ndarray:
    """The first-order pull out of V_k of the off-target neurons along beta_kappa at rho = 0:
    per neuron j, s a_j E[sigma'(lambda_j)] c_1 with c_1 = E[(f - y) x . beta_kappa] the He1 part of
    the residual (Stein: c_1 = s sum_i a_i E[sigma'(lambda_i)] M_i0 - E[g'] (beta_hat . beta_kappa)),
    shape (..., p). The exact velocity of M_j0 per unit lr also carries the correlation of the
    residual with lambda_j; for an off-target neuron at rho = 0 that correlation is through its
    own head weight only."""
    tasks, strong = pre.tasks, pre.strong
    s = strong.scale(tasks)
    M, Q, a = np.asarray(M), np.asarray(Q), np.asarray(a)
    qd = np.einsum("...jj->...j", Q)
    dsig = _mean_derivative(strong.activation, qd)
    b = label.direction(tasks) if isinstance(label, Direction) else tasks.beta(0)
    dg = float(_mean_derivative(tasks.link, np.ones(1))[0])
    c1 = s * np.sum(a * dsig * (M @ tasks.beta(0)), -1) - dg * float(b @ tasks.beta(0))
    return s * a * dsig * c1[..., None]


def _mean_derivative(fn, q) -> np.ndarray:
    """E[f'(u)] for u ~ N(0, q), by Stein E[f'(u)] = E[u f(u)] / q (Gauss-Hermite, 60 nodes)."""
    from ._functions import gauss_hermite

    x, w = gauss_hermite(60)
    q = np.asarray(q, float)
    u = np.sqrt(q)[..., None] * x
    return np.sum(w * x * np.asarray(fn(jnp.asarray(u))), -1) / np.sqrt(q)
