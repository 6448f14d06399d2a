"""The Fourier data model (sgdlab.fourier); its quick reproduction: test_fourier_reproduction.py.

Generator invariants (Ricci, Merger, Goldt 2026): with fixed amplitudes every input of both classes
has the same power spectrum; the classes have the same covariance; the random sign makes the odd
moments vanish; a classifier on amplitudes alone is at chance; the classes still differ at fourth
order. Statistical tolerances are z-scores from the sample's own standard errors, with fixed keys
(deterministic). Each test names the planted bug it catches, and most check that the bug is caught.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from typer.testing import CliRunner

from sgdlab import ODE, Chain, Full, Problem, Student, Training, run
from sgdlab import fourier as F
from sgdlab.cli import app

KEY = jax.random.key(2026)


def _phases(law, n, key=KEY):
    amp, ph = jax.jit(law.polar, static_argnums=(1, 2))(key, n, jnp.float64)
    return np.asarray(amp), np.asarray(ph)


def _pixels(law, n, key=KEY):
    """n inputs of ``law`` in pixels, float64 (compiled once rather than op by op)."""
    return np.asarray(jax.jit(law.pixels, static_argnums=(1, 2))(key, n, jnp.float64))


def _fn(sampler, n, key=KEY):
    x, c = jax.jit(sampler.fn, static_argnums=(1, 2))(key, n, 0)
    return np.asarray(x), np.asarray(c)


# ----------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("shape", [(16,), (15,), (8, 8), (6, 5)])
def test_fourier_basis_is_orthonormal_and_real(shape):
    """The Fourier coordinates are an orthonormal basis of real signals: B B^T = I, pixels ->
    coordinates -> pixels is the identity, and the spectrum of every coordinate vector is Hermitian
    (X_-k = conj X_k; DC and Nyquist real) with the pixels its exact inverse DFT. Planted bug: a
    missing sqrt(2) on the pair coordinates, or a partner table that maps k to itself."""
    g = F.Grid(shape)
    B = g.to_pixels(np.eye(g.N))
    np.testing.assert_allclose(B @ B.T, np.eye(g.N), atol=1e-12)
    xi = np.random.default_rng(0).standard_normal((5, g.N))
    np.testing.assert_allclose(g.to_coordinates(g.to_pixels(xi)), xi, atol=1e-12)
    X = g.spectrum_of(xi).reshape((5, *shape))
    full = np.fft.ifftn(X, axes=tuple(range(1, len(shape) + 1))).reshape(5, g.N)
    assert np.abs(full.imag).max() < 1e-12
    np.testing.assert_allclose(full.real, g.to_pixels(xi), atol=1e-12)
    # DC and Nyquist phases of every law are 0 or pi
    for law in (F.Noise(shape, 1.0), F.Template(shape, 0.5, band=2.0, jitter=0.3)):
        _, ph = _phases(law, 200)
        sc = np.abs(np.sin(ph[:, g.self_conjugate]))
        assert sc.max() < 1e-12


# ----------------------------------------------------------------------------- invariants


@pytest.mark.parametrize("shape, alpha", [((32,), 0.0), ((32,), 1.0), ((8, 8), 0.7)])
def test_fixed_amplitudes_give_every_input_the_same_power_spectrum(shape, alpha):
    """With fixed amplitudes every input of both classes has |X_k|^2 = N S_k (S ~ |k|^-alpha, mean 1)
    and |x|^2 = N exactly, so anything computed from amplitudes alone is at chance. Planted bugs: a
    structured class with amplitudes of its own (alpha differs: caught below), a uniform phase
    on a self-conjugate frequency (its coordinate A cos(phi) loses amplitude)."""
    g = F.Grid(shape)
    S = F.power_spectrum(g, alpha)
    assert abs(np.sum(np.where(g.self_conjugate, 1, 2) * S) - g.N) < 1e-9
    target = np.sqrt(g.N * S)
    laws = (F.Noise(shape, alpha), F.Template(shape, alpha, band=3.0), F.Template(shape, alpha),
            F.Template(shape, alpha, template="edge", jitter=0.5))
    for law in laws:
        x = _pixels(law, 500, KEY)
        X = np.abs(np.fft.fftn(x.reshape((500, *shape)), axes=tuple(range(1, len(shape) + 1)))).reshape(500, -1)
        np.testing.assert_allclose(X[:, g.tables["flat"]], np.broadcast_to(target, (500, g.freqs)), rtol=1e-9)
        np.testing.assert_allclose(np.sum(x**2, axis=1), g.N, rtol=1e-12)
    bad = _pixels(F.Template(shape, alpha + 0.5), 10, KEY)
    Xb = np.abs(np.fft.fftn(bad.reshape((10, *shape)), axes=tuple(range(1, len(shape) + 1)))).reshape(10, -1)
    assert np.abs(Xb[:, g.tables["flat"]] - target).max() > 0.1  # the planted bug is seen


def _cov_z(x1, x2):
    """max over entries of |C1 - C2| / SE for two samples of zero-mean vectors."""
    def cov_se(x):
        prod = x[:, :, None] * x[:, None, :]
        return prod.mean(0), prod.std(0) / math.sqrt(len(x))

    (c1, s1), (c2, s2) = cov_se(x1), cov_se(x2)
    iu = np.triu_indices(x1.shape[1])
    return float(np.max(np.abs(c1 - c2)[iu] / np.hypot(s1, s2)[iu]))


def test_the_classes_have_equal_covariance_in_law():
    """Template and noise class have the same pixel covariance circ(S) (the shift averages the
    template out), for fixed and Rayleigh amplitudes and for the spiked-cumulant class: every
    entry within 5 standard errors over 30000 inputs per class (N = 12, alpha = 1). Planted bug:
    no random shift (a template at a fixed position): caught at z > 20."""
    n, shape, alpha = 30_000, (12,), 1.0
    k1, k2 = jax.random.split(KEY)
    noise = _pixels(F.Noise(shape, alpha), n, k1)
    for law in (F.Template(shape, alpha, band=4.0), F.Template(shape, alpha, "rayleigh", template="edge"),
                F.SpikedCumulant(shape, alpha, beta=4.0)):
        z = _cov_z(_pixels(law, n, k2), noise)
        assert z < 5.0, (law.name, z)
    fixed = _pixels(F.Template(shape, alpha, band=4.0, shift=False), n, k2)
    assert _cov_z(fixed, noise) > 20.0


def test_odd_moments_vanish_with_the_sign_and_fourth_order_differs():
    """With the random global sign the structured class has E cos(phi_1 + phi_2 - phi_3) = 0 (its
    bispectrum) and zero pixel third moments (|z| < 4 over 40000 inputs), while its trispectrum
    E cos(phi_1 + phi_3 - 2 phi_2) is 1 against 0 for the noise class: the classes first differ at
    fourth order. Planted bugs: a missing sign (sign=False: bispectrum 1, third moment z > 20);
    a structured class equal to noise (no fourth-order difference)."""
    n, N = 40_000, 32
    tpl, nos = F.Template((N,), 0.0, band=4.0), F.Noise((N,), 0.0)
    _, ph = _phases(tpl, n)
    _, phn = _phases(nos, n)
    se = 1.0 / math.sqrt(n)
    bis = np.cos(ph[:, 1] + ph[:, 2] - ph[:, 3])
    assert abs(bis.mean()) < 4 * bis.std() * se
    x = _pixels(tpl, n, KEY)
    m3 = np.mean(x**3, axis=1)
    assert abs(m3.mean()) < 4 * m3.std() * se
    tri = np.cos(ph[:, 1] + ph[:, 3] - 2 * ph[:, 2])
    tri_n = np.cos(phn[:, 1] + phn[:, 3] - 2 * phn[:, 2])
    assert abs(tri.mean() - 1.0) < 1e-9 and abs(tri_n.mean()) < 4 * tri_n.std() * se
    nosign = F.Template((N,), 0.0, band=4.0, sign=False)
    _, ph0 = _phases(nosign, n)
    assert np.cos(ph0[:, 1] + ph0[:, 2] - ph0[:, 3]).mean() > 0.99
    m3b = np.mean(_pixels(nosign, n, KEY) ** 3, axis=1)
    assert abs(m3b.mean()) > 20 * m3b.std() * se


def test_a_classifier_on_amplitudes_alone_is_at_chance():
    """Rayleigh amplitudes (the noise class exactly Gaussian): a least-squares linear classifier on
    the log-amplitudes of every frequency, fit on 20000 inputs, scores within 4 standard errors of
    1/2 on 20000 others (N = 32, alpha = 1). Planted bug: the structured class with a spectrum of its
    own (alpha + 0.3), which the same classifier separates (accuracy > 0.5 + 10 SE)."""
    n, N = 20_000, 32

    def accuracy(pos, neg):
        def data(key):
            x, c = _fn(F.two_class(pos, neg, dtype="float64"), 2 * n, key)
            amp, _ = pos.grid.to_polar(x)
            return np.column_stack([np.log(amp + 1e-300), np.ones(2 * n)]), 2.0 * np.asarray(c) - 1
        ka, kb = jax.random.split(KEY)
        (A, y), (B, yb) = data(ka), data(kb)
        w = np.linalg.lstsq(A, y, rcond=None)[0]
        return float(np.mean(np.sign(B @ w) == yb))

    se = 0.5 / math.sqrt(2 * n)
    acc = accuracy(F.Template((N,), 1.0, "rayleigh", band=4.0), F.Noise((N,), 1.0, "rayleigh"))
    assert abs(acc - 0.5) < 4 * se, acc
    assert accuracy(F.Template((N,), 1.3, "rayleigh", band=4.0), F.Noise((N,), 1.0, "rayleigh")) > 0.5 + 10 * se


def test_rayleigh_amplitudes_normalise_the_norm_and_make_the_noise_gaussian():
    """E|x|^2 = N for Rayleigh amplitudes, and every pixel of the Rayleigh noise class is N(0, S-sum)
    (excess kurtosis within 4 SE of 0, N = 16, 40000 inputs). Planted bug: Rayleigh amplitudes with
    E rho^2 = 2 (E|x|^2 = 2N), or fixed amplitudes for the noise (kurtosis < 3)."""
    n, N = 40_000, 16
    x = _pixels(F.Noise((N,), 0.5, "rayleigh"), n, KEY)
    n2 = np.sum(x**2, axis=1)
    assert abs(n2.mean() - N) < 4 * n2.std() / math.sqrt(n)
    k = np.mean(x**4, axis=0) / np.mean(x**2, axis=0) ** 2 - 3.0
    assert np.max(np.abs(k)) < 4 * math.sqrt(24.0 / n) * 1.5  # SE of excess kurtosis ~ sqrt(24/n)
    xf = _pixels(F.Noise((N,), 0.5), n, KEY)
    kf = np.mean(xf**4, axis=0) / np.mean(xf**2, axis=0) ** 2 - 3.0
    assert np.all(kf < -0.05)  # fixed amplitudes: sub-Gaussian, as it should be


# ----------------------------------------------------------------------------- transforms


def test_transforms_keep_what_they_promise():
    """phase_scramble keeps every amplitude and redraws the phases; whiten_amplitudes sets the
    amplitudes to the target spectrum and keeps the phases; swap exchanges amplitudes and phases;
    spectral_slope recovers alpha exactly from fixed amplitudes (1-D and 2-D) and within 0.1 on
    average from Rayleigh ones. Planted bugs: a scramble that also changes amplitudes, a slope fit
    on amplitudes instead of powers (alpha / 2)."""
    for shape in ((32,), (12, 12)):
        g = F.Grid(shape)
        x1 = _pixels(F.Template(shape, 1.0, "rayleigh", band=3.0), 50, KEY)
        x2 = _pixels(F.Noise(shape, 0.0, "rayleigh"), 50, jax.random.key(1))
        a1, p1 = g.to_polar(g.to_coordinates(x1))
        a2, p2 = g.to_polar(g.to_coordinates(x2))
        xs = np.asarray(F.phase_scramble(jax.random.key(3), x1, g))
        as_, ps = g.to_polar(g.to_coordinates(xs))
        np.testing.assert_allclose(as_, a1, atol=1e-10)
        assert np.mean(np.abs(np.cos(ps - p1)[:, ~g.self_conjugate]) > 0.999) < 0.05
        xw = F.whiten_amplitudes(x1, g, alpha=0.4)
        aw, pw = g.to_polar(g.to_coordinates(xw))
        np.testing.assert_allclose(aw, np.broadcast_to(np.sqrt(F.power_spectrum(g, 0.4)), aw.shape), atol=1e-10)
        keep = a1 > 1e-8
        np.testing.assert_allclose(np.cos(pw - p1)[keep], 1.0, atol=1e-8)
        y1, y2 = F.swap_amplitudes_phases(x1, x2, g)
        ay1, py1 = g.to_polar(g.to_coordinates(y1))
        np.testing.assert_allclose(ay1, a1, atol=1e-10)
        np.testing.assert_allclose(np.cos(py1 - p2)[a1 > 1e-8], 1.0, atol=1e-8)
        for alpha in (0.0, 1.3):
            xf = _pixels(F.Noise(shape, alpha), 3, KEY)
            np.testing.assert_allclose(F.spectral_slope(xf, g), alpha, atol=1e-9)
        xr = _pixels(F.Noise(shape, 1.3, "rayleigh"), 200, KEY)
        assert abs(F.spectral_slope(xr, g).mean() - 1.3) < 0.1


# ----------------------------------------------------------------------------- order parameters


def test_order_parameters_in_fourier_space():
    """template_alignment is 1 for the template's coherent part at any shift and sign, ~sqrt(2 log N
    / N)-small for random weights; IPR is 1 for one pixel and 1/N for a flat vector; the weight
    spectrum puts a pure mode's power in its |k| bin; low_frequency_fraction counts 0 < |k| <= k_low.
    Planted bug: an alignment without the maximum over shifts (0.29 at shift 5 here)."""
    N = 64
    law = F.Template((N,), 0.0, band=4.0)
    for tau in (0, 5, 37):
        p = law.pattern(shift=(tau,))
        assert abs(F.template_alignment(p, law) - 1.0) < 1e-9
        assert abs(F.template_alignment(-p, law) - 1.0) < 1e-9
    rand = np.random.default_rng(0).standard_normal((200, N))
    assert np.median(F.template_alignment(rand, law)) < 0.6
    g = law.grid
    delta = g.to_coordinates(np.eye(N)[3])
    assert abs(F.ipr(delta, g) - 1.0) < 1e-9 and abs(F.ipr(g.to_coordinates(np.ones(N)), g) - 1.0 / N) < 1e-9
    mode = np.zeros(N)
    mode[g.tables["re_pos"][7]] = 1.0  # the cosine of |k| = 7
    bins, sp = F.weight_spectrum(mode, g)
    assert sp[7] == pytest.approx(1.0) and sp.sum() == pytest.approx(1.0)
    assert F.low_frequency_fraction(mode, g, 7) == pytest.approx(1.0)
    assert F.low_frequency_fraction(mode, g, 6) == pytest.approx(0.0)


def test_accuracy_matches_a_numpy_reference():
    """F.accuracy of 300 four-unit committees against numpy, to the last count. Planted bug: the
    jax.vmap-over-students formulation, which XLA on CPU miscounted here (up to 40% of the signs)."""
    rng = np.random.default_rng(0)
    st = Student(width=4, activation=F.bump_activation, a0=0.2)
    W = rng.standard_normal((3, 100, 4, 32))
    W /= np.linalg.norm(W, axis=-1, keepdims=True)
    a = np.full((3, 100, 4), 0.2)
    x = rng.standard_normal((5000, 32)).astype(np.float32)
    y = np.sign(rng.standard_normal(5000))
    lam = np.einsum("srpn,tn->srtp", W.astype(np.float32), x)
    f = 0.25 * np.sum(0.2 * (np.exp(-0.5 * lam**2) - 2**-0.5), -1)
    ref = np.mean(np.sign(f) == y, axis=-1)
    np.testing.assert_allclose(F.accuracy(W, a, st, x, y), ref, atol=2.0 / 5000)


# ----------------------------------------------------------------------------- engines


def test_the_fourier_sampler_runs_on_full_only_and_records_the_whole_weight():
    """The two-class sampler runs on the full engine, whose recorded M is then the whole weight
    vector (unit norm on the sphere); chain and ODE refuse it with one line naming the law. The
    pixel and Fourier bases give the same inputs for the same key (x = B xi). Planted bugs: a
    chain that runs the sampler as if Gaussian; a pixel sampler without the basis change."""
    N = 16
    law = F.Template((N,), 0.0, band=4.0)
    smp = F.two_class(law)
    assert F.two_class(law) is smp  # equal arguments: one sampler, one compilation
    pb = Problem(d=N, function=F.pm_label, data=smp)
    st = Student(activation=F.bump_activation, a0=0.2)
    tr = Training(lr=0.01, steps=40, record_every=20, spherical=True, escape_threshold=2.0)
    res = run(pb, st, tr, engine=Full(), seeds=3)
    assert res.M.shape == (3, 3, 1, N)
    np.testing.assert_allclose(np.linalg.norm(res.M, axis=-1), 1.0, atol=1e-5)
    assert np.all(np.isnan(res.risk)) and "not Gaussian" in res.info["risk"]
    x, c = _fn(smp, 256)
    obs = F.observables(res, st, law, test=(x, 2.0 * c - 1))
    assert obs["accuracy"].shape == (3, 3) and obs["alignment"].shape == (3, 3, 1)
    assert obs["spectrum"].shape == (3, 3, 1, len(obs["bins"])) and float(obs["k_low"]) == 4.0
    for eng, name in ((Chain(), "chain"), (ODE(), "ode")):
        with pytest.raises(ValueError) as err:
            run(pb, st, tr, engine=eng)
        msg = str(err.value)
        assert "\n" not in msg and msg == f"data: got {smp.label!r}; allowed on engine {name!r}: Gaussian data laws"
    xf, cf = _fn(smp, 64)
    xp, cp = _fn(F.two_class(law, basis="pixel"), 64)
    np.testing.assert_array_equal(cf, cp)
    np.testing.assert_allclose(xp, law.grid.to_pixels(xf), atol=1e-5)


@pytest.mark.parametrize("make, field", [
    (lambda: F.Grid((3,)), "fourier.shape"),
    (lambda: F.Noise((16,), -1.0), "fourier.alpha"),
    (lambda: F.Noise((16,), 0.0, "gaussian"), "fourier.amplitudes"),
    (lambda: F.Template((16,), band=0.5), "fourier.band"),
    (lambda: F.Template((16,), template="star"), "fourier.template"),
    (lambda: F.Template((16,), template=np.ones(5)), "fourier.template"),
    (lambda: F.two_class(F.Template((16,)), F.Noise((8,))), "fourier.negative"),
    (lambda: F.two_class(F.Template((16,)), basis="fft"), "fourier.basis"),
])
def test_bad_input_is_one_line_naming_the_field(make, field):
    """Invalid laws fail at construction with ``field: got VALUE; allowed: WHAT``. Planted bug: a
    silent default (a band below 1 coherent nowhere, a template of the wrong size broadcast)."""
    with pytest.raises(ValueError) as err:
        make()
    msg = str(err.value)
    assert msg.startswith(f"{field}: got ") and "; allowed: " in msg and "\n" not in msg


def test_reproduce_fourier_refuses_the_chain_in_one_line(tmp_path):
    """`sgdlab reproduce fourier --engine chain` exits 2 with one line: the inputs are not Gaussian.
    Planted bug: the CLI default engine (chain) forced on a reproduction that cannot use it."""
    r = CliRunner().invoke(app, ["reproduce", "fourier", "--quick", "--engine", "chain", "--store",
                                 str(tmp_path / "s"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --engine: got 'chain'; allowed: 'full'")

