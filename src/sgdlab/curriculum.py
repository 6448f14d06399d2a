r"""The XOR-like Gaussian mixture, curricula as schedules of its data law, and lottery diagnostics.

The mixture (Refinetti, Goldt, Krzakala, Zdeborova 2021; curricula: Saglietti, Sarao Mannelli,
Saxe 2022; Sarao Mannelli, Ivashynka, Saxe, Saglietti 2024): four clusters with means
+-mu u1 (label +1) and +-mu u2 (label -1) in a relevant plane span(u1, u2),

    x = mu_c + sqrt(Delta_rel) P_rel z + sqrt(Delta_irr) P_perp z,

with relevant-plane noise ``delta_rel`` and irrelevant-direction noise ``Delta_irr`` (the
difficulty of a sample: easy = small Delta_irr). It is a :class:`~sgdlab.data.Mixture` whose
frame is [e_b, u1, u2]: ``Delta_irr`` is the orthogonal variance ``sigma_perp^2`` (a schedule
of the step for a curriculum) and e_b is a *bias coordinate*: x . e_b = ``bias`` for every
sample (a frame coordinate of zero variance). A student row's weight on it is its bias,

    w_j . x = w_j,perp . x + (M_j1 s_1 + M_j2 s_2) + b_j,      b_j = bias * M_j0,

trained by the same SGD as the weights, at the rate ``lr * bias^2``: a network with biases of
their own step size, exact on every engine (``full``, ``chain``, ``ode``) without any engine
knowing about biases. ``bias = 0`` drops the coordinate (no biases). Biases start at
``bias * M_j0(0)``, O(d^-1/2) from a random start.

Mean scalings (both named): ``"unit"``, means of norm ``mu`` (initial overlaps O(d^-1/2): a
search phase), and ``"sqrt_d"``, means of norm ``mu sqrt(d)`` (the signal is in every field
from the start). Labels are +-1 (:func:`xor_label`): train with the square loss or
``Training(loss=logistic_loss)``. The relevant directions are any orthonormal pair; the ``full`` engine takes
the frame as the first coordinates, so it simulates the sparse-relevant-coordinates variant
(u1, u2 = two coordinate vectors), the same law by the rotation invariance of SGD.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._errors import _bad
from .data import Mixture
from .fourier import logistic_loss  # log(1 + exp(-y f)): Training(loss=logistic_loss) on the +-1 labels

__all__ = [
    "SCALINGS",
    "SCHEDULES",
    "Difficulty",
    "XORMixture",
    "assignment",
    "energies",
    "hard_error",
    "initial_angles",
    "logistic_loss",
    "lottery_ticket",
    "matched_lr",
    "simulate",
    "ticket_probability",
    "xor_label",
]

SCALINGS = ("unit", "sqrt_d")
SCHEDULES = ("none", "curriculum", "anti", "mixed", "anneal")


def xor_label(s: jax.Array, c: jax.Array) -> jax.Array:
    """+1 for the clusters +-mu u1 (c = 0, 1), -1 for +-mu u2 (c = 2, 3)."""
    return jnp.where(c < 2, 1.0, -1.0)


@dataclass(frozen=True)
class Difficulty:
    r"""The irrelevant-direction noise of every sample as a function of the step t:
    ``sigma_perp(t) = sqrt(Delta_irr(t))`` for the four clusters.

    - ``none``: ``hard`` throughout (no curriculum);
    - ``curriculum``: ``easy`` for t < ``switch``, ``hard`` after;
    - ``anti``: ``hard`` for t < ``switch``, ``easy`` after (anti-curriculum);
    - ``mixed``: at each step easy with probability ``fraction`` (one fixed pseudo-random
      order of steps, the same for every seed: the fraction of easy samples in any window is
      ``fraction`` up to binomial noise);
    - ``anneal``: ``easy + (hard - easy) min(t / switch, 1)`` (a smooth curriculum).

    With ``easy == hard`` every schedule is the same number at every step (bit for bit), so the
    same seeds give the same process."""

    kind: str = "none"
    easy: float = 0.1
    hard: float = 1.0
    switch: int = 0
    fraction: float = 0.5

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise _bad("schedule.kind", self.kind, ", ".join(repr(s) for s in SCHEDULES))
        for name in ("easy", "hard"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
                raise _bad(f"schedule.{name}", v, "a positive number (the variance Delta_irr)")
        if isinstance(self.switch, bool) or not isinstance(self.switch, int) or self.switch < 0:
            raise _bad("schedule.switch", self.switch, "a non-negative integer step")
        if self.kind in ("curriculum", "anti", "anneal") and self.switch < 1:
            raise _bad("schedule.switch", self.switch, f"a positive step for schedule {self.kind!r}")
        if not 0.0 <= float(self.fraction) <= 1.0:
            raise _bad("schedule.fraction", self.fraction, "a number in [0, 1] (the easy fraction)")

    @property
    def jumps(self) -> tuple[int, ...]:
        """The step where the law jumps (``curriculum``, ``anti``) or bends (``anneal``), for the
        ODE's solver; ``mixed`` jumps at random steps and declares none."""
        return (self.switch,) if self.kind in ("curriculum", "anti", "anneal") and self.easy != self.hard else ()

    def variance(self, t) -> jax.Array:
        """Delta_irr at step t (a scalar, float64)."""
        t = jnp.asarray(t)
        easy, hard = jnp.float64(self.easy), jnp.float64(self.hard)
        if self.kind == "none":
            return hard + 0.0 * t
        if self.kind == "curriculum":
            return jnp.where(t < self.switch, easy, hard)
        if self.kind == "anti":
            return jnp.where(t < self.switch, hard, easy)
        if self.kind == "mixed":
            u = jax.random.uniform(jax.random.fold_in(jax.random.key(20240), t), (), jnp.float64)
            return jnp.where(u < self.fraction, easy, hard)
        h = jnp.minimum(t / self.switch, 1.0)
        return jnp.where(h >= 1.0, hard, easy + (hard - easy) * h)

    def __call__(self, t) -> jax.Array:
        return jnp.full((4,), jnp.sqrt(self.variance(t)))


@dataclass(frozen=True)
class XORMixture:
    """The XOR-like Gaussian mixture (see the module docstring): ``mu`` the norm of the means
    (``scaling="unit"``) or its prefactor (``"sqrt_d"``: norm ``mu sqrt(d)``), ``delta_rel`` the
    relevant-plane noise variance, ``bias`` the value of the bias coordinate (0: no biases)."""

    mu: float = 1.0
    delta_rel: float = 0.05
    scaling: str = "unit"
    bias: float = 1.0

    def __post_init__(self) -> None:
        if self.scaling not in SCALINGS:
            raise _bad("xor.scaling", self.scaling, "'unit' (|mean| = mu) or 'sqrt_d' (|mean| = mu sqrt d)")
        for name, lo in (("mu", 0.0), ("delta_rel", 0.0), ("bias", 0.0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < lo:
                raise _bad(f"xor.{name}", v, "a finite number >= 0")

    @property
    def offset(self) -> int:
        """Index of u1 in the frame (1 with the bias coordinate, else 0)."""
        return 1 if self.bias > 0 else 0

    def norm(self, d: int) -> float:
        return self.mu * (math.sqrt(d) if self.scaling == "sqrt_d" else 1.0)

    def means(self, d: int) -> np.ndarray:
        """The four means in frame coordinates, (4, a)."""
        m = self.norm(d)
        rel = np.array([[m, 0.0], [-m, 0.0], [0.0, m], [0.0, -m]])
        if self.bias > 0:
            rel = np.concatenate([np.full((4, 1), float(self.bias)), rel], axis=1)
        return rel

    def latent_cov(self) -> np.ndarray:
        """(4, a, a): Delta_rel on (u1, u2), 0 on the bias coordinate."""
        a = 2 + self.offset
        c = np.zeros((a, a))
        c[self.offset:, self.offset:] = self.delta_rel * np.eye(2)
        return np.broadcast_to(c, (4, a, a)).copy()

    def law(self, d: int, difficulty: Difficulty | float) -> Mixture:
        """The data law with irrelevant noise ``difficulty`` (a schedule, or a variance)."""
        sig = difficulty if isinstance(difficulty, Difficulty) else math.sqrt(float(difficulty))
        return Mixture(means=self.means(d).tolist(), latent_cov=self.latent_cov().tolist(), sigma_perp=sig)

    def problem(self, d: int, difficulty: Difficulty | float):
        from .model import Problem

        return Problem(d=d, function=xor_label, directions=1, data=self.law(d, difficulty))

    def relevant(self, M: np.ndarray) -> np.ndarray:
        """The overlaps (M_j,u1, M_j,u2) of each row: (..., p, 2)."""
        return np.asarray(M)[..., self.offset:self.offset + 2]

    def biases(self, M: np.ndarray) -> np.ndarray:
        """b_j = bias * M_j,bias (zeros without biases): (..., p)."""
        M = np.asarray(M)
        return self.bias * M[..., 0] if self.bias > 0 else np.zeros(M.shape[:-1])


def matched_lr(eta: float, d: int, scale: float) -> float:
    """The step size lr = eta / (d s) whose per-unit effective step ``lr * s`` is eta / d for
    the output prefactor s (1, 1/K or 1/sqrt K): the comparison at matched effective step
    size, which keeps the 1/K prefactor from rescaling time with K."""
    return eta / (d * scale)


# ----------------------------------------------------------------------------- diagnostics


@functools.lru_cache(maxsize=8)
def _normals(n: int, p: int, key: int) -> np.ndarray:
    return np.asarray(jax.random.normal(jax.random.key(key), (4, n, p), jnp.float64))


@functools.partial(jax.jit, static_argnames=("activation",))
def _error_kernel(M, Q, a, means, S, sig2, labels, Z, activation):
    mean = jnp.einsum("...ka,ca->...ck", M, means)  # (..., 4, p)
    R = Q - jnp.einsum("...ka,...la->...kl", M, M)
    cov = jnp.einsum("...ka,ab,...lb->...kl", M, S, M) + sig2 * R
    ev, V = jnp.linalg.eigh(0.5 * (cov + jnp.swapaxes(cov, -1, -2)))
    L = V * jnp.sqrt(jnp.maximum(ev, 0.0))[..., None, :]
    lam = mean[..., :, None, :] + jnp.einsum("...kl,cnl->...cnk", L, Z)  # (..., 4, n, p)
    f = jnp.sum(a[..., None, None, :] * activation(lam), axis=-1)
    wrong = jnp.where(labels[:, None] > 0, f <= 0, f >= 0)
    return jnp.mean(wrong, axis=(-1, -2))


def hard_error(M, Q, a, xor: XORMixture, d: int, delta_irr: float, *, activation: Any = None,
               n: int = 2048, key: int = 7, block: int = 64) -> np.ndarray:
    r"""Classification error of sign(f) on the mixture with irrelevant noise ``delta_irr``, from
    the order parameters (M (..., p, a), Q (..., p, p), a (..., p)).

    Given the cluster c the fields are Gaussian: mean M mu_c (the bias included), covariance
    M S M^T + Delta_irr (Q - M M^T), S the latent covariance. The error is the average over
    the four (equiprobable) clusters of P(sign f != y_c), estimated with the same ``n`` standard
    normal draws per cluster for every state (common random numbers: differences between
    states have a much smaller error than the standard error sqrt(e (1 - e) / (4 n)) of each).
    The output prefactor is positive and does not change the sign. Returns shape (...)."""
    from ._functions import resolve_fn

    act = resolve_fn("relu" if activation is None else activation, field="student.activation")
    M, Q, a = (np.asarray(x, np.float64) for x in (M, Q, a))
    lead = M.shape[:-2]
    p = M.shape[-2]
    Mf, Qf, af = M.reshape(-1, *M.shape[-2:]), Q.reshape(-1, p, p), a.reshape(-1, p)
    Z = jnp.asarray(_normals(n, p, key))
    args = (jnp.asarray(xor.means(d)), jnp.asarray(xor.latent_cov()[0]), jnp.float64(delta_irr),
            jnp.asarray([1.0, 1.0, -1.0, -1.0]), Z)
    out = np.empty(Mf.shape[0])
    ok = np.all(np.isfinite(Mf), axis=(1, 2)) & np.all(np.isfinite(Qf), axis=(1, 2)) & np.all(np.isfinite(af), axis=1)
    for i in range(0, Mf.shape[0], block):
        sl = slice(i, min(i + block, Mf.shape[0]))
        m, q, aa = Mf[sl], Qf[sl], af[sl]
        pad = block - m.shape[0]
        if pad:  # one compiled shape
            m, q, aa = (np.concatenate([x, np.repeat(x[:1] * 0, pad, 0)]) for x in (m, q, aa))
        m, q, aa = (np.nan_to_num(x) for x in (m, q, aa))
        out[sl] = np.asarray(_error_kernel(m, q, aa, *args, act))[: block - pad]
    out[~ok] = np.nan
    return out.reshape(lead)


def initial_angles(M0, xor: XORMixture) -> np.ndarray:
    """Angle of each row in the relevant plane, atan2(M_u2, M_u1), in (-pi, pi]: (..., p)."""
    rel = xor.relevant(M0)
    return np.arctan2(rel[..., 1], rel[..., 0])


def assignment(M, Q, a, xor: XORMixture, d: int, delta_irr: float) -> dict[str, np.ndarray]:
    """Which cluster each unit serves and whether the rule is identified, from (M, Q, a).

    ``cluster`` (..., p): argmax_c of the unit's mean field M_j mu_c + b_j (0: +mu u1,
    1: -mu u1, 2: +mu u2, 3: -mu u2); ``active``: that mean field exceeds the standard deviation
    of the unit's field on the mixture with irrelevant noise ``delta_irr`` (a unit that responds
    to its cluster above the noise; at a random start no unit does); ``correct``: active with the
    readout sign of the cluster's label; ``covered`` (..., 4): some correct unit serves the
    cluster; ``rule`` (...): all four clusters covered."""
    M, Q, a = np.asarray(M), np.asarray(Q), np.asarray(a)
    fields = np.einsum("...ka,ca->...kc", M, xor.means(d))
    cluster = np.argmax(fields, axis=-1)
    best = np.take_along_axis(fields, cluster[..., None], axis=-1)[..., 0]
    rel = np.sum(xor.relevant(M) ** 2, axis=-1)
    perp = np.einsum("...jj->...j", Q) - np.sum(M**2, axis=-1)
    std = np.sqrt(np.maximum(xor.delta_rel * rel + delta_irr * perp, 0.0))
    label = np.where(cluster < 2, 1.0, -1.0)
    active = best > std
    correct = active & (np.sign(a) == label)
    covered = np.stack([np.any(correct & (cluster == c), axis=-1) for c in range(4)], axis=-1)
    return {"cluster": cluster, "active": active, "correct": correct, "covered": covered,
            "rule": np.all(covered, axis=-1)}


def lottery_ticket(M0, a0, xor: XORMixture) -> np.ndarray:
    """A good initial ticket (...,): among the units with v > 0 one starts with M_u1 > 0 and one
    with M_u1 < 0, and among those with v < 0 one with M_u2 > 0 and one with M_u2 < 0, so that
    each cluster has a unit of the right readout sign on its side of the relevant plane. With
    uniform random rows and K/2 units of each sign its probability is (1 - 2^(1 - K/2))^2
    (:func:`ticket_probability`)."""
    rel, a0 = xor.relevant(M0), np.asarray(a0)
    pos, neg = a0 > 0, a0 < 0
    u1, u2 = rel[..., 0], rel[..., 1]
    return (np.any(pos & (u1 > 0), -1) & np.any(pos & (u1 < 0), -1)
            & np.any(neg & (u2 > 0), -1) & np.any(neg & (u2 < 0), -1))


def ticket_probability(n_pos: int, n_neg: int) -> float:
    """P(good ticket) for uniform random rows: (1 - 2^(1 - n_pos)) (1 - 2^(1 - n_neg))."""
    return (1.0 - 2.0 ** (1 - n_pos)) * (1.0 - 2.0 ** (1 - n_neg))


def energies(M, Q, xor: XORMixture) -> tuple[np.ndarray, np.ndarray]:
    """Relevant energy sum_j |P_rel w_j|^2 and irrelevant energy sum_j |P_perp w_j|^2 (the bias
    weight in neither): (...,) each."""
    M, Q = np.asarray(M), np.asarray(Q)
    rel = np.sum(xor.relevant(M) ** 2, axis=(-1, -2))
    irr = np.einsum("...jj->...", Q) - np.sum(M**2, axis=(-1, -2))
    return rel, irr


# ----------------------------------------------------------------------------- running


def simulate(problem, student, training, *, engine=None, seeds: int = 1, seed: int = 0, every: int | None = None):
    """The engine's trajectory (steps, M, Q, a, escape and divergence steps) of ``seeds`` seeds,
    without the population risk, whose tensor rule over the p + a fields of a wide ReLU network
    does not fit in memory (the curricula are scored by :func:`hard_error` instead). Seeds use
    the keys of :func:`sgdlab.run`, so the same seeds give the same process."""
    from .api import _built, _model
    from .engines import Chain
    from .engines._driver import drive, seed_keys

    engine = Chain() if engine is None else engine
    model = _model(problem, student, training)
    model.check()
    engine.check(model)
    every = training.record_every if every is None else every
    return drive(_built(engine, model), seed_keys(seed, seeds), steps=training.steps, every=every,
                 threshold=1e9, hyper=engine.hyper(model), start=model.init.per_seed(model, seeds))
