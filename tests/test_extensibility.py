"""A new activation, target and loss, defined inline, run on all three engines untouched."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import scipy.stats as ss

from sgdlab import ODE, Chain, Full, Problem, Student, Training, run


def softsign_sine(z):
    return z / (1 + jnp.abs(z)) + 0.5 * jnp.sin(z)


def test_inline_activation_target_and_loss_run_on_every_engine():
    """No engine knows these functions. Chain and full agree in law (KS on the final
    overlap, 300 seeds each) and the ODE follows the chain's mean. Catches an engine that
    dispatches on activation names or silently ignores a custom loss."""
    pb = Problem(d=60, directions=2, function=lambda nu: jnp.tanh(nu[..., 0]) * nu[..., 1] + nu[..., 0])
    st = Student(width=2, activation=softsign_sine, second_layer="trained", output_scale="sum", a0=0.5)
    loss = lambda f, y: 0.5 * (f - y) ** 2 + 0.05 * (f - y) ** 4
    tr = Training(loss=loss, lr=0.01, steps=150, record_every=50, init=0.2)
    ch = run(pb, st, tr, engine=Chain(), seeds=300, seed=1)
    fu = run(pb, st, tr, engine=Full(dtype="float64"), seeds=300, seed=2)
    od = run(pb, st, tr, engine=ODE())
    for res in (ch, fu, od):
        assert np.isfinite(res.M).all() and np.isfinite(res.risk).all()
        assert np.isnan(res.diverged_step).all()
    # the run moved: the overlap with direction 0 grew markedly
    assert ch.M[:, -1, 0, 0].mean() > 0.3
    pvals = [ss.ks_2samp(ch.M[:, -1, i, j], fu.M[:, -1, i, j]).pvalue for i in range(2) for j in range(2)]
    assert min(pvals) > 0.001 / 4, pvals
    se = ch.M[:, -1].std(axis=0) / math.sqrt(300)
    assert (np.abs(od.M[0, -1] - ch.M[:, -1].mean(axis=0)) < 6 * se + 0.02).all()
