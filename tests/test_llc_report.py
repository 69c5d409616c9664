"""`mi-jax llc RUN_DIR` end to end on a tiny grokking run: the files, their [time, member, ...] shapes,
a flagged chain named in the summary and marked in the npz, the calibration grid, and one line per bad input."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest

import mi_jax as mj
from mi_jax.analysis import llc_diagnostics as diag
from mi_jax.analysis import llc_task
from mi_jax.io.results import load_results
from mi_jax.tasks import make_task
from mi_jax.reports import llc as llc_report
from tests.conftest import tiny_grokking
from tests.test_cli import assert_one_line_error, run_cli

SMALL = ["--set", "llc.n_draws=40", "--set", "llc.n_chains=3", "--set", "llc.batch_size=16",
         "--set", "lanczos_steps=6", "--set", "trace_probes=4", "--wandb", "off", "--quiet"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A p = 13 grokking run of 100 steps, a checkpoint every 50 (3 checkpoints), two seeds."""
    run_dir = tmp_path_factory.mktemp("llc") / "run"
    cfg = tiny_grokking(steps=100, ckpt_every=50, eval_every=50, seeds=(0, 1))
    mj.train(cfg, run_dir, wandb="off", progress=False)
    return run_dir


def test_llc_command_writes_every_checkpoint_and_member_and_names_a_diverging_chain(tiny_run, capsys):
    # ε = 2 with γ = 100: the localisation term alone overshoots (εγ/2 = 100 > 2), so every chain diverges
    code, out, _ = run_cli(capsys, "llc", str(tiny_run), *SMALL, "--set", "llc.epsilon=2", "--set", "llc.gamma=100")
    assert code == 0, out
    steps, results = load_results(tiny_run / "analysis" / "llc.npz")
    assert steps.tolist() == [0, 50, 100]
    assert results["llc_mean"].shape == (3, 2) and results["loss_trace"].shape == (3, 2, 3, 40)
    assert results["hessian_top"].shape == (3, 2, 3) and results["chain_status"].shape == (3, 2, 3)
    assert (results["chain_status"] != diag.OK).all() and not results["usable"].any()
    summary = json.loads((tiny_run / "analysis" / "llc_summary.json").read_text())
    assert summary["n_flagged_checkpoints"] == 6
    first = summary["members"][0]["flagged"][0]
    assert first["step"] == 0 and set(first["chains"]) == {"0", "1", "2"}
    assert summary["members"][0]["llc_mean"] == [None, None, None]  # null in JSON, named under "flagged"
    assert "warning: LLC step 0 (checkpoint 0), member 0, chain 0: diverged" in out.splitlines()
    assert (tiny_run / "analysis" / "llc.png").stat().st_size > 0


@pytest.mark.slow  # two LLC runs; the out-of-range member is one line in the default suite
def test_one_member_alone_gets_the_estimates_it_gets_among_all(tiny_run, capsys):
    stable = [*SMALL, "--set", "llc.epsilon=1e-4", "--set", "llc.gamma=1000"]
    assert run_cli(capsys, "llc", str(tiny_run), *stable)[0] == 0
    _, every_member = load_results(tiny_run / "analysis" / "llc.npz")
    assert run_cli(capsys, "llc", str(tiny_run), *stable, "--set", "member=1")[0] == 0
    _, one = load_results(tiny_run / "analysis" / "llc.npz")
    assert one["llc_mean"].shape == (3, 1) and np.isfinite(one["llc_mean"]).all()
    np.testing.assert_allclose(one["llc_mean"][:, 0], every_member["llc_mean"][:, 1], rtol=1e-5)
    summary = json.loads((tiny_run / "analysis" / "llc_summary.json").read_text())
    assert [m["seed"] for m in summary["members"]] == [1]


@pytest.mark.slow  # the calibration command end to end (its one-program grid is tested in test_llc.py)
def test_llc_command_with_stable_settings_gives_finite_estimates_below_the_regular_bound(tiny_run, capsys):
    code, out, _ = run_cli(capsys, "llc", str(tiny_run), *SMALL, "--set", "llc.epsilon=1e-4",
                           "--set", "llc.gamma=1000", "--calibrate", "--epsilons", "1e-4,3", "--gammas", "1000")
    assert code == 0, out
    _, results = load_results(tiny_run / "analysis" / "llc.npz")
    summary = json.loads((tiny_run / "analysis" / "llc_summary.json").read_text())
    finite = np.isfinite(results["llc_mean"])
    assert finite.all() and (results["llc_mean"] < summary["n_params"] / 2).all()
    calib = json.loads((tiny_run / "analysis" / "llc_calibration.json").read_text())
    assert calib["checkpoints"] == [0, 50, 100]
    assert [s["epsilon"] for s in calib["stable_settings"]] == [1e-4]  # ε = 3 diverges, ε = 1e-4 does not
    assert (tiny_run / "analysis" / "llc_calibration.png").stat().st_size > 0


def test_frozen_biases_are_not_parameters_of_the_llc():
    task = make_task(tiny_grokking(freeze_biases=True))
    params = task.init_params(jax.random.key(0))
    trained, full = llc_task.split_frozen(task, params)
    assert not any("b_" in name for name in trained)
    assert llc_task.n_trained(task, params) == sum(np.size(v) for v in trained.values())
    np.testing.assert_array_equal(full(trained)["blocks"][0]["mlp"]["b_in"], params["blocks"][0]["mlp"]["b_in"])


@pytest.mark.parametrize("sets, message", [
    (["llc.epsilon=0"], "epsilon (the SGLD step size) must be > 0, got 0.0"),
    (["llc.n_beta=-1"], "n_beta must be > 0, got -1.0"),
    (["llc.gamma=-1"], "gamma (the localisation) must be >= 0, got -1.0"),
    (["llc.n_chains=0"], "n_chains must be >= 1, got 0"),
    (["llc.n_draws=0"], "n_draws must be >= 1, got 0"),
    (["llc.batch_size=500"], "the training set has 84 examples, fewer than batch_size=500"),
    (["member=2"], "member=2 is out of range: the run has 2 members"),
    (["member=-1"], "member must be >= 0, got -1"),
])
def test_each_bad_llc_setting_is_one_line(tiny_run, capsys, sets, message):
    argv = ["llc", str(tiny_run), "--wandb", "off"] + [a for s in sets for a in ("--set", s)]
    assert_one_line_error(capsys, argv, message)


def test_a_series_of_another_kind_than_the_loss_is_refused(tiny_run):
    traj = mj.Trajectory.load(tiny_run)
    with pytest.raises(mj.ConfigError, match=r"^the checkpoint series is a grokking run; the loss given is a "
                                             r"boolean_and task's$"):
        llc_report.measure(traj, llc_task.settings_for(make_task(traj.config)), task=make_task(mj.BooleanAndConfig()))
    other = make_task(dataclasses.replace(tiny_grokking(), p=17))
    with pytest.raises(mj.ConfigError, match=r"^the checkpoint series' \['W_E'\] has shape \(14, 32\), "
                                             r"the loss's model \(18, 32\)$"):
        llc_report.measure(traj, llc_task.settings_for(make_task(traj.config)), task=other)


def test_a_superposition_run_has_no_llc_and_says_so():
    with pytest.raises(mj.ConfigError, match=r"^no LLC for superposition runs"):
        llc_task.training_set(make_task(mj.SuperpositionConfig()), llc_task.LLCSettings())


def test_calibration_over_stacked_checkpoints_equals_each_checkpoint_alone():
    from mi_jax.analysis import llc

    loss = lambda params, batch: 0.5 * (params["w"] ** 2).sum() + 0 * batch.sum()  # noqa: E731
    cfg = llc.LLCConfig(epsilon=1e-3, gamma=10.0, n_beta=100.0, n_chains=2, n_draws=30, batch_size=4)
    series = {"w": np.asarray([[0.0, 0.0], [0.3, -0.2]], np.float32)}  # [checkpoint, d]
    both = llc.calibrate(loss, np.zeros(16), series, cfg, epsilons=[1e-3, 1e-2], stacked=True)
    assert both["loss_trace"].shape == (2, 2, 1, 1, 2, 30) and both["epsilon"].shape == (2, 1, 1)
    for t in range(2):
        alone = llc.calibrate(loss, np.zeros(16), {"w": series["w"][t]}, cfg, epsilons=[1e-3, 1e-2])
        np.testing.assert_allclose(both["loss_trace"][t], alone["loss_trace"], rtol=1e-5, atol=1e-7)


def test_a_calibration_grid_without_calibrate_or_with_a_bad_number_is_one_line(tiny_run, capsys):
    assert_one_line_error(capsys, ["llc", str(tiny_run), "--epsilons", "1e-3"],
                          "--epsilons/--gammas/--n-betas set the --calibrate grid; add --calibrate")
    assert_one_line_error(capsys, ["llc", str(tiny_run), "--calibrate", "--gammas", "ten"],
                          "--gammas expects comma-separated numbers, got 'ten'")
