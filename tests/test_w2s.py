"""Weak-to-strong fine-tuning (sgdlab.w2s) and ``sgdlab reproduce w2s --quick``.

The quick reproduction asserts the issue's claims as far as the reconstruction shows them: weak
labels equal to the ground truth make W2S and SFT the same process bit for bit; the chain agrees
with the full simulation in law on a small W2S run; SFT forgets more at rho = 0.8 than at rho = 0;
W2S with the weak noise inside V_kappa retains the off-target energy at least as well as SFT
(paired), while a weak model with a spurious feature outside the strong model's subspaces makes
W2S forget more; the ODE follows the chain's mean. Labels equal to the strong model's own outputs
give zero drift on the ODE and only O(lr^2) motion on the chain (checked against the lr^2 term in
closed form). The pieces (frame, pre-trained state, errors) are checked against independent Monte
Carlo. Each test names the planted bug it catches.
"""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgdlab import w2s as W
from sgdlab.reproduce import w2s as R

TASKS = W.Tasks(K=2, r=3, rho=0.8, spare=1)
STRONG = W.Strong(per_task=3)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("w2s")
    res = R.reproduce(quick=True, store=out / "store", out=out / "quick")
    return out / "quick", res.summary


def _mc_error(tasks, strong, M, head, b, n=400_000, seed=0):
    """Monte Carlo of E[(s head . sigma(M s) - g(b . s))^2] / 2 for rows M inside the frame."""
    rng = np.random.default_rng(seed)
    s = rng.normal(size=(n, tasks.a))
    f = strong.scale(tasks) * np.asarray(strong.activation(jnp.asarray(s @ M.T))) @ head
    y = np.asarray(tasks.link(jnp.asarray(s @ b)))
    e = 0.5 * (f - y) ** 2
    return e.mean(), e.std() / math.sqrt(n)


# ----------------------------------------------------------------------------- the pieces


def test_frame_subspaces_and_correlation():
    """V_k have orthonormal bases, beta_k in V_k, beta_k . beta_kappa = rho, V_k orthogonal to V_kappa
    at rho = 0, the spare direction outside every V_k. Planted bug: b_k = rho e_0 + (1 - rho) e_kr
    (not unit), or the spare direction inside V_kappa."""
    for rho in (0.0, 0.8):
        t = W.Tasks(K=3, r=2, rho=rho, spare=1)
        for k in range(3):
            B = t.basis(k)
            np.testing.assert_allclose(B @ B.T, np.eye(2), atol=1e-15)
            assert abs(np.linalg.norm(B @ t.beta(k)) - 1.0) < 1e-15
            assert np.abs(B @ t.spare_direction()).max() == 0.0
        assert abs(t.beta(1) @ t.beta(0) - rho) < 1e-15 and abs(t.beta(2) @ t.beta(0) - rho) < 1e-15
        if rho == 0.0:
            assert np.abs(t.basis(1) @ t.basis(0).T).max() == 0.0


def test_pretrained_state_and_exact_errors():
    """Pre-trained neurons are unit rows inside their task's subspace with no part off the frame
    (Q = M M^T); the exact per-task error from (M, Q) equals Monte Carlo on sampled inputs, for the
    fitted off-target head and for an arbitrary head on task kappa; the fitted head beats the zero
    head. Planted bug: erf(z) for erf(z / sqrt 2) in the kernels, or M b replaced by M^T b."""
    pre = W.pretrain(TASKS, STRONG, seeds=2, seed=3)
    m = STRONG.per_task
    np.testing.assert_allclose(pre.Q, pre.M @ np.swapaxes(pre.M, 1, 2), atol=1e-15)
    np.testing.assert_allclose(np.einsum("sjj->sj", pre.Q), 1.0, atol=1e-14)
    for k in range(TASKS.K):
        P = pre.M[:, k * m:(k + 1) * m] @ TASKS.basis(k).T
        np.testing.assert_allclose(np.sum(P**2, -1), 1.0, atol=1e-14)
    rng = np.random.default_rng(1)
    for k, head in ((1, pre.heads[0, 1]), (0, rng.normal(size=2 * m))):
        exact = float(W.error(TASKS, STRONG, pre.M[0], pre.Q[0], head, TASKS.beta(k)))
        mc, se = _mc_error(TASKS, STRONG, pre.M[0], head, TASKS.beta(k))
        assert abs(exact - mc) < 4 * se, (k, exact, mc, se)
    zero = W.error(TASKS, STRONG, pre.M[0], pre.Q[0], np.zeros(2 * m), TASKS.beta(1))
    assert W.error(TASKS, STRONG, pre.M[0], pre.Q[0], pre.heads[0, 1], TASKS.beta(1)) < 0.5 * zero


def test_weak_errors_against_monte_carlo():
    """The weak models' errors (noisy direction: a pair kernel at correlation q; small network: the
    error formula with its units) equal Monte Carlo; Direction(1) has error 0. Planted bug: the
    noisy direction's error at correlation q^2, or the small network's readout fitted without its
    label noise."""
    t = W.Tasks(K=2, r=2, rho=0.0, spare=1)
    rng = np.random.default_rng(2)
    s = rng.normal(size=(400_000, t.a))
    y = np.asarray(t.link(jnp.asarray(s[:, 0])))
    assert W.weak_error(t, W.Direction(1.0)) == 0.0
    for weak in (W.Direction(0.6, "inside"), W.Direction(0.6, "outside")):
        f = np.asarray(t.link(jnp.asarray(s @ weak.direction(t))))
        e = 0.5 * (f - y) ** 2
        assert abs(W.weak_error(t, weak) - e.mean()) < 4 * e.std() / math.sqrt(e.size)
    net = W.SmallNet(width=3, samples=16, noise=0.5, seed=4)
    f = np.asarray(net.function(t)(jnp.asarray(s)))
    e = 0.5 * (f - y) ** 2
    assert abs(W.weak_error(t, net) - e.mean()) < 4 * e.std() / math.sqrt(e.size)
    assert W.weak_error(t, net) > 1e-3  # worse than the ceiling: few noisy samples


def test_rotated_frame_takes_the_weak_direction_to_e0():
    """The Givens rotation maps beta_hat to e_0 and is exactly the identity at q = 1 (so the W2S
    path with ground-truth labels cannot differ from SFT by rounding). Planted bug: a rotation by
    the wrong sign (R beta_hat = q^2 - (1 - q^2) ...)."""
    for noise in ("inside", "outside"):
        lab = W.Direction(0.6, noise)
        Rm = lab.rotation(TASKS)
        np.testing.assert_allclose(Rm @ lab.direction(TASKS), np.eye(TASKS.a)[0], atol=1e-15)
        np.testing.assert_allclose(Rm @ Rm.T, np.eye(TASKS.a), atol=1e-15)
        assert np.array_equal(W.Direction(1.0, noise).rotation(TASKS), np.eye(TASKS.a))


def test_first_order_leakage_at_rho0_equals_monte_carlo():
    """At rho = 0 with rows inside the frame, the mean gradient step of an off-target neuron along
    beta_kappa is -lr s a_j E[sigma'(lambda_j)] c_1 exactly (c_1 = E[(f - y) x . beta_kappa]): the
    residual's part on V_kappa is independent of lambda_j. w2s.leakage against Monte Carlo of
    E[(f - y) s a_j sigma'(lambda_j) x . beta_kappa] on sampled inputs, for SFT and a weak label.
    Planted bug: c_1 without the label's E[g'] term, or with beta_hat . beta_kappa = 1."""
    t = W.Tasks(K=2, r=2, rho=0.0, spare=1)
    st = W.Strong(per_task=2)
    pre = W.pretrain(t, st, seeds=1, seed=6)
    a = np.array([0.8, -0.5, 0.6, 0.4])  # a head of task kappa over all neurons
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400_000, t.a))
    lam = x @ pre.M[0].T
    sig = lambda z: np.asarray(st.activation(jnp.asarray(z)))  # noqa: E731
    dsig = np.sqrt(2 / np.pi) * np.exp(-lam**2 / 2)  # erf(z / sqrt 2)'
    for lab in (W.Direction(1.0), W.Direction(0.6, "inside")):
        y = np.asarray(t.link(jnp.asarray(x @ lab.direction(t))))
        e = sig(lam) @ a - y
        for j in (2, 3):
            v = e * a[j] * dsig[:, j] * x[:, 0]
            pull = W.leakage(pre, pre.M[0], pre.Q[0], a, lab)[j]
            assert abs(pull - v.mean()) < 4 * v.std() / math.sqrt(v.size), (j, pull, v.mean())


def test_rows_inside_the_frame_start_exactly_on_every_engine():
    """A pre-trained state with no part orthogonal to the frame (Q = M M^T, rank-deficient Gram
    matrix): the full engine's weights are M padded with zeros, the chain and the ODE record it
    unchanged at step 0. Planted bug: a completion that adds a unit random part to such rows (the
    compiled engine path, where rounding leaves a tiny Q - M M^T, is checked by the quick law
    check: no seed stopped, every KS statistic finite)."""
    from sgdlab.init import complete_weights

    pre = W.pretrain(TASKS, STRONG, seeds=1, seed=2)
    Wf = np.asarray(complete_weights(jax.random.PRNGKey(0), jnp.asarray(pre.Q[0]), jnp.asarray(pre.M[0]), 50,
                                     jnp.float64))
    np.testing.assert_array_equal(Wf[:, : TASKS.a], pre.M[0])
    assert np.abs(Wf[:, TASKS.a:]).max() < 1e-7
    ft = W.FineTune(eta=1.0, eta_second=1.0, t=0.1, records=1)
    run = W.finetune(pre, W.Direction(1.0), ft, 50, engine="chain", seeds=48)  # the quick run's shapes
    np.testing.assert_allclose(run.Q[:, 0], np.broadcast_to(pre.Q[0], run.Q[:, 0].shape), atol=1e-14)
    np.testing.assert_allclose(run.M[:, 0], np.broadcast_to(pre.M[0], run.M[:, 0].shape), atol=1e-14)
    assert np.all(np.isfinite(run.Q)) and np.all(run.diverged_step < 0)  # -1: never


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: W.Tasks(rho=1.5), "tasks.rho"),
        (lambda: W.Tasks(K=1), "tasks.K"),
        (lambda: W.Direction(q=-0.1), "weak.q"),
        (lambda: W.Direction(0.5, "beside"), "weak.noise"),
        (lambda: W.Direction(0.5, "outside").u(W.Tasks(spare=0)), "weak.noise"),
        (lambda: W.Direction(0.5, "inside").u(W.Tasks(r=1)), "weak.noise"),
        (lambda: W.FineTune(freeze="second"), "finetune.freeze"),
        (lambda: W.FineTune(eta=0.0), "finetune.eta"),
        (lambda: W.Strong(output_scale="max"), "strong.output_scale"),
        (lambda: W.Direction(1.0, path="rotated"), "weak.path"),
        (lambda: W.AllTasks(off_weight=0.0), "ceiling.off_weight"),
        (lambda: W.AllTasks("fixed"), "ceiling.off_heads"),
    ],
)
def test_bad_input_is_one_line_naming_the_field(make, field):
    """Wrong knobs stop with one line naming the field. Planted bug: a weak noise 'outside' in a
    frame without a spare direction silently put inside V_kappa."""
    with pytest.raises(ValueError) as e:
        make()
    assert field in str(e.value) and "\n" not in str(e.value)


def test_all_tasks_ceiling_gradient_is_the_sum_over_heads():
    """The ceiling's per-sample gradient (the engines' model of AllTasks) equals the hand-written
    multi-head gradient: C_j = -s sigma'(lambda_j) sum_k A^(k)_j (f_k - y_k) with y_kappa the
    ground truth of task kappa and y_k = g(beta_k . s); head kappa trains everywhere, head k only
    on its own neurons ('trained') or nowhere ('frozen'). Planted bug: the off-target labels from
    beta_kappa, the off-target heads training on every neuron, or their loss left out."""
    t, st = W.Tasks(K=2, r=2, rho=0.6, spare=1), W.Strong(per_task=2)
    pre = W.pretrain(t, st, seeds=1, seed=1)
    ft = W.FineTune(eta=1.0, eta_second=1.0, t=0.1, records=1)
    rng = np.random.default_rng(4)
    p = 4
    heads = np.stack([rng.normal(size=p), pre.heads[0, 1]])
    Z = rng.normal(size=(5, p + t.a))
    lam, s = Z[:, :p], Z[:, p:]
    erf = lambda z: np.asarray(jax.scipy.special.erf(jnp.asarray(z) / math.sqrt(2)))  # noqa: E731
    dsig = np.sqrt(2 / np.pi) * np.exp(-lam**2 / 2)
    y = np.stack([erf(s @ t.beta(0)), erf(s @ t.beta(1))], 1)
    f = erf(lam) @ heads.T
    C = -dsig * ((f - y) @ heads)
    ga = np.einsum("nk,nj->kj", f - y, erf(lam)) / Z.shape[0]
    for off, mask in (("trained", np.r_[0, 0, 1, 1.0]), ("frozen", np.zeros(p))):
        model, _ = W._objects(pre, W.AllTasks(off), ft, 50)
        a = np.concatenate([heads.ravel(), t.beta(1)])  # the heads, then beta_k (per-seed data)
        Cm, gm = model.batch_grads(jnp.asarray(Z), jnp.asarray(a), jnp.zeros(5))
        np.testing.assert_allclose(np.asarray(Cm), C / Z.shape[0], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(np.asarray(gm)[: 2 * p].reshape(2, p), ga * np.stack([np.ones(p), mask]),
                                   rtol=1e-12, atol=1e-14)
        assert np.all(np.asarray(gm)[2 * p:] == 0.0)  # beta_k never trains


# ----------------------------------------------------------------------------- self labels


def _self_setup(head_start=0.5, rho=0.3):
    t = W.Tasks(K=2, r=1, rho=rho, spare=0)
    st = W.Strong(per_task=1, head_start=head_start)
    pre = W.pretrain(t, st, seeds=1, seed=5)
    pre.heads[0, 0] = [0.6, -0.4]  # the head of task kappa over both neurons (label = own output)
    return t, st, pre


def test_self_labels_give_zero_drift_on_the_ode():
    """Labels equal to the strong model's own outputs: the ODE (first order) does not move; with
    the model's head off its labels' head by 10% it does (the same compiled field, another start).
    Planted bug: the labels built from the rotated (or another seed's) state, or the head applied
    without the output scale."""
    from sgdlab.engines import ODE

    t, st, pre = _self_setup()
    ft = W.FineTune(eta=2.0, eta_second=1.0, t=1.0, records=2)
    eng = ODE(second_order=False)
    run = W.finetune(pre, W.SelfLabels(pre), ft, 100, engine=eng)
    for x in (run.M, run.Q, run.a):
        assert np.abs(x[0, -1] - x[0, 0]).max() < 1e-12
    bad = W.finetune(pre, W.SelfLabels(pre), ft, 100, engine=eng,
                     start={"Q": pre.Q, "M": pre.M, "a": 0.9 * pre.heads[:, 0]})
    assert np.abs(bad.a[0, -1] - bad.a[0, 0]).max() > 1e-3


def test_self_labels_move_the_chain_only_at_order_lr_squared():
    """Self labels plus label noise sigma: per step E[dQ_jj] = lr^2 (s a_j)^2 sigma^2 E[sigma'(lambda_j)^2
    |x|^2] = lr^2 (s a_j)^2 sigma^2 (2/pi) ((d - 1) / sqrt 3 + 3^(-3/2)) at Q_jj = 1, and E[dM] = 0 at the
    start: the chain's mean change of Q_jj over T steps matches it at lr and lr / 2 (a factor 4);
    M diffuses, its mean moving only once the state has left the fixed point (the mean change
    falls by more than 3 when lr halves: at least second order).
    Planted bug: the label noise in the mean gradient (first-order motion), or the
    lr^2 term without its factor d (the chain's Wishart part)."""
    t, st, pre = _self_setup()
    d, T, sigma = 200, 50, 0.5
    a = pre.heads[0, 0]
    theory = (a**2) * sigma**2 * (2 / math.pi) * ((d - 1) / math.sqrt(3) + 3**-1.5)  # per lr^2, per step
    means, drifts = [], []
    for eta in (4.0, 2.0):
        lr = eta / d
        ft = W.FineTune(eta=eta, eta_second=0.0, t=T / d, records=1, noise=sigma)
        run = W.finetune(pre, W.SelfLabels(pre), ft, d, engine="chain", seeds=4000, seed=9)
        dq = np.einsum("srjj->srj", run.Q)[:, -1] - 1.0  # (S, p)
        m, se = dq.mean(0), dq.std(0) / math.sqrt(dq.shape[0])
        assert np.all(np.abs(m - T * lr**2 * theory) < 4 * se + 0.03 * T * lr**2 * theory), (eta, m, se)
        dm = run.M[:, -1] - run.M[:, 0]
        means.append(m)
        drifts.append(np.abs(dm.mean(0)).max())
    ratio = means[0] / means[1]
    assert np.all(np.abs(ratio - 4.0) < 0.4), ratio
    assert drifts[0] / drifts[1] > 3.0, drifts  # E[dM] at least second order in lr (first order: 2)


# ----------------------------------------------------------------------------- the quick reproduction


def test_quick_outputs_and_reconstructions(quick):
    """The quick run writes its figures, table and JSON with the list of reconstructed choices and
    its wall time. Planted bug: a reproduction that drops the reconstructed choices."""
    out, summary = quick
    for f in ("alignment.png", "retention.png", "rho.png", "ode.png", "table.md", "results.json"):
        assert (out / f).is_file(), f
    data = json.loads((out / "results.json").read_text())
    assert len(data["reconstructed"]) >= 8 and data["wall_time_s"] > 0
    assert all(r["n_diverged"] == 0 for r in data["runs"])


def test_quick_ground_truth_w2s_is_sft_bit_for_bit(quick):
    """W2S whose labels come from the weak model's own label function of the frame coordinates
    (Direction(1, path='function'): g(s . beta_hat), beta_hat = beta_kappa exactly, a target
    function) and SFT (the problem's committee target g(nu_0)) are two code paths for one process:
    bit for bit equal with the same seeds. The comparison is not vacuous: the two programs differ
    (function vs committee target), and the same W2S run with the next SGD seed differs from SFT.
    Planted bug: a weak pipeline that draws its own seeds, a label function that evaluates beta_hat
    with a rounding (any label off by one ulp breaks bit equality), or a weak path that rotates the
    state."""
    out, summary = quick
    assert summary["checks"]["w2s_ground_truth_is_sft_bit_for_bit"] is True
    spec = R.QUICK
    desc = R._desc(spec, "w2s_fn_gt", rho=spec.rho, q=1.0, seed=0)
    pre, label, ft = R.objects(desc)
    fn_model, _ = W._objects(pre, label, ft, spec.d)
    sft_model, _ = W._objects(pre, W.Direction(1.0), ft, spec.d)
    assert fn_model.problem.function is not None and sft_model.problem.is_committee
    store = out.parent / "store"
    sft = R.run_cached(R._desc(spec, "sft", rho=spec.rho, q=spec.q, seed=0), store)
    other = R.run_cached({**desc, "seed": 1, "pre_seed": 0}, store)  # same states, next SGD seeds
    assert np.abs(other["M"][:, -1] - sft["M"][:, -1]).max() > 1e-3


def test_quick_chain_equals_full_in_law(quick):
    """KS tests of the final order parameters of a small W2S run (rows starting inside the frame:
    zero orthogonal part), chain vs full, Bonferroni at 1%, every statistic finite and no seed
    stopped on either engine. Planted bug: a Gram start whose zero orthogonal part is completed with
    a random unit part on one engine only, or blown up by a pivot tolerance relative to the trace of
    a rounding-level Q - M M^T (before the guard in init.complete_weights: 29 of 256 full seeds
    stopped at step 0 with NaN Q, the KS tests of Q NaN, the others against the start)."""
    lc = quick[1]["law_check"]
    assert all(math.isfinite(v["p"]) for v in lc["tests"].values()), lc["tests"]
    assert lc["n_diverged"] == {"chain": 0, "full": 0}
    assert lc["bonferroni_ok"], lc["tests"]


def test_quick_forgetting_and_retention(quick):
    """SFT forgets more at rho = 0.8 than at rho = 0, and loses off-target energy there; the weak
    model with an outside noise makes W2S forget significantly more than SFT (paired interval below
    0). (The issue's "W2S retains at least as well as SFT, disjoint intervals, at the largest rho"
    is not what this reconstruction shows: the full run has W2S with the noise inside V_kappa
    ahead at rho = 0.4 and behind at rho >= 0.8; results.json records the check.) Planted bug: the
    off-target energy measured in V_kappa instead of V_k, or W2S and SFT on different seeds."""
    ch, ret = quick[1]["checks"], quick[1]["retention_vs_rho"]
    assert ch["sft_forgets_more_at_largest_rho_than_at_0"]
    assert ret["w2s_in"]["0.8"]["share_off"]["sft"][2] < ret["w2s_in"]["0.0"]["share_off"]["sft"][1]
    assert ret["w2s_out"]["0.8"]["share_off"]["paired_diff"][2] < 0.0
    assert "w2s_in_retains_at_least_as_well_as_sft_at_largest_rho_disjoint" in ch


def test_quick_elicitation_and_ode(quick):
    """W2S on the weak model with its noise outside the strong model's subspaces ends below the
    weak model's error (the strong model cannot fit the weak model's spurious feature quickly);
    SFT aligns the kappa-neurons with beta_kappa; the ODE follows the chain's mean: within 5 SE for
    the alignment, the off-target error and the head weight, within 1% of the start for the
    task-kappa error (its finite-d offset is several SE with 256 seeds). Planted bug: the per-task
    error computed against beta_hat instead of beta_kappa, or the ODE started from another
    pre-trained state."""
    s = quick[1]
    assert s["checks"]["w2s_error_below_weak"]["w2s_out"]
    assert s["checks"]["w2s_alignment_gain"]["sft"] > 0.05
    oc = s["ode_curves"]
    z = {k: oc[k]["max_abs_z"] for k in ("align", "err_off", "a_kappa_neuron")}
    assert max(z.values()) < 5.0, z
    assert oc["err_kappa"]["max_abs_diff"] < 0.01 * oc["err_kappa"]["ode"][0]


def test_quick_all_tasks_ceiling(quick):
    """The ceiling (the strong model fine-tuned on the ground truth of all tasks) keeps the
    off-target task: at rho = 0.8 its off-target error ends below SFT's (paired 95% interval below
    0), its off-target heads train but stay supported on their own task's neurons (exactly 0 on
    the kappa-neurons at every record); PGR's ceiling is that run, with SFT kept as a reference.
    Planted bug: the off-target losses dropped from the ceiling (it is then SFT: difference 0), the
    off-target heads trained on every neuron, or PGR still taken against SFT."""
    out, summary = quick
    ret = summary["retention_vs_rho"]["ceiling"]["0.8"]["err_off"]["paired_diff"]
    assert ret[2] < 0.0, ret
    desc = R.plan(R.QUICK)[("ceiling", 0.8, R.QUICK.q)]
    o = R.run_cached(desc, out.parent / "store")
    m = R.QUICK.per_task
    h = o["heads"]  # (S, R, K, p)
    assert np.all(h[..., 1, :m] == 0.0) and np.abs(h[:, -1, 1, m:] - h[:, 0, 1, m:]).max() > 0
    v = summary["pgr_vs_rho"]["w2s_in"]["0.8"]
    row = next(r for r in summary["runs"] if r["series"] == "ceiling" and r["rho"] == 0.8)
    assert v["err_ceiling"] == pytest.approx(row["err_kappa"], rel=1e-12)
    assert "pgr_sft_reference" in summary
