r"""Closed-form and one-dimensional theory for the single-index model on the sphere.

Setting (Ben Arous, Gheissari, Jagannath 2021): target :math:`y = g(\nu) + \text{noise}\cdot\xi`, one student
neuron :math:`\sigma(\lambda)` with unit weight (second layer fixed at 1, width 1), spherical
online SGD with step size :math:`\eta` and batch 1, overlap :math:`m = w \cdot w^*`. The
fields :math:`(\lambda, \nu)` are standard Gaussians with correlation :math:`m`. Links are
expanded in orthonormal Hermite functions, :math:`g = \sum_j c_j(g) h_j`.

Population drift (per unit step size, square loss with the factor 1/2, or correlation loss;
the :math:`E[\sigma(\lambda)^2]` term of the square loss only depends on :math:`|w|`, so its
gradient is radial and drops out on the sphere; both losses have the same drift):

.. math:: \mathrm{drift}(m) = (1 - m^2) \sum_{j \ge 1} j\, c_j(g)\, c_j(\sigma)\, m^{j-1}.

Effective one-dimensional dynamics per step (Ben Arous, Gheissari, Jagannath 2021):

.. math:: \frac{dm}{dk} = \eta\, \mathrm{drift}(m) - \frac{\eta^2 d}{2}\, m\, V(m),

with :math:`V(m) = E[(\sigma(\lambda) - y)^2 \sigma'(\lambda)^2]` (square loss) or
:math:`E[y^2 \sigma'(\lambda)^2]` (correlation loss). The second term is the leading part of
the renormalisation onto the sphere: the tangent gradient has squared norm
:math:`\approx d\, c^2` with :math:`c = -\partial \ell / \partial \lambda`, and
:math:`m \to m / \sqrt{1 + \eta^2 |g_\perp|^2} \approx m (1 - \eta^2 d V / 2)`. Terms of order
:math:`\eta^2` without a factor :math:`d` are dropped (the ODE engine keeps them; at large
:math:`d` they are relatively :math:`O(1/d)`).

For information exponent :math:`k \ge 3` and small :math:`m` the effective drift is
:math:`\eta m [k c_k m^{k-2} - \eta d V(0) / 2]` (:math:`c_k = c_k(g) c_k(\sigma)`): the equator is
attracting below the critical overlap

.. math:: m_c = \left(\frac{\eta d V(0)}{2 k |c_k|}\right)^{1/(k-2)},

equivalently, escape from :math:`m_0` needs :math:`\eta < \eta_c = 2 k |c_k| m_0^{k-2} / (d V(0))`.
The same expression at :math:`k = 2` gives the step-size threshold
:math:`\eta d < 4 |c_2| / V(0)` (independent of :math:`m_0`).

These are deterministic statements about the drift. Near :math:`m \sim d^{-1/2}` drift,
curvature and noise are of the same size, so the escape time from a random start is a random
variable (use the Chain or Full engines); the ODE is its law only from a macroscopic start.
"""

from __future__ import annotations

import functools
import math

import jax.numpy as jnp
import numpy as np
import scipy.integrate

from ._functions import Fn, gauss_hermite, hermite_coefficients, information_exponent, resolve_fn

__all__ = [
    "V",
    "critical_delta",
    "critical_lr",
    "critical_lr_closed_form",
    "critical_overlap",
    "drift",
    "effective_drift",
    "escape_integral",
    "escape_steps_effective",
    "theory_lr",
]

_V_NODES = 60  # Gauss-Hermite nodes per axis for V(m)
_LOSSES = ("square", "correlation")


def _fn(spec, field: str) -> Fn:
    return resolve_fn(spec, field=field)


@functools.lru_cache(maxsize=128)
def _drift_coeffs(link: Fn, student: Fn, K: int) -> np.ndarray:
    """a_j = j c_j(g) c_j(sigma) for j = 1..K (index j - 1), the power series of drift/(1-m^2)."""
    cg = hermite_coefficients(link, K)
    cs = hermite_coefficients(student, K)
    j = np.arange(1, K + 1)
    return j * cg[1:] * cs[1:]


def drift(m, link, student=None, *, K: int = 8):
    r"""Noise-free population drift of the overlap per unit step size, on the sphere:

    .. math:: \mathrm{drift}(m) = (1 - m^2) \sum_{j=1}^{K} j\, c_j(g)\, c_j(\sigma)\, m^{j-1},

    with :math:`c_j` the orthonormal Hermite coefficients (``hermite_coefficients(.., K)``),
    :math:`g` = ``link`` (target) and :math:`\sigma` = ``student`` (default: the target link).
    Valid for the square loss with 1/2 and for the correlation loss (identical on the sphere).
    Exact for polynomial links of degree :math:`\le K`; for other links it is the Mehler series
    truncated at order K. Vectorised over ``m``.
    """
    g = _fn(link, "link")
    s = g if student is None else _fn(student, "student")
    a = _drift_coeffs(g, s, int(K))
    m = np.asarray(m, dtype=np.float64)
    # Horner in m for sum_j a_j m^{j-1}
    acc = np.zeros_like(m)
    for aj in a[::-1]:
        acc = acc * m + aj
    return (1.0 - m * m) * acc


def _evaluate(fn: Fn, x: np.ndarray) -> np.ndarray:
    """fn(x) as float64 numpy; Hermite-series links are summed in numpy (same recurrence)."""
    x = np.asarray(x, dtype=np.float64)
    if fn.coeffs is not None:
        c = fn.coeffs
        h_prev, h = np.zeros_like(x), np.ones_like(x)
        acc = c[0] * h
        for n in range(1, len(c)):
            h_prev, h = h, (x * h - math.sqrt(n - 1) * h_prev) / math.sqrt(n)
            if c[n] != 0.0:
                acc = acc + c[n] * h
        return acc
    return np.asarray(fn(jnp.asarray(x, dtype=jnp.float64)), dtype=np.float64)


@functools.lru_cache(maxsize=128)
def _student_on_nodes(student: Fn, n: int) -> tuple[np.ndarray, np.ndarray]:
    z, _ = gauss_hermite(n)
    return _evaluate(student, z), np.asarray(student.deriv(jnp.asarray(z)), dtype=np.float64)


def V(m, link, student=None, *, loss: str = "square", noise: float = 0.0, nodes: int = _V_NODES):
    r"""Second moment of the per-sample field derivative :math:`c = -\partial\ell/\partial\lambda`:

    .. math::
        V(m) = E[(\sigma(u) - y)^2 \sigma'(u)^2] \ \text{(square)}, \qquad
        V(m) = E[y^2 \sigma'(u)^2] \ \text{(correlation)},

    with :math:`(u, v)` standard Gaussians of correlation :math:`m`, :math:`y = g(v) + \text{noise}\,\xi`,
    :math:`\xi \sim N(0,1)` independent (so the noise adds :math:`\text{noise}^2 E[\sigma'(u)^2]`).
    Computed with a tensor Gauss–Hermite rule of ``nodes`` points per axis on
    :math:`u = z_1`, :math:`v = m z_1 + \sqrt{1-m^2} z_2`: exact for polynomial links when the
    integrand degree is at most :math:`2\,\text{nodes} - 1` per axis (60 nodes: degree 119).
    For kinked links (relu, sign, abs) the rule converges only algebraically in the node count
    and :math:`\sigma'` is the a.e. derivative (sign has :math:`\sigma' = 0`, hence V = 0).
    Vectorised over ``m``.
    """
    if loss not in _LOSSES:
        raise ValueError(f"loss: got {loss!r}; allowed: 'square' or 'correlation'")
    g = _fn(link, "link")
    s = g if student is None else _fn(student, "student")
    z, w = gauss_hermite(int(nodes))
    su, dsu = _student_on_nodes(s, int(nodes))
    m = np.asarray(m, dtype=np.float64)
    shape = m.shape
    mf = m.reshape(-1)
    v = (
        mf[:, None, None] * z[None, :, None]
        + np.sqrt(np.clip(1.0 - mf * mf, 0.0, None))[:, None, None] * z[None, None, :]
    )
    gv = _evaluate(g, v)  # (M, N1, N2): axis 1 is u = z1
    d2 = (dsu * dsu)[None, :, None]
    if loss == "square":
        integrand = (su[None, :, None] - gv) ** 2 * d2
    else:
        integrand = gv**2 * d2
    out = np.einsum("i,j,mij->m", w, w, integrand) + noise**2 * float(np.dot(w, dsu * dsu))
    return out.reshape(shape)


def _check_loss_noise(loss, noise):
    if loss not in _LOSSES:
        raise ValueError(f"loss: got {loss!r}; allowed: 'square' or 'correlation'")
    if not (noise >= 0):
        raise ValueError(f"noise: got {noise!r}; allowed: a number >= 0")


def effective_drift(m, lr, d, link, student=None, *, loss: str = "square", noise: float = 0.0, K: int = 8):
    r"""Effective drift of the overlap per SGD step (Ben Arous, Gheissari, Jagannath 2021):

    .. math:: \frac{dm}{dk} = \eta\, \mathrm{drift}(m) - \frac{\eta^2 d}{2}\, m\, V(m).

    The first term is the population gradient flow (:func:`drift`), the second the systematic
    shrinkage of the overlap by renormalisation onto the sphere (:func:`V`). Vectorised over m.
    """
    _check_loss_noise(loss, noise)
    m = np.asarray(m, dtype=np.float64)
    return lr * drift(m, link, student, K=K) - 0.5 * lr * lr * d * m * V(m, link, student, loss=loss, noise=noise)


def _check_interval(m0, m1):
    if not (0.0 <= m0 < m1 < 1.0):
        raise ValueError(f"need 0 <= m0 < m1 < 1; got m0={m0!r}, m1={m1!r}")


def _grid(m0: float, m1: float, n: int = 2001) -> np.ndarray:
    lin = np.linspace(m0, m1, n)
    if m0 > 0:
        lin = np.union1d(lin, np.geomspace(m0, m1, n))
    return lin


def escape_integral(link, m0: float, m1: float, student=None, *, K: int = 8) -> float:
    r"""Noise-free, first-order escape "time" in units of the step size:

    .. math:: \eta\, T = \int_{m_0}^{m_1} \frac{dm}{\mathrm{drift}(m)} .

    The number of SGD steps from :math:`m_0` to :math:`m_1` in the :math:`d \to \infty` limit at
    fixed :math:`\eta` (no renormalisation term) is this divided by :math:`\eta`. Returns ``inf``
    when the drift is not positive somewhere on :math:`[m_0, m_1]` (the flow never arrives).
    For ``h3`` (:math:`\mathrm{drift} = 3 m^2 (1-m^2)`) it equals
    :math:`[-1/(3m) + \tfrac16 \ln\frac{1+m}{1-m}]_{m_0}^{m_1}`.
    """
    m0, m1 = float(m0), float(m1)
    _check_interval(m0, m1)
    grid = _grid(m0, m1)
    if np.any(drift(grid, link, student, K=K) <= 0):
        return math.inf
    val, _ = scipy.integrate.quad(
        lambda m: 1.0 / float(drift(m, link, student, K=K)), m0, m1, epsabs=0.0, epsrel=1e-12, limit=500
    )
    return float(val)


def escape_steps_effective(
    link,
    m0: float,
    m1: float,
    lr: float,
    d: float,
    student=None,
    *,
    loss: str = "square",
    noise: float = 0.0,
    K: int = 8,
) -> float:
    r"""Steps for the effective dynamics :func:`effective_drift` to go from :math:`m_0` to :math:`m_1`:

    .. math:: T = \int_{m_0}^{m_1} \frac{dm}{\eta\,\mathrm{drift}(m) - \tfrac{\eta^2 d}{2} m V(m)} .

    ``inf`` when the effective drift is :math:`\le 0` somewhere on :math:`[m_0, m_1]` (checked on a
    dense linear plus geometric grid): the overlap is then trapped below :math:`m_1`. A
    continuous-time count; the ODE engine reports the first integer step after the crossing.
    """
    m0, m1 = float(m0), float(m1)
    _check_interval(m0, m1)
    if not _escapes(link, m0, m1, lr, d, student, loss, noise, K):
        return math.inf
    val, _ = scipy.integrate.quad(
        lambda m: 1.0 / float(effective_drift(m, lr, d, link, student, loss=loss, noise=noise, K=K)),
        m0,
        m1,
        epsabs=0.0,
        epsrel=1e-10,
        limit=500,
    )
    return float(val)


@functools.lru_cache(maxsize=64)
def _grid_terms(g: Fn, s: Fn, m0: float, m1: float, loss: str, noise: float, K: int):
    """(drift, m V(m)) on the positivity-check grid; they do not depend on lr or d."""
    grid = _grid(m0, m1)
    return drift(grid, g, s, K=K), grid * V(grid, g, s, loss=loss, noise=noise)


def _escapes(link, m0, m1, lr, d, student, loss, noise, K) -> bool:
    g = _fn(link, "link")
    s = g if student is None else _fn(student, "student")
    dr, mv = _grid_terms(g, s, float(m0), float(m1), loss, float(noise), int(K))
    return bool(np.all(lr * dr - 0.5 * lr * lr * d * mv > 0))


def _exponent_and_ck(link, student, K):
    g = _fn(link, "link")
    s = g if student is None else _fn(student, "student")
    k = information_exponent(g, s, K=K)
    if k is None:
        raise ValueError(f"link {g.name!r} has no Hermite coefficient shared with student {s.name!r} up to K={K}")
    ck = float(hermite_coefficients(g, K)[k] * hermite_coefficients(s, K)[k])
    return k, ck


def critical_overlap(
    link, lr: float, d: float, student=None, *, loss: str = "square", noise: float = 0.0, K: int = 8
) -> float:
    r"""Critical overlap below which the equator attracts, for information exponent :math:`k \ge 3`:

    .. math:: m_c = \left(\frac{\eta\, d\, V(0)}{2 k |c_k|}\right)^{1/(k-2)}, \qquad c_k = c_k(g)\, c_k(\sigma),

    :math:`k` the information exponent of ``link`` w.r.t. ``student`` (default: the link). This is
    the leading small-:math:`m` balance of :func:`effective_drift` (it ignores the
    :math:`(1 - m^2)` factor, higher Hermite terms and the :math:`m`-dependence of V). For odd
    :math:`k` with :math:`c_k < 0` the escape is towards negative :math:`m`; :math:`|c_k|` is used.
    Raises ``ValueError`` for :math:`k < 3` (k = 1: no trapping; k = 2: a step-size threshold,
    see :func:`critical_delta`).
    """
    _check_loss_noise(loss, noise)
    k, ck = _exponent_and_ck(link, student, K)
    if k < 3:
        raise ValueError(f"critical_overlap needs information exponent k >= 3; got k={k}")
    V0 = float(V(0.0, link, student, loss=loss, noise=noise))
    return (lr * d * V0 / (2.0 * k * abs(ck))) ** (1.0 / (k - 2))


def critical_lr_closed_form(
    link, m0: float, d: float, student=None, *, loss: str = "square", noise: float = 0.0, K: int = 8
) -> float:
    r"""Inverse of :func:`critical_overlap` in the step size: :math:`\eta_c = 2 k |c_k| m_0^{k-2} / (d V(0))`.

    For :math:`k = 2` this is :math:`4 |c_2| / (d V(0))` (independent of :math:`m_0`); for
    :math:`k = 1` there is no threshold at this order (``inf``).
    """
    _check_loss_noise(loss, noise)
    k, ck = _exponent_and_ck(link, student, K)
    if k == 1:
        return math.inf
    V0 = float(V(0.0, link, student, loss=loss, noise=noise))
    return 2.0 * k * abs(ck) * float(m0) ** (k - 2) / (d * V0)


def critical_lr(
    link,
    m0: float,
    d: float,
    student=None,
    *,
    m1: float = 0.5,
    loss: str = "square",
    noise: float = 0.0,
    K: int = 8,
    rtol: float = 1e-6,
) -> float:
    r"""Largest step size for which the effective dynamics escape from :math:`m_0` to :math:`m_1`:
    the supremum of :math:`\eta` with :math:`\eta\,\mathrm{drift}(m) > \tfrac{\eta^2 d}{2} m V(m)` on
    :math:`[m_0, m_1]`, i.e. :math:`\eta_c = \min_{m \in [m_0, m_1]} 2\,\mathrm{drift}(m) / (d\, m V(m))`.

    Found by bisection (in :math:`\log\eta`, relative tolerance ``rtol``) on the finiteness of
    :func:`escape_steps_effective`. To leading order in small :math:`m_0` it equals
    :func:`critical_lr_closed_form`, the inverse of :func:`critical_overlap`. ``inf`` when every
    step size escapes (no upper bound found below :math:`10^{6}/d`); 0 when none does.
    """
    _check_interval(float(m0), float(m1))

    def ok(lr):
        return _escapes(link, float(m0), float(m1), lr, d, student, loss, noise, K)

    lo = 1e-12 / d
    if not ok(lo):
        return 0.0
    hi = lo
    while ok(hi):
        hi *= 4.0
        if hi > 1e6 / d:
            return math.inf
    lo = hi / 4.0
    while hi / lo - 1.0 > rtol:
        mid = math.sqrt(lo * hi)
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return math.sqrt(lo * hi)


def critical_delta(link, student=None, *, loss: str = "square", noise: float = 0.0, K: int = 8) -> float:
    r"""Largest :math:`\delta` for which :func:`theory_lr` escapes from the typical random start
    :math:`m_0 = d^{-1/2}` (leading order): with :math:`\eta = \delta d^{-k/2}` (:math:`k \ge 3`) or
    :math:`\eta = \delta/d` (:math:`k = 2`) the condition :math:`\eta < \eta_c(m_0)` reads

    .. math:: \delta < \delta_c = \frac{2 k |c_k|}{V(0)},

    independent of :math:`d`. For ``h3`` with the square loss :math:`V(0) = 96`, so
    :math:`\delta_c = 1/16`. ``inf`` for :math:`k = 1`.
    """
    _check_loss_noise(loss, noise)
    k, ck = _exponent_and_ck(link, student, K)
    if k == 1:
        return math.inf
    V0 = float(V(0.0, link, student, loss=loss, noise=noise))
    return 2.0 * k * abs(ck) / V0


def theory_lr(k: int, d: float, delta: float, *, log_step: bool = True) -> float:
    r"""Per-sample step size of the theory scaling (Ben Arous, Gheissari, Jagannath 2021), batch 1:

    - :math:`k = 1`: :math:`\eta = \delta / d` (samples to escape :math:`\sim d`);
    - :math:`k = 2`: :math:`\eta = \delta / (d \log d)` (``log_step=True``, the BAGJ step
      condition :math:`\delta_N = O(1/\log N)` with step :math:`\delta_N / N`), or :math:`\eta = \delta/d`
      (``log_step=False``). The search phase grows :math:`m` exponentially at rate
      :math:`\approx 2 c_2 \eta` per step from :math:`d^{-1/2}`, so it takes
      :math:`\approx \log d / (4 c_2 \eta)` steps: :math:`d \log d` samples with :math:`\eta = \delta/d`,
      :math:`d \log^2 d` with :math:`\eta = \delta / (d \log d)`;
    - :math:`k \ge 3`: :math:`\eta = \delta\, d^{-k/2}` (samples :math:`\sim d^{k-1}`).

    :math:`\delta` must be below :func:`critical_delta` of the link (for :math:`k \ge 2`) or the
    renormalisation term traps the overlap at the equator. ``log`` is the natural logarithm.
    """
    k = int(k)
    if k < 1:
        raise ValueError(f"k: got {k}; allowed: an integer >= 1")
    if d <= 1:
        raise ValueError(f"d: got {d!r}; allowed: > 1")
    if k == 1:
        return delta / d
    if k == 2:
        return delta / (d * math.log(d)) if log_step else delta / d
    return delta * d ** (-k / 2.0)
