r"""Translation-invariant signals built in Fourier space: amplitudes and phases as separate knobs.

The data model of Ricci, Merger and Goldt (2026), "A Fourier perspective on the learning
dynamics of neural networks", as reconstructed here (every choice that their abstract does
not fix is marked in the docs of the ``fourier`` reproduction).

Geometry
--------
A :class:`Grid` is a ring of N pixels (``shape=(N,)``) or an L x L image (``shape=(L, L)``,
N = L^2), periodic in every axis. With the DFT of numpy, X_k = sum_n x_n exp(-2 pi i k.n / L),
a real signal has X_{-k} = conj(X_k), so a frequency and its opposite carry one amplitude
A_k = |X_k| and opposite phases phi_{-k} = -phi_k; the *self-conjugate* frequencies
(k = -k mod L: DC, and the Nyquist frequencies when L is even) have real X_k, i.e. phases in
{0, pi}. Parseval: |x|^2 = N^{-1} sum_k |X_k|^2.

Coordinates
-----------
Besides pixels, every signal has real orthonormal *Fourier coordinates* xi (``basis="fourier"``):
for each pair {k, -k} (one representative k, ordered by |k|) the two numbers
sqrt(2/N) Re X_k and sqrt(2/N) Im X_k, and for each self-conjugate k the number X_k / sqrt(N).
x = B xi with B orthogonal (columns sqrt(2/N) cos(2 pi k.n/L), -sqrt(2/N) sin(2 pi k.n/L),
N^{-1/2} (+-1)^n), so |xi| = |x|, and a learner that is equivariant under rotations (online SGD
from a rotation-invariant start, plain, spherical or projected) follows the same law in either
basis; sampling in coordinates costs O(N) per input instead of an FFT.

Spectra and the two classes
---------------------------
The power spectrum is S_k = E|X_k|^2 / N proportional to max(|k|, 1)^{-alpha} (|k| the norm of the
signed frequency vector, DC counted with the lowest frequency), normalised to mean 1 over the N
frequencies, so that E|x|^2 = sum_k S_k = N and the covariance is the circulant matrix with
eigenvalues S_k (identity for alpha = 0). Amplitudes are ``"fixed"``, A_k = sqrt(N S_k) in
every input (then every input has |x|^2 = N and the same power spectrum), or ``"rayleigh"``,
A_k = sqrt(N S_k) rho_k with rho_k^2 ~ Exp(1) for pairs and rho_k = |g|, g ~ N(0, 1), for
self-conjugate k: together with uniform phases, exactly x ~ N(0, circ(S)).

- :class:`Noise`: i.i.d. uniform phases (self-conjugate: 0 or pi with probability 1/2).
- :class:`Template` (the structured class): phi_k = psi_k - 2 pi k.tau/L + pi s + eps_k on the
  template's *coherent band* (0 < |k| <= ``band``, or every k with ``band=None``), uniform
  phases elsewhere; psi_k the phases of a template (``"bump"``: psi = 0, a peak at the origin;
  ``"edge"``: psi_k = -pi/2 on one half of the pairs, an odd step-like pattern; or any pixel
  array), tau a uniform random shift on the grid, s in {0, 1} a random global sign and eps_k
  ~ N(0, ``jitter``^2) an optional phase jitter (pairs only). Shift and sign make the class
  translation invariant and its odd moments vanish; amplitudes are those of the noise class,
  so the two classes have the same power spectrum (sample by sample with fixed amplitudes)
  and the same covariance, and differ first in their fourth moments:
  E[X_k1 X_k2 conj(X_k3 X_k4)] = A_k1 A_k2 A_k3 A_k4 exp(i(psi_1 + psi_2 - psi_3 - psi_4))
  E[e^{i(eps_1 + eps_2 - eps_3 - eps_4)}] for coherent k1 + k2 = k3 + k4 (and 0 for the noise
  class unless {k1, k2} = {k3, k4}).
- :class:`SpikedCumulant` (a second structured class): x = C^{1/2} W (z + sqrt(beta) g u_tau),
  z ~ N(0, I), g = +-1, u_tau the unit template ``template`` shifted by a uniform tau, and W the
  circulant whitening of z + sqrt(beta) g u_tau averaged over tau (eigenvalues
  (1 + beta |u_k|^2 / N)^{-1/2}, u_k the DFT of u), C = circ(S): the shifted version of the
  spiked-cumulant model of Bardone and Goldt (2024), with
  the covariance of the noise class.

:func:`two_class` turns a structured and a noise class into a labelled :class:`sgdlab.data.Sampler`
(c = 1 structured, 0 noise, with probability 1/2 each; the frame is every coordinate, so the
recorded ``M`` of a run is the whole weight matrix W). :func:`pm_label` is the target
y = 2c - 1, :func:`logistic_loss` the logistic loss for +-1 labels and :func:`bump_activation`
an activation with a non-zero fourth Hermite coefficient.

Transforms and order parameters
-------------------------------
:func:`phase_scramble`, :func:`whiten_amplitudes`, :func:`swap_amplitudes_phases`,
:func:`spectral_slope` act on batches of inputs; :func:`weight_spectrum`,
:func:`low_frequency_fraction`, :func:`template_alignment`, :func:`ipr`, :func:`accuracy` and
:func:`observables` read a run's weights (``Result.M`` of a :func:`two_class` run) in Fourier
space.
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
from .data import Sampler
from .model import _finite

__all__ = [
    "AMPLITUDES",
    "BASES",
    "Grid",
    "Noise",
    "SignalLaw",
    "SpikedCumulant",
    "Template",
    "accuracy",
    "bump_activation",
    "ipr",
    "logistic_loss",
    "low_frequency_fraction",
    "observables",
    "phase_scramble",
    "pm_label",
    "power_spectrum",
    "spectral_slope",
    "swap_amplitudes_phases",
    "template_alignment",
    "two_class",
    "weight_spectrum",
    "whiten_amplitudes",
]

AMPLITUDES = ("fixed", "rayleigh")
BASES = ("fourier", "pixel")
TEMPLATES = ("bump", "edge")
_TWO_PI = 2.0 * math.pi


# ----------------------------------------------------------------------------- geometry


@functools.lru_cache(maxsize=32)
def _tables(shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Static index tables of a grid: the canonical frequencies (one per pair {k, -k} and every
    self-conjugate k, ordered by |k|), their partners, norms and coordinate positions."""
    N = int(np.prod(shape))
    L = np.asarray(shape)
    kv = np.stack(np.unravel_index(np.arange(N), shape), axis=1)  # (N, D) non-negative indices
    partner = np.ravel_multi_index(tuple(((-kv) % L).T), shape)
    signed = np.where(kv > L // 2, kv - L, kv)
    norm = np.sqrt(np.sum(signed.astype(np.float64) ** 2, axis=1))
    canon = np.nonzero(np.arange(N) <= partner)[0]
    canon = canon[np.lexsort((canon, norm[canon]))]
    self_conj = canon == partner[canon]
    # coordinate layout: a self-conjugate frequency takes one coordinate, a pair two (Re, Im)
    width = np.where(self_conj, 1, 2)
    start = np.concatenate([[0], np.cumsum(width)[:-1]])
    re_pos, im_pos = start, start[~self_conj] + 1
    # gather permutation from [re parts (H), im parts (pairs)] to the coordinate order
    perm = np.empty(N, dtype=np.int64)
    perm[re_pos] = np.arange(len(canon))
    perm[im_pos] = len(canon) + np.arange(int((~self_conj).sum()))
    coord_norm = np.empty(N)
    coord_norm[re_pos] = norm[canon]
    coord_norm[im_pos] = norm[canon][~self_conj]
    # gathers: the imaginary-part coordinate of each canonical frequency (N: a zero appended for
    # self-conjugate ones), and for each full-grid frequency its canonical source and whether it is
    # the conjugate partner
    im_full = np.full(len(canon), N, dtype=np.int64)
    im_full[~self_conj] = im_pos
    src = np.empty(N, dtype=np.int64)
    src[partner[canon]] = np.arange(len(canon))
    src[canon] = np.arange(len(canon))
    conj = np.ones(N, dtype=bool)
    conj[canon] = False
    return {"kv": kv[canon], "flat": canon, "partner": partner[canon], "norm": norm[canon], "self": self_conj,
            "pairs": np.nonzero(~self_conj)[0], "re_pos": re_pos, "im_pos": im_pos, "im_full": im_full,
            "perm": perm, "src": src, "conj": conj, "coord_norm": coord_norm}


def _xp(*arrays: Any):
    """numpy for numpy inputs (no compilation: the analysis side), jax.numpy if any is a JAX array."""
    return jnp if any(isinstance(a, jax.Array) for a in arrays) else np


@dataclass(frozen=True)
class Grid:
    """A periodic grid of N pixels: a ring ``(N,)`` or an image ``(L, L)`` (any shape works).

    Converts between pixels (..., N) (row-major flattening of ``shape``) and the orthonormal
    Fourier coordinates xi (..., N) of the module docstring, and between coordinates and the
    amplitudes/phases of the canonical frequencies (``freqs`` of them, ordered by |k|)."""

    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        sh = self.shape
        sh = (sh,) if isinstance(sh, int | np.integer) and not isinstance(sh, bool) else sh
        ok = isinstance(sh, tuple | list) and len(sh) in (1, 2) and all(
            isinstance(v, int | np.integer) and not isinstance(v, bool) and v >= 4 for v in sh)
        if not ok:
            raise _bad("fourier.shape", self.shape, "(N,) for a ring or (L, L) for an image, sides >= 4")
        object.__setattr__(self, "shape", tuple(int(v) for v in sh))

    @property
    def N(self) -> int:
        return int(np.prod(self.shape))

    @property
    def tables(self) -> dict[str, np.ndarray]:
        return _tables(self.shape)

    @property
    def freqs(self) -> int:
        """Canonical frequencies H: pairs plus self-conjugate ones (N = 2 pairs + self-conjugate)."""
        return len(self.tables["flat"])

    @property
    def norms(self) -> np.ndarray:
        """|k| of the canonical frequencies (H,), ascending."""
        return self.tables["norm"]

    @property
    def self_conjugate(self) -> np.ndarray:
        return self.tables["self"]

    @property
    def coordinate_norms(self) -> np.ndarray:
        """|k| of each Fourier coordinate (N,)."""
        return self.tables["coord_norm"]

    # -- coordinates <-> amplitudes and phases (gathers only: numpy or JAX arrays alike)

    def from_polar(self, amp: Any, phase: Any) -> Any:
        """Coordinates from amplitudes a_k = |X_k| / sqrt(N) and phases (..., H):
        (sqrt 2 a cos phi, sqrt 2 a sin phi) per pair, a cos phi (phi in {0, pi}) per self-conjugate k."""
        xp, tb = _xp(amp, phase), self.tables
        fac = xp.where(tb["self"], 1.0, math.sqrt(2.0)).astype(amp.dtype)
        re = fac * amp * xp.cos(phase)
        im = math.sqrt(2.0) * amp[..., tb["pairs"]] * xp.sin(phase[..., tb["pairs"]])
        return xp.concatenate([re, im], axis=-1)[..., tb["perm"]]

    def to_polar(self, xi: Any) -> tuple[Any, Any]:
        """(amplitudes a_k = |X_k| / sqrt(N), phases in (-pi, pi]) (..., H) of coordinates xi."""
        xp, tb = _xp(xi), self.tables
        ext = xp.concatenate([xi, xp.zeros(xi.shape[:-1] + (1,), xi.dtype)], axis=-1)
        fac = xp.where(tb["self"], 1.0, math.sqrt(0.5)).astype(xi.dtype)
        re, im = ext[..., tb["re_pos"]] * fac, ext[..., tb["im_full"]] * fac
        return xp.hypot(re, im), xp.arctan2(im, re)

    # -- coordinates <-> pixels

    def spectrum_of(self, xi: Any) -> Any:
        """The DFT X (..., N) (row-major over ``shape``) of the signal with coordinates xi."""
        xp, tb = _xp(xi), self.tables
        amp, phase = self.to_polar(xi)
        Xc = (math.sqrt(self.N) * amp * xp.exp(1j * phase))[..., tb["src"]]
        return xp.where(tb["conj"], xp.conj(Xc), Xc)

    def to_pixels(self, xi: Any) -> Any:
        """Pixels x = B xi (..., N)."""
        xp = _xp(xi)
        X = self.spectrum_of(xi).reshape(xi.shape[:-1] + self.shape)
        axes = tuple(range(-len(self.shape), 0))
        return xp.real(xp.fft.ifftn(X, axes=axes)).reshape(xi.shape).astype(xi.dtype)

    def to_coordinates(self, x: Any) -> Any:
        """Coordinates xi = B^T x (..., N) of pixels x (..., N)."""
        xp, tb = _xp(x), self.tables
        axes = tuple(range(-len(self.shape), 0))
        X = xp.fft.fftn(x.reshape(x.shape[:-1] + self.shape), axes=axes).reshape(x.shape)[..., tb["flat"]]
        amp = xp.abs(X) / math.sqrt(self.N)
        return self.from_polar(amp.astype(x.dtype), xp.angle(X).astype(x.dtype))

    def convert(self, v: Any, basis: str, to: str) -> Any:
        """``v`` (..., N) from ``basis`` to ``to`` (``"fourier"`` or ``"pixel"``)."""
        _check_basis(basis)
        _check_basis(to)
        if basis == to:
            return v
        return self.to_pixels(v) if to == "pixel" else self.to_coordinates(v)


def _check_basis(basis: str) -> None:
    if basis not in BASES:
        raise _bad("fourier.basis", basis, "'fourier' or 'pixel'")


def _as_grid(shape: Any) -> Grid:
    return shape if isinstance(shape, Grid) else Grid(shape)


def power_spectrum(grid: Grid, alpha: float) -> np.ndarray:
    """S_k (H,) at the canonical frequencies: max(|k|, 1)^{-alpha}, normalised so that the mean over
    all N frequencies (each pair counted twice) is 1, i.e. E|x|^2 = N."""
    S = np.maximum(grid.norms, 1.0) ** (-float(alpha))
    mult = np.where(grid.self_conjugate, 1.0, 2.0)
    return S * grid.N / float(np.sum(mult * S))


# ----------------------------------------------------------------------------- laws


@dataclass(frozen=True)
class SignalLaw:
    """Base of the signal laws on a grid: ``shape``, spectral slope ``alpha`` (S_k ~ |k|^{-alpha}),
    ``amplitudes`` (``"fixed"`` or ``"rayleigh"``). ``coordinates(key, n)`` draws n inputs in
    Fourier coordinates (n, N); ``pixels(key, n)`` the same inputs in pixels."""

    shape: Any = (64,)
    alpha: float = 0.0
    amplitudes: str = "fixed"
    name = "signal"

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", _as_grid(self.shape).shape)
        object.__setattr__(self, "alpha", _finite("fourier.alpha", self.alpha, minimum=0.0))
        if self.amplitudes not in AMPLITUDES:
            raise _bad("fourier.amplitudes", self.amplitudes, "'fixed' or 'rayleigh'")

    @property
    def grid(self) -> Grid:
        return Grid(self.shape)

    @property
    def N(self) -> int:
        return self.grid.N

    def spectrum(self) -> np.ndarray:
        """S_k at the canonical frequencies (see :func:`power_spectrum`)."""
        return power_spectrum(self.grid, self.alpha)

    def _amplitudes(self, key: jax.Array, n: int, dtype) -> jax.Array:
        """a_k = sqrt(S_k) (fixed) or sqrt(S_k) rho_k (Rayleigh; rho^2 ~ Exp(1) per pair, |g| per
        self-conjugate k), shape (n, H)."""
        g = self.grid
        base = jnp.sqrt(jnp.asarray(self.spectrum(), dtype))
        if self.amplitudes == "fixed":
            return jnp.broadcast_to(base, (n, g.freqs))
        k1, k2 = jax.random.split(key)
        u = jax.random.uniform(k1, (n, g.freqs), dtype, minval=jnp.finfo(dtype).tiny, maxval=1.0)
        rho = jnp.where(jnp.asarray(g.self_conjugate), jnp.abs(jax.random.normal(k2, (n, g.freqs), dtype)),
                        jnp.sqrt(-jnp.log(u)))
        return base * rho

    def _uniform_phases(self, key: jax.Array, n: int, dtype) -> jax.Array:
        """Uniform phases on [0, 2 pi) per pair, 0 or pi per self-conjugate frequency (n, H)."""
        u = jax.random.uniform(key, (n, self.grid.freqs), dtype)
        return jnp.where(jnp.asarray(self.grid.self_conjugate), math.pi * jnp.floor(2.0 * u), _TWO_PI * u)

    def polar(self, key: jax.Array, n: int, dtype=jnp.float32) -> tuple[jax.Array, jax.Array] | None:
        """(amplitudes, phases) (n, H) of n inputs, for laws defined by them (``None`` otherwise)."""
        return None

    def coordinates(self, key: jax.Array, n: int, dtype=jnp.float32) -> jax.Array:
        """n inputs in Fourier coordinates (n, N)."""
        return self.grid.from_polar(*self.polar(key, n, dtype))

    def pixels(self, key: jax.Array, n: int, dtype=jnp.float32) -> jax.Array:
        """The inputs of ``coordinates(key, n)`` in pixels (n, N)."""
        return self.grid.to_pixels(self.coordinates(key, n, dtype))


@dataclass(frozen=True)
class Noise(SignalLaw):
    """The noise class: amplitudes of the spectrum, i.i.d. uniform phases."""

    name = "noise"

    def polar(self, key, n, dtype=jnp.float32):
        ka, kp = jax.random.split(key)
        return self._amplitudes(ka, n, dtype), self._uniform_phases(kp, n, dtype)


def _template_dft(grid: Grid, template: Any) -> np.ndarray:
    """The DFT (H,) at the canonical frequencies of a unit-norm template: ``"bump"`` (a delta at the
    origin: all ones), ``"edge"`` (-i on pairs, 1 on self-conjugate frequencies: an odd, step-like
    pattern) or a pixel array (normalised to unit norm). Plain numpy: static data of a law."""
    if isinstance(template, str):
        if template not in TEMPLATES:
            raise _bad("fourier.template", template, "'bump', 'edge' or an array of the grid's shape")
        ones = np.ones(grid.freqs, complex)
        return ones if template == "bump" else np.where(grid.self_conjugate, 1.0 + 0j, -1j)
    t = np.asarray(template, dtype=np.float64)
    if t.size != grid.N or not np.all(np.isfinite(t)) or not np.any(t):
        raise _bad("fourier.template", "an array" if t.ndim else template,
                   f"'bump', 'edge' or a finite non-zero array of {grid.N} pixels (shape {grid.shape})")
    t = t.reshape(grid.shape) / np.linalg.norm(t)
    return np.fft.fftn(t).reshape(-1)[grid.tables["flat"]]


@dataclass(frozen=True, eq=False)
class _Array:
    """A numpy array compared and hashed by value (a template inside a frozen dataclass)."""

    value: np.ndarray

    def __eq__(self, other):
        return isinstance(other, _Array) and np.array_equal(self.value, other.value)

    def __hash__(self):
        return hash(self.value.tobytes())


def _freeze_template(template: Any) -> Any:
    return template if isinstance(template, str | _Array) else _Array(np.asarray(template, np.float64))


def _unfreeze(template: Any) -> Any:
    return template.value if isinstance(template, _Array) else template


@dataclass(frozen=True)
class Template(SignalLaw):
    """The structured class: a template at a uniform random shift with a random global sign.

    phi_k = psi_k - 2 pi k.tau / L + pi s + eps_k for k in the coherent band (0 < |k| <=
    ``band``; ``band=None``: every frequency, DC included, so that with fixed amplitudes an input
    is exactly +-(the template with amplitudes sqrt(N S_k)) shifted by tau), uniform phases
    elsewhere; eps_k ~ N(0, ``jitter``^2) on pairs. ``template``: ``"bump"`` (psi = 0),
    ``"edge"`` (psi = -pi/2 on pairs) or pixel values whose DFT phases are used. ``shift``:
    ``True`` (uniform tau; translation invariant) or ``False`` (tau = 0); ``sign``: ``True``
    (s uniform: odd moments vanish) or ``False`` (s = 0: the third moments survive)."""

    template: Any = "bump"
    band: float | None = None
    jitter: float = 0.0
    shift: bool = True
    sign: bool = True
    name = "template"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.band is not None:
            b = _finite("fourier.band", self.band, minimum=0.0)
            if b < 1:
                raise _bad("fourier.band", self.band, "none (every frequency) or a number >= 1 (|k| <= band)")
            object.__setattr__(self, "band", b)
        object.__setattr__(self, "jitter", _finite("fourier.jitter", self.jitter, minimum=0.0))
        for flag in ("shift", "sign"):
            if not isinstance(getattr(self, flag), bool):
                raise _bad(f"fourier.{flag}", getattr(self, flag), "true or false")
        _template_dft(self.grid, _unfreeze(self.template))  # validate
        object.__setattr__(self, "template", _freeze_template(self.template))

    @property
    def coherent(self) -> np.ndarray:
        """Mask (H,) of the canonical frequencies that carry the template's phases."""
        nr = self.grid.norms
        return np.ones_like(nr, bool) if self.band is None else (nr > 0) & (nr <= self.band + 1e-9)

    def template_phases(self) -> np.ndarray:
        """psi_k (H,): the DFT phases of the template (0 where its DFT vanishes)."""
        g = self.grid
        X = _template_dft(g, _unfreeze(self.template))
        psi = np.where(np.abs(X) > 1e-12 * np.max(np.abs(X)), np.angle(X), 0.0)
        return np.where(g.self_conjugate, np.where(np.cos(psi) < 0, math.pi, 0.0), psi)

    def pattern(self, shift: Any = None) -> np.ndarray:
        """The coherent part in Fourier coordinates (N,): amplitudes sqrt(S_k) and phases psi_k
        (shifted by ``shift``) on the coherent band, zero elsewhere (what
        :func:`template_alignment` measures against)."""
        g = self.grid
        ph = self.template_phases()
        if shift is not None:
            ph = ph - _TWO_PI * (g.tables["kv"] @ (np.asarray(shift, np.float64) / np.asarray(g.shape)))
        amp = np.sqrt(self.spectrum()) * self.coherent
        return g.from_polar(amp, ph)

    def polar(self, key, n, dtype=jnp.float32):
        g = self.grid
        ka, kp, kt, ks, kj = jax.random.split(key, 5)
        phase = self._uniform_phases(kp, n, dtype)
        kv = jnp.asarray(g.tables["kv"], dtype)  # (H, D)
        L = jnp.asarray(g.shape, dtype)
        if self.shift:
            tau = jax.random.randint(kt, (n, len(g.shape)), 0, jnp.asarray(g.shape)).astype(dtype)
        else:
            tau = jnp.zeros((n, len(g.shape)), dtype)
        s = jnp.floor(2.0 * jax.random.uniform(ks, (n, 1), dtype)) if self.sign else jnp.zeros((n, 1), dtype)
        coh = jnp.asarray(self.template_phases(), dtype) - _TWO_PI * ((tau / L) @ kv.T) + math.pi * s
        if self.jitter > 0:
            eps = self.jitter * jax.random.normal(kj, (n, g.freqs), dtype)
            coh = coh + jnp.where(jnp.asarray(g.self_conjugate), 0.0, eps)
        phase = jnp.where(jnp.asarray(self.coherent), coh, phase)
        return self._amplitudes(ka, n, dtype), phase


@dataclass(frozen=True)
class SpikedCumulant(SignalLaw):
    """The shifted spiked-cumulant class, whitened to the covariance of the noise class.

    x = C^{1/2} W (z + sqrt(beta) g u_tau), z ~ N(0, I_N), g = +-1, u_tau the unit-norm
    ``template`` shifted by a uniform tau, W = circ((1 + beta |u_k|^2 / N)^{-1/2}) the
    whitening of z + sqrt(beta) g u_tau averaged over tau, C = circ(S). The covariance is
    circ(S), as for :class:`Noise`; ``amplitudes`` is not used (they are random)."""

    beta: float = 1.0
    template: Any = "bump"
    name = "spiked-cumulant"

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "beta", _finite("fourier.beta", self.beta, minimum=0.0))
        _template_dft(self.grid, _unfreeze(self.template))
        object.__setattr__(self, "template", _freeze_template(self.template))

    def coordinates(self, key, n, dtype=jnp.float32):
        g = self.grid
        kz, kt, ks = jax.random.split(key, 3)
        U = _template_dft(g, _unfreeze(self.template))  # u_k of the unit template: sum_k |u_k|^2 = N
        white = 1.0 / np.sqrt(1.0 + self.beta * np.abs(U) ** 2 / g.N)
        tau = jax.random.randint(kt, (n, len(g.shape)), 0, jnp.asarray(g.shape)).astype(dtype)
        shift_phase = -_TWO_PI * ((tau / jnp.asarray(g.shape, dtype)) @ jnp.asarray(g.tables["kv"], dtype).T)
        sign = jnp.where(jax.random.uniform(ks, (n, 1), dtype) < 0.5, 1.0, -1.0).astype(dtype)
        spike = g.from_polar(jnp.broadcast_to(jnp.asarray(np.abs(U) / math.sqrt(g.N), dtype), (n, g.freqs)),
                             jnp.asarray(np.angle(U), dtype) + shift_phase)  # coordinates of u_tau
        z = jax.random.normal(kz, (n, g.N), dtype)
        y = z + math.sqrt(self.beta) * sign * spike
        scale = np.sqrt(self.spectrum()) * white  # per canonical frequency
        per_coord = np.empty(g.N)
        per_coord[g.tables["re_pos"]] = scale
        per_coord[g.tables["im_pos"]] = scale[~g.self_conjugate]
        return y * jnp.asarray(per_coord, dtype)


# ----------------------------------------------------------------------------- the labelled sampler


def bump_activation(z: jax.Array) -> jax.Array:
    """sigma(z) = exp(-z^2/2) - 2^{-1/2}: bounded, zero mean under N(0, 1), Hermite coefficients
    c_{2m} = (2m-1)!! (-1/2)^m / sqrt(2 (2m)!) (m >= 1; c_2 = -1/4, c_4 = 3 / (4 sqrt 48) ~ 0.108),
    odd ones 0. Larger for a kurtotic field (mass near 0): a detector of the template class."""
    return jnp.exp(-0.5 * z * z) - 2.0**-0.5


def pm_label(s: jax.Array, c: jax.Array) -> jax.Array:
    """y = 2 c - 1: +1 for the structured class (c = 1), -1 for the noise class (c = 0)."""
    return 2.0 * jnp.asarray(c, s.dtype) - 1.0


def logistic_loss(f: jax.Array, y: jax.Array) -> jax.Array:
    """log(1 + exp(-y f)) for labels y = +-1."""
    return jnp.logaddexp(0.0, -y * f)


@functools.lru_cache(maxsize=128)
def _sampler(positive: SignalLaw, negative: SignalLaw, basis: str, dtype: str) -> Sampler:
    dt = jnp.dtype(dtype)

    def fn(key, n, t):
        kc, kp, kn = jax.random.split(key, 3)
        c = jax.random.uniform(kc, (n,), dt) < 0.5
        pp, pn = positive.polar(kp, n, dt), negative.polar(kn, n, dt)
        if pp is not None and pn is not None:  # one trigonometric evaluation for both classes
            amp, phase = (jnp.where(c[:, None], u, v) for u, v in zip(pp, pn, strict=True))
            x = positive.grid.from_polar(amp, phase)
        else:
            x = jnp.where(c[:, None], positive.coordinates(kp, n, dt), negative.coordinates(kn, n, dt))
        return (x if basis == "fourier" else positive.grid.to_pixels(x)), c.astype(jnp.int32)

    label = f"fourier[{positive.name} vs {negative.name}, N={positive.N}, alpha={positive.alpha:g}]"
    return Sampler(fn, frame_dims=positive.N, label=label)


def two_class(positive: SignalLaw, negative: SignalLaw | None = None, *, basis: str = "fourier",
              dtype: str = "float32") -> Sampler:
    """A labelled two-class :class:`~sgdlab.data.Sampler`: c ~ Bernoulli(1/2), input from
    ``positive`` (c = 1) or ``negative`` (c = 0, default the :class:`Noise` of ``positive``'s grid,
    spectrum and amplitudes), in ``basis`` (``"fourier"`` coordinates or ``"pixel"``). Its frame is
    all N coordinates (``Result.M`` is the whole W). Non-Gaussian: the ``full`` engine only.
    Equal arguments return the same sampler (one compilation)."""
    if not isinstance(positive, SignalLaw):
        raise _bad("fourier.positive", positive, "a signal law (Template, SpikedCumulant, Noise)")
    if negative is None:
        negative = Noise(positive.shape, positive.alpha, positive.amplitudes)
    if not isinstance(negative, SignalLaw):
        raise _bad("fourier.negative", negative, "a signal law (Noise, Template, SpikedCumulant)")
    if negative.shape != positive.shape:
        raise _bad("fourier.negative", f"shape {negative.shape}", f"the shape of the positive class {positive.shape}")
    _check_basis(basis)
    if dtype not in ("float32", "float64"):
        raise _bad("fourier.dtype", dtype, "'float32' or 'float64'")
    return _sampler(positive, negative, basis, dtype)


# ----------------------------------------------------------------------------- transforms


def phase_scramble(key: jax.Array, x: jax.Array, shape: Any, basis: str = "pixel") -> jax.Array:
    """Replace the phases of every input (..., N) by i.i.d. uniform ones (self-conjugate: 0 or pi),
    keeping its amplitudes: what is left is amplitude information only."""
    g = _as_grid(shape)
    amp, _ = g.to_polar(g.convert(x, basis, "fourier"))
    u = jax.random.uniform(key, amp.shape, amp.dtype)
    phase = jnp.where(jnp.asarray(g.self_conjugate), math.pi * jnp.floor(2.0 * u), _TWO_PI * u)
    if not isinstance(amp, jax.Array):
        phase = np.asarray(phase)
    return g.convert(g.from_polar(amp, phase), "fourier", basis)


def whiten_amplitudes(x: jax.Array, shape: Any, alpha: float = 0.0, basis: str = "pixel") -> jax.Array:
    """Set every amplitude to that of the spectrum S_k ~ max(|k|, 1)^{-alpha} (default flat),
    keeping the phases: what is left is phase information only."""
    g = _as_grid(shape)
    _, phase = g.to_polar(g.convert(x, basis, "fourier"))
    xp = _xp(phase)
    amp = xp.broadcast_to(xp.sqrt(xp.asarray(power_spectrum(g, alpha), phase.dtype)), phase.shape)
    return g.convert(g.from_polar(amp, phase), "fourier", basis)


def swap_amplitudes_phases(x1: jax.Array, x2: jax.Array, shape: Any, basis: str = "pixel"
                           ) -> tuple[jax.Array, jax.Array]:
    """(amplitudes of x1 with the phases of x2, amplitudes of x2 with the phases of x1)."""
    g = _as_grid(shape)
    a1, p1 = g.to_polar(g.convert(x1, basis, "fourier"))
    a2, p2 = g.to_polar(g.convert(x2, basis, "fourier"))
    return (g.convert(g.from_polar(a1, p2), "fourier", basis), g.convert(g.from_polar(a2, p1), "fourier", basis))


def spectral_slope(x: Any, shape: Any, basis: str = "pixel") -> np.ndarray:
    """The spectral slope alpha-hat of each input (...): minus the least-squares slope of log |X_k|^2
    on log |k| over the pairs {k, -k} with 1 <= |k| <= min(shape) / 2 (exact for fixed amplitudes;
    for Rayleigh ones log rho^2 has a constant mean, so the slope is unbiased)."""
    g = _as_grid(shape)
    amp, _ = g.to_polar(g.convert(np.asarray(x, np.float64), basis, "fourier"))
    use = (~g.self_conjugate) & (g.norms >= 1) & (g.norms <= min(g.shape) / 2)
    if int(use.sum()) < 2:
        raise _bad("fourier.shape", g.shape, "a grid with at least 2 frequency pairs (sides >= 6)")
    lx = np.log(g.norms[use])
    ly = np.log(np.maximum(np.asarray(amp, np.float64)[..., use] ** 2, 1e-300))
    lxc = lx - lx.mean()
    return -np.sum(lxc * (ly - ly.mean(axis=-1, keepdims=True)), axis=-1) / np.sum(lxc**2)


# ----------------------------------------------------------------------------- order parameters


def _weights(W: Any, shape: Any, basis: str, to: str) -> jax.Array:
    g = _as_grid(shape)
    W = np.asarray(W, np.float64)
    if W.shape[-1] != g.N:
        raise _bad("fourier.weights", f"an array of shape {tuple(W.shape)}", f"a last axis of N = {g.N} weights")
    return g.convert(W, basis, to)


def weight_spectrum(W: Any, shape: Any, basis: str = "fourier") -> tuple[np.ndarray, np.ndarray]:
    """(bin centres k = 0, 1, ..., power per radial bin round(|k|)) of weights W (..., N): the share
    sum_{round|k| = bin} |W_k|^2 / sum_k |W_k|^2 of the weight's squared norm in each bin."""
    g = _as_grid(shape)
    xi = np.asarray(_weights(W, g, basis, "fourier"))
    coord_bin = np.rint(g.coordinate_norms).astype(np.int64)
    centres = np.arange(coord_bin.max() + 1, dtype=np.float64)
    out = np.stack([(xi[..., coord_bin == k] ** 2).sum(axis=-1) for k in range(len(centres))], axis=-1)
    return centres, out / np.maximum(out.sum(axis=-1, keepdims=True), 1e-300)


def low_frequency_fraction(W: Any, shape: Any, k_low: float, basis: str = "fourier") -> np.ndarray:
    """sum_{0 < |k| <= k_low} |W_k|^2 / sum_k |W_k|^2 per weight vector (...)."""
    g = _as_grid(shape)
    xi = np.asarray(_weights(W, g, basis, "fourier"))
    nr = g.coordinate_norms
    low = (nr > 0) & (nr <= k_low + 1e-9)
    return (xi[..., low] ** 2).sum(axis=-1) / np.maximum((xi**2).sum(axis=-1), 1e-300)


def template_alignment(W: Any, law: Template, basis: str = "fourier") -> np.ndarray:
    """max over shifts tau of |<w, T_tau>| / (|w| |T_tau|), T_tau the coherent part of the template
    class at shift tau (:meth:`Template.pattern`), per weight vector (...): 1 when w is the
    template at some shift (up to sign), ~ sqrt(2 log N / N) for a random w (flat spectrum)."""
    g = law.grid
    w = np.asarray(_weights(W, g, basis, "pixel")).reshape(np.shape(W)[:-1] + g.shape)
    t = g.to_pixels(law.pattern()).reshape(g.shape)
    axes = tuple(range(-len(g.shape), 0))
    corr = np.real(np.fft.ifftn(np.fft.fftn(w, axes=axes) * np.conj(np.fft.fftn(t)), axes=axes))
    corr = corr.reshape(np.shape(W)[:-1] + (g.N,))
    nw = np.linalg.norm(w.reshape(corr.shape), axis=-1)
    return np.max(np.abs(corr), axis=-1) / np.maximum(nw * np.linalg.norm(t), 1e-300)


def ipr(W: Any, shape: Any, basis: str = "fourier") -> np.ndarray:
    """Inverse participation ratio in pixel space, sum_n w_n^4 / (sum_n w_n^2)^2 (...): 1 for a
    weight on one pixel, ~ 3 / N for a random one."""
    w = np.asarray(_weights(W, shape, basis, "pixel"))
    return (w**4).sum(axis=-1) / np.maximum((w**2).sum(axis=-1) ** 2, 1e-300)


@functools.lru_cache(maxsize=32)
def _correct(student: Any):
    """A compiled count of correct signs: W (B, p, N), a (B, p), x (n, N), y (n,) -> (B,)."""

    @jax.jit
    def count(W, a, x, y):
        # Student.output, s * sum_j a_j sigma(lambda_j), with the inputs on the last axis (the layout
        # XLA evaluates fastest on CPU)
        act = student.activation(jnp.einsum("bpn,tn->bpt", W, x))
        f = student.scale * jnp.einsum("bp,bpt->bt", a, act)
        return jnp.sum(0.5 * (1.0 + jnp.sign(f) * y), axis=-1)

    return count


def accuracy(W: Any, a: Any, student: Any, x: Any, y: Any, *, chunk: int = 4096) -> np.ndarray:
    """Test accuracy P[sign f(x) = y] of the students with first layers W (..., p, N) and second
    layers a (..., p) on inputs x (n, N) (in the basis the students were trained in) with labels
    y = +-1 (n,); f = ``student.output(x W^T, a)``. Ties (f = 0) count as half."""
    W = np.asarray(W, np.float32)
    lead, (p, N) = W.shape[:-2], W.shape[-2:]
    Wb = jnp.asarray(W.reshape(-1, p, N))
    ab = jnp.asarray(np.broadcast_to(np.asarray(a, np.float32), lead + (p,)).reshape(-1, p))
    x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
    count = _correct(student)
    total = np.zeros(Wb.shape[0])
    for i in range(0, x.shape[0], chunk):
        xc, yc = x[i:i + chunk], y[i:i + chunk]
        if xc.shape[0] < chunk and i > 0:  # pad the last chunk (one compiled shape); padded y = 0 adds 1/2
            pad = chunk - xc.shape[0]
            xc = np.concatenate([xc, np.zeros((pad, N), np.float32)])
            yc = np.concatenate([yc, np.zeros(pad, np.float32)])
            total += np.asarray(count(Wb, ab, xc, yc), np.float64) - 0.5 * pad
        else:
            total += np.asarray(count(Wb, ab, xc, yc), np.float64)
    return (total / x.shape[0]).reshape(lead)


def observables(result: Any, student: Any, law: SignalLaw, *, basis: str = "fourier", test: Any = None,
                k_low: float | None = None, probes: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
    """Fourier-domain order parameters of a :func:`two_class` run over time, per seed, record
    (and row where it applies): ``spectrum`` (S, R, p, bins) with ``bins``,
    ``low_frequency_fraction`` (S, R, p) (k_low default: the template band, else max|k|/4),
    ``alignment`` (S, R, p) when ``law`` is a :class:`Template`, ``ipr`` (S, R, p), and for each
    ``(x, y)`` test set in ``test`` (one) and ``probes`` (name -> (x, y)) an accuracy (S, R)."""
    W = np.asarray(result.M)
    g = law.grid
    if k_low is None:
        k_low = law.band if isinstance(law, Template) and law.band is not None else float(g.norms.max()) / 4
    bins, spec = weight_spectrum(W, g, basis)
    out = {"bins": bins, "spectrum": spec, "low_frequency_fraction": low_frequency_fraction(W, g, k_low, basis),
           "ipr": ipr(W, g, basis), "k_low": np.asarray(k_low)}
    if isinstance(law, Template):
        out["alignment"] = template_alignment(W, law, basis)
    sets = dict(probes or {})
    if test is not None:
        sets = {"accuracy": test, **sets}
    for name, (x, y) in sets.items():
        out[name] = accuracy(W, result.a, student, x, y)
    return out
