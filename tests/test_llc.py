"""The LLC estimator (SGLD localised at the checkpoint) and the loss-landscape measures, checked on
losses whose answer is known: a quadratic (regular: d/2), w1² w2² (degenerate), exact Hessians."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mi_jax.analysis import hessian, llc, subspace
from mi_jax.analysis import llc_diagnostics as diag
from mi_jax.analysis.core import analyze_params
from mi_jax.config import ConfigError

DUMMY_DATA = jnp.zeros((16,))  # the losses below ignore the minibatch: the only noise is SGLD's own


def quadratic(H, w0):
    """L(w) = ½ (w - w0)ᵀ H (w - w0), the minibatch ignored."""
    H, w0 = jnp.asarray(H, jnp.float32), jnp.asarray(w0, jnp.float32)
    return lambda params, batch: 0.5 * (params["w"] - w0) @ H @ (params["w"] - w0) + 0 * batch.sum()


def random_spd(d, lo, hi, seed=0):
    """A d x d symmetric matrix with eigenvalues evenly spaced in [lo, hi], in a random basis."""
    Q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return (Q * np.linspace(lo, hi, d)) @ Q.T


def tempered_expectation_of_quadratic(eigs, n_beta, gamma, eps):
    """E[n_β L] of SGLD's stationary law for L = ½ wᵀ H w: per eigenvalue h the chain is the AR(1)
    w ← (1 - εa/2) w + √ε ξ with a = n_β h + γ, of variance 1 / (a (1 - εa/4))."""
    a = n_beta * eigs + gamma
    return float(np.sum(0.5 * n_beta * eigs / (a * (1 - eps * a / 4))))


# ----------------------------------------------------------------------------- the estimate


@pytest.mark.parametrize("sampler", ["sgld", "rmsprop_sgld"])
def test_llc_of_a_regular_quadratic_is_half_its_dimension(sampler):
    # d = 20, curvatures in [1, 2], n_β = 1000, γ = 1, ε = 2e-5: the tempered posterior gives
    # E[n_β L] = d/2 up to -0.07% (localisation) and +0.7% (SGLD's discretisation at εa ≤ 0.04,
    # `tempered_expectation_of_quadratic`). RMSProp with δ = 1 ≫ √V ≈ 0.05 has G ≈ 1, nearly
    # constant (a G that varies with w biases it, see llc's docstring). The chains' spread (≈ 2.5% of
    # d/2 per chain, 8 chains) gives a standard error near 0.9%: 5% is the bias plus 4 standard errors.
    d = 20
    assert tempered_expectation_of_quadratic(np.linspace(1, 2, d), 1000.0, 1.0, 2e-5) == pytest.approx(d / 2, rel=0.01)
    cfg = llc.LLCConfig(epsilon=2e-5, gamma=1.0, n_beta=1000.0, n_chains=8, n_draws=8000, n_burnin=500,
                        batch_size=8, sampler=sampler, rmsprop_delta=1.0)
    out = jax.jit(llc.llc_measure(quadratic(random_spd(d, 1, 2), np.ones(d)), DUMMY_DATA, cfg))({"w": jnp.ones(d)})
    assert out["init_loss"] == 0
    assert abs(float(out["llc_mean"]) - d / 2) < 0.05 * d / 2
    assert out["loss_trace"].shape == (8, 8000) and out["llc_per_chain"].shape == (8,)


def test_llc_of_degenerate_w1sq_w2sq_is_below_half_its_dimension():
    # L = w1² w2² at 0 (λ = 1/2 < d/2 = 1). With localisation the estimator targets the tempered,
    # localised posterior's E[n_β L], computed here by quadrature on a grid; the chains' standard error
    # is ≈ 4% of it and SGLD's step bias about 1%: 15% covers both with room.
    n_beta, gamma = 300.0, 1.0
    cfg = llc.LLCConfig(epsilon=3e-4, gamma=gamma, n_beta=n_beta, n_chains=8, n_draws=5000,
                        steps_between_draws=4, n_burnin=2000, batch_size=8)
    loss = lambda params, batch: params["w"][0] ** 2 * params["w"][1] ** 2 + 0 * batch.sum()  # noqa: E731
    estimate = float(jax.jit(llc.llc_measure(loss, DUMMY_DATA, cfg))({"w": jnp.zeros(2)})["llc_mean"])
    x = np.linspace(-6, 6, 2001) / np.sqrt(gamma)
    X, Y = np.meshgrid(x, x)
    nL = n_beta * X**2 * Y**2
    weight = np.exp(-nL - gamma / 2 * (X**2 + Y**2))
    exact = (nL * weight).sum() / weight.sum()
    assert exact < 0.5 and estimate < 0.5  # d/2 = 1 for a regular model of two params
    assert abs(estimate - exact) < 0.15 * exact


def test_rmsprop_sgld_without_decay_is_sgld_with_the_step_over_delta():
    # α = 1 keeps V = 0, so G = 1/δ: w - (ε/2δ) drift + √(ε/δ) ξ, plain SGLD at step ε/δ, same noise
    loss = quadratic(random_spd(3, 1, 2), np.zeros(3))
    base = llc.LLCConfig(epsilon=1e-3, gamma=10.0, n_beta=100.0, n_chains=2, n_draws=50, batch_size=4)
    def run(c):
        return np.asarray(jax.jit(llc.llc_measure(loss, DUMMY_DATA, c))({"w": jnp.zeros(3)})["loss_trace"])

    rms = run(dataclasses.replace(base, sampler="rmsprop_sgld", rmsprop_alpha=1.0, rmsprop_delta=4.0))
    np.testing.assert_allclose(rms, run(dataclasses.replace(base, epsilon=base.epsilon / 4)), rtol=1e-4, atol=1e-8)


def test_llc_uses_the_whole_training_set_for_the_baseline_loss():
    # a linear regression whose examples differ: L_n(w*) must be the mean over all 50, not one batch
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(50, 3)).astype(np.float32), rng.normal(size=50).astype(np.float32)
    loss = lambda params, batch: 0.5 * ((batch[0] @ params["w"] - batch[1]) ** 2).mean()  # noqa: E731
    w = jnp.asarray([0.3, -0.2, 0.1])
    cfg = llc.LLCConfig(epsilon=1e-4, n_chains=2, n_draws=5, batch_size=8, loss_chunk_size=16)  # 3 chunks + 2 left
    out = jax.jit(llc.llc_measure(loss, (x, y), cfg))({"w": w})
    np.testing.assert_allclose(out["init_loss"], 0.5 * np.mean((x @ np.asarray(w) - y) ** 2), rtol=1e-5)


def test_llc_over_a_stacked_series_equals_per_checkpoint_estimates():
    d = 4
    cfg = llc.LLCConfig(epsilon=1e-3, gamma=10.0, n_beta=100.0, n_chains=3, n_draws=40, batch_size=4)
    loss = quadratic(random_spd(d, 1, 2), np.zeros(d))
    series = {"w": jnp.asarray(np.random.default_rng(2).normal(size=(5, 2, d)) * 0.1, jnp.float32)}  # [time, member, d]
    measure = llc.llc_measure(loss, DUMMY_DATA, cfg)
    # checkpoints two at a time (vmapped, as on an accelerator), the last batch short
    results = analyze_params(series, {"llc": measure}, chunk_size=2)
    in_turn = analyze_params(series, {"llc": measure}, chunk_size=2, members_in_turn=True)  # as `mi-jax llc` on CPU
    assert results["loss_trace"].shape == in_turn["loss_trace"].shape == (5, 2, 3, 40)
    one = jax.jit(measure)
    for t in range(5):
        for s in range(2):
            alone = one({"w": series["w"][t, s]})
            for got in (results, in_turn):
                np.testing.assert_allclose(got["loss_trace"][t, s], alone["loss_trace"], rtol=1e-5, atol=1e-7)
                np.testing.assert_allclose(got["llc_mean"][t, s], alone["llc_mean"], rtol=1e-5, atol=1e-6)


def test_same_seed_gives_the_same_numbers_and_chains_differ():
    cfg = llc.LLCConfig(epsilon=1e-3, gamma=10.0, n_beta=100.0, n_chains=3, n_draws=30, batch_size=4)
    loss = quadratic(np.eye(3), np.zeros(3))
    run = lambda c: jax.jit(llc.llc_measure(loss, DUMMY_DATA, c))({"w": jnp.zeros(3)})  # noqa: E731
    first, other = run(cfg), run(dataclasses.replace(cfg, seed=1))
    again = run(cfg)  # built again: the same program, from the on-disk cache
    np.testing.assert_array_equal(first["loss_trace"], again["loss_trace"])
    trace = np.asarray(first["loss_trace"])
    assert not np.allclose(trace[0], trace[1]) and not np.allclose(trace[1], trace[2])
    assert not np.allclose(trace, np.asarray(other["loss_trace"]))
    # chunking the chains (a plain map, one at a time) keeps each chain's key, so its numbers
    chunked = run(dataclasses.replace(cfg, chains_per_batch=1))
    np.testing.assert_allclose(chunked["loss_trace"], trace, rtol=1e-5, atol=1e-7)


def test_default_n_beta_is_batch_over_log_batch():
    assert llc.default_n_beta(64) == pytest.approx(64 / np.log(64))
    assert llc.LLCConfig(batch_size=100).resolved_n_beta == pytest.approx(100 / np.log(100))


@pytest.mark.parametrize("kwargs, message", [
    ({"epsilon": 0.0}, "epsilon (the SGLD step size) must be > 0, got 0.0"),
    ({"gamma": -1.0}, "gamma (the localisation) must be >= 0, got -1.0"),
    ({"n_beta": -2.0}, "n_beta must be > 0, got -2.0"),
    ({"n_chains": 0}, "n_chains must be >= 1, got 0"),
    ({"n_draws": 0}, "n_draws must be >= 1, got 0"),
    ({"sampler": "hmc"}, "sampler must be 'sgld' or 'rmsprop_sgld', got 'hmc'"),
    ({"batch_size": 1}, "the default n_beta = B / log B needs batch_size >= 2, got 1; set n_beta"),
])
def test_each_bad_setting_gives_one_line(kwargs, message):
    with pytest.raises(ConfigError) as err:
        llc.LLCConfig(**kwargs)
    assert str(err.value) == message


def test_a_training_set_smaller_than_the_batch_is_refused_when_the_measure_is_built():
    with pytest.raises(ConfigError, match=r"^the training set has 16 examples, fewer than batch_size=32$"):
        llc.llc_measure(quadratic(np.eye(2), np.zeros(2)), DUMMY_DATA, llc.LLCConfig(batch_size=32))


def test_a_calibration_grid_with_a_zero_step_is_refused():
    with pytest.raises(ConfigError, match=r"^epsilons must be > 0, got \[0.0, 0.001\]$"):
        llc.calibrate(quadratic(np.eye(2), np.zeros(2)), DUMMY_DATA, {"w": jnp.zeros(2)},
                      llc.LLCConfig(batch_size=4), epsilons=[0.0, 1e-3])


# ----------------------------------------------------------------------------- diagnostics and calibration


def test_diagnostics_name_the_checkpoint_and_chain_of_a_diverging_chain():
    # L = Σ w⁴: SGLD is stable near 0 but at w* = 3 the curvature 12 n_β w² makes the step blow up
    loss = lambda params, batch: (params["w"] ** 4).sum() + 0 * batch.sum()  # noqa: E731
    cfg = llc.LLCConfig(epsilon=1e-3, gamma=10.0, n_beta=1000.0, n_chains=2, n_draws=200, batch_size=4)
    series = {"w": jnp.asarray([[0.0, 0.0], [3.0, 3.0], [0.0, 0.0]])}
    results = analyze_params(series, {"llc": llc.llc_measure(loss, DUMMY_DATA, cfg)}, member_axis=False)
    with pytest.warns(UserWarning) as caught:
        report = diag.diagnose(results, cfg.resolved_n_beta, n_params=2, steps=np.array([0, 500, 1000]))
    lines = [f"LLC step 500 (checkpoint 1), chain {c}: diverged" for c in (0, 1)]
    assert [str(w.message) for w in caught] == lines and list(report.messages) == lines
    assert report.status.tolist() == [[diag.OK] * 2, [diag.DIVERGED] * 2, [diag.OK] * 2]
    assert report.usable.tolist() == [True, False, True]
    assert results["n_finite_chains"].tolist() == [2, 0, 2]  # the measure's own count marks it too
    assert np.isfinite(report.llc_mean[[0, 2]]).all() and np.isnan(report.llc_mean[1])


def test_chain_status_tells_levelled_exploding_and_trending_traces_apart():
    rng = np.random.default_rng(3)
    n = 400
    flat = 1.0 + 0.01 * rng.normal(size=n)
    ramp = 1.0 + np.linspace(0, 1, n) + 0.01 * rng.normal(size=n)
    high = 50.0 + 0.01 * rng.normal(size=n)  # n_β (50 - 0.9) = 491 > 2 d/2 = 100
    traces = np.stack([flat, ramp, high])
    status = diag.chain_status(traces, init_loss=0.9, n_beta=10.0, n_params=100)
    assert status.tolist() == [diag.OK, diag.NOT_LEVELLED, diag.EXPLODING]


def test_r_hat_and_ess_of_independent_and_correlated_chains():
    rng = np.random.default_rng(4)
    m, n, rho = 4, 4000, 0.9
    iid = rng.normal(size=(m, n))
    ar = np.zeros((m, n))
    for t in range(1, n):  # AR(1): ESS = m n (1 - ρ) / (1 + ρ)
        ar[:, t] = rho * ar[:, t - 1] + np.sqrt(1 - rho**2) * rng.normal(size=m)
    apart = iid + np.arange(m)[:, None]  # chains sitting at different levels
    assert abs(diag.split_r_hat(iid) - 1) < 0.01 and diag.split_r_hat(apart) > 1.5
    assert diag.effective_sample_size(iid) == pytest.approx(m * n, rel=0.1)
    assert diag.effective_sample_size(ar) == pytest.approx(m * n * (1 - rho) / (1 + rho), rel=0.25)


def test_calibration_runs_the_grid_in_one_program_and_marks_the_unstable_settings():
    loss = quadratic(np.eye(3), np.zeros(3))
    cfg = llc.LLCConfig(epsilon=1e-3, gamma=10.0, n_beta=100.0, n_chains=3, n_draws=300, batch_size=4)
    grid = llc.calibrate(loss, DUMMY_DATA, {"w": jnp.zeros(3)}, cfg, epsilons=[1e-3, 5.0], gammas=[1.0, 10.0])
    assert grid["loss_trace"].shape == (2, 2, 1, 3, 300) and grid["llc_mean"].shape == (2, 2, 1)
    alone = jax.jit(llc.llc_measure(loss, DUMMY_DATA, dataclasses.replace(cfg, gamma=1.0)))({"w": jnp.zeros(3)})
    np.testing.assert_allclose(grid["loss_trace"][0, 0, 0], alone["loss_trace"], rtol=1e-5, atol=1e-7)
    rows = diag.calibration_report(grid, n_params=3)
    stable = {(r["epsilon"], r["gamma"]): r["stable"] for r in rows}
    # ε = 5: a step of εa/2 ≥ 250 blows up; ε = 1e-3 mixes within the 300 draws
    assert stable == {(1e-3, 1.0): True, (1e-3, 10.0): True, (5.0, 1.0): False, (5.0, 10.0): False}


# ----------------------------------------------------------------------------- Hessian and subspace measures


def test_hessian_eigenvalues_of_a_quadratic_are_its_matrix_eigenvalues():
    d = 12
    H = random_spd(d, -1, 5, seed=5)
    eigs = hessian.hessian_top_eigenvalues_measure(quadratic(H, np.zeros(d)), DUMMY_DATA, k=4, n_steps=d)
    top = np.asarray(jax.jit(eigs)({"w": jnp.ones(d)}))
    np.testing.assert_allclose(top, np.linalg.eigvalsh(H)[::-1][:4], rtol=1e-4, atol=1e-4)


def test_hessian_eigenvalues_survive_a_lanczos_breakdown():
    # H = diag(3, 3, 3, 1, 1, 1) has two distinct eigenvalues: the Krylov space is invariant after 2 steps
    H = np.diag([3.0, 3, 3, 1, 1, 1])
    eigs = hessian.hessian_top_eigenvalues_measure(quadratic(H, np.zeros(6)), DUMMY_DATA, k=6, n_steps=6)
    np.testing.assert_allclose(np.asarray(jax.jit(eigs)({"w": jnp.zeros(6)})), [3, 3, 3, 1, 1, 1], atol=1e-4)


def test_hutchinson_trace_is_close_to_the_trace():
    # zᵀHz for Rademacher z has variance 2 Σ_{i≠j} H_ij²: with 200 probes 4 standard errors is the tolerance
    d, n_probes = 30, 200
    H = random_spd(d, 0, 4, seed=6)
    trace_of = hessian.hessian_trace_measure(quadratic(H, np.zeros(d)), DUMMY_DATA, n_probes=n_probes)
    out = jax.jit(trace_of)({"w": jnp.zeros(d)})
    se = np.sqrt(2 * ((H**2).sum() - (np.diag(H) ** 2).sum()) / n_probes)
    assert abs(float(out["hessian_trace"]) - np.trace(H)) < 4 * se
    assert float(out["hessian_trace_se"]) == pytest.approx(se, rel=0.3)


def test_update_norms_are_the_norms_of_updates_projected_on_the_key_frequencies():
    p, d_model, key_freqs = 7, 5, (2, 3)
    basis = subspace.fourier_rows(p, key_freqs)
    assert basis.shape == (4, p)
    W_E = np.random.default_rng(7).normal(size=(6, p, d_model)).astype(np.float32)  # [time, token, d_model]
    on_key_freqs = subspace.subspace_coordinates_measure(lambda q: q["W_E"], basis)
    coords = analyze_params({"W_E": W_E[:, None]}, {"key": on_key_freqs})["key"]  # one member
    norms = subspace.update_norms(coords)[:, 0]
    P = basis.T @ basis  # the projector on the key frequencies' token directions
    expected = [np.linalg.norm(P @ (W_E[t + 1] - W_E[t])) for t in range(5)]
    np.testing.assert_allclose(norms, expected, rtol=1e-5)


def test_a_basis_that_is_not_orthonormal_is_refused():
    with pytest.raises(ConfigError, match=r"^basis rows must be orthonormal \(B @ B.T = I\)$"):
        subspace.subspace_coordinates_measure(lambda q: q["w"], np.ones((2, 3)))
