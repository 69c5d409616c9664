"""Sweeps: a grid of settings x seeds as few compiled programs as the shapes allow; a member trains as
its solo run would; the sweep dir loads as one object and analyses against the grid; bad input is one line."""

import json

import numpy as np
import pytest

import mi_jax as mj
from conftest import tiny_grokking
from mi_jax import cli
from mi_jax.reports import sweep as sweep_report

GRID = {"train.lr": ["1e-3", "3e-3"], "train.weight_decay": ["0.1", "1.0"], "train.warmup_steps": ["0", "20"]}


@pytest.fixture(scope="module")
def lr_wd_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "lr_wd"
    return mj.sweep(tiny_grokking(steps=50, ckpt_every=25, eval_every=25), GRID, out, seeds=(0, 1), wandb="off",
                    progress=False)  # 2 x 2 x 2 grid points x 2 seeds = 16 members


def test_members_that_differ_in_hyperparameters_and_seed_share_one_program(lr_wd_sweep):
    assert len(lr_wd_sweep.trajectories) == 1 and len(lr_wd_sweep.members) == 16
    traj = lr_wd_sweep.trajectories[0]
    assert traj.params["W_E"].shape == (3, 16, 14, 32)  # [time, member, ...]
    assert traj.metrics["test_loss"].shape == (3, 16)
    assert traj.members[5] == {"train.lr": 1e-3, "train.weight_decay": 1.0, "train.warmup_steps": 0, "seed": 1}
    assert lr_wd_sweep.members[5] == {**traj.members[5], "program": 0}


def test_a_sweep_member_equals_the_solo_run_with_its_settings(lr_wd_sweep, tmp_path):
    traj = lr_wd_sweep.trajectories[0]
    m = 13  # lr 3e-3, weight decay 1.0, warm-up 0, seed 1
    solo_cfg = traj.member_config(m)
    assert (solo_cfg.train.lr, solo_cfg.train.weight_decay, solo_cfg.train.warmup_steps, solo_cfg.train.seed) == \
        (3e-3, 1.0, 0, 1)
    mj.train(solo_cfg, tmp_path / "solo", wandb="off", progress=False)
    solo = mj.Trajectory.load(tmp_path / "solo")
    for name in ("W_E", "W_U"):
        np.testing.assert_allclose(traj.params[name][:, m], solo.params[name][:, 0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(traj.metrics["test_loss"][:, m], solo.metrics["test_loss"][:, 0], rtol=1e-4)
    others = [k for k in range(16) if k != m]
    assert all(not np.allclose(traj.params["W_E"][-1, k], traj.params["W_E"][-1, m]) for k in others)


@pytest.mark.slow  # two programs of two members each (~15 s)
def test_values_that_change_shapes_make_separate_programs_in_one_sweep_dir(tmp_path):
    out = tmp_path / "p"
    sweep = mj.sweep(tiny_grokking(steps=25, ckpt_every=25, eval_every=25), {"p": ["11", "13"], "train.lr": ["1e-3", "2e-3"]},
                     out, wandb="off", progress=False)
    assert [t.config.p for t in sweep.trajectories] == [11, 13]
    assert [t.params["W_E"].shape[1:3] for t in sweep.trajectories] == [(2, 12), (2, 14)]
    assert [(m["p"], m["train.lr"], m["program"]) for m in sweep.members] == \
        [(11, 1e-3, 0), (11, 2e-3, 0), (13, 1e-3, 1), (13, 2e-3, 1)]
    wandb_config = json.loads((out / "wandb_sweep.yaml").read_text())
    assert wandb_config["method"] == "grid" and wandb_config["parameters"]["p"] == {"values": ["11", "13"]}


@pytest.mark.slow  # every program's report and the grid's figures: ~13 s cold
def test_analyzing_a_sweep_dir_draws_each_measure_against_the_grid(lr_wd_sweep, capsys):
    assert cli.main(["analyze", str(lr_wd_sweep.sweep_dir), "--wandb", "off"]) == 0
    out = capsys.readouterr().out
    assert "16 members" in out and out.count("key frequencies") == 16
    summary = json.loads((lr_wd_sweep.sweep_dir / "analysis" / "sweep_summary.json").read_text())
    assert len(summary["members"]) == 16
    traj = lr_wd_sweep.trajectories[0]
    for m, row in enumerate(summary["members"]):
        assert row["final_test_loss"] == pytest.approx(float(traj.metrics["test_loss"][-1, m]))
        assert row["steps_to_generalise"] is None or row["steps_to_generalise"] in (0, 25, 50)
        assert row["phase"] == sweep_report.phase(row["steps_to_memorise"], row["steps_to_generalise"],
                                                  row["final_train_acc"])
    for name in ("final_test_loss", "final_train_acc", "steps_to_generalise", "steps_to_memorise", "phase_diagram"):
        assert (lr_wd_sweep.sweep_dir / "analysis" / f"sweep_{name}.png").stat().st_size > 5000
    assert (traj.run_dir / "analysis" / "grokking.npz").exists()


def test_the_phases_of_liu_et_al():
    cases = [(None, None), (100, None), (100, 1000), (100, 200), (None, 300), (100, 1000, 0.6)]
    assert [sweep_report.phase(*case) for case in cases] == [
        "confusion", "memorisation", "grokking", "comprehension", "comprehension", "confusion"]


BAD = [
    (["--grid", "train.no_such=1,2"], "unknown config key"),
    (["--grid", "train.lr=fast,slow"], "expected a number"),
    (["--grid", "train.lr"], "--grid expects key=value1,value2"),
    (["--grid", "p=11,13", "--one-program"], "the grid makes 2 programs"),
    (["--grid", "train.seed=1,2"], "sweep seeds with --seeds"),
]


@pytest.mark.parametrize("argv, message", BAD, ids=[m for _, m in BAD])
def test_bad_sweep_input_is_one_line_before_any_compute(tmp_path, capsys, argv, message):
    out = tmp_path / "sweep"
    code = cli.main(["sweep", "grokking_small", *argv, "--out", str(out), "--wandb", "off", "--quiet"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not out.exists()


def test_resuming_a_sweep_dir_with_another_grid_is_refused(lr_wd_sweep, capsys):
    cfg = tiny_grokking(steps=50, ckpt_every=25, eval_every=25)
    with pytest.raises(mj.ConfigError, match="was made with grid"):
        mj.sweep(cfg, {"train.lr": ["1e-3"]}, lr_wd_sweep.sweep_dir, resume=True, wandb="off")
    # the same grid resumes: every program is finished, so nothing trains again
    again = mj.sweep(cfg, GRID, lr_wd_sweep.sweep_dir, seeds=(0, 1), resume=True, wandb="off", progress=False)
    assert again.members == lr_wd_sweep.members


@pytest.mark.slow  # ~20 s; the default suite checks a member against its solo run on the lr x seed sweep
def test_train_fraction_data_seed_and_init_scale_members_share_one_program_and_equal_their_solo_runs(tmp_path):
    cfg = tiny_grokking(steps=50, ckpt_every=25, eval_every=25)
    grid = {"train_frac": ["0.3", "0.6"], "data_seed": ["1", "2"], "model.init_std": ["0.2"]}  # base std: 0.8/sqrt(32)
    sweep = mj.sweep(cfg, grid, tmp_path / "split", one_program=True, wandb="off", progress=False)
    (traj,) = sweep.trajectories
    assert traj.params["W_E"].shape[:2] == (3, 4)
    assert len({float(traj.metrics["test_loss"][0, m]) for m in range(4)}) == 4  # four different splits
    for m in (3,):  # train_frac 0.6, data seed 2, init std 0.2
        solo_cfg = traj.member_config(m)
        assert (solo_cfg.train_frac, solo_cfg.data_seed, solo_cfg.model.init_std) == (0.6, 2, 0.2)
        mj.train(solo_cfg, tmp_path / f"solo{m}", wandb="off", progress=False)
        solo = mj.Trajectory.load(tmp_path / f"solo{m}")
        np.testing.assert_allclose(traj.params["W_E"][0, m], solo.params["W_E"][0, 0], rtol=1e-6)  # the init scale
        for name in ("W_E", "W_U"):
            np.testing.assert_allclose(traj.params[name][:, m], solo.params[name][:, 0], rtol=1e-4, atol=1e-5)
        for metric in ("train_loss", "test_loss", "train_acc", "test_acc"):
            np.testing.assert_allclose(traj.metrics[metric][:, m], solo.metrics[metric][:, 0], rtol=1e-4, atol=1e-6)
