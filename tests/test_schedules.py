"""Checkpoint schedules: log-spaced and adaptive snapshots give the series they promise."""

import dataclasses

import jax
import numpy as np
import pytest

import mi_jax as mj
from conftest import tiny_grokking
from mi_jax.io import run_dir as run_dir_lib
from mi_jax.trees import leaf_name
from mi_jax import config as config_lib
from mi_jax.tasks import make_task
from mi_jax.training import loop, schedule


def test_snapshots_evaluations_and_the_segments_of_a_chunk():
    log = mj.TrainConfig(steps=300, eval_every=25, ckpt_every=100, ckpt_schedule="log")
    assert schedule.base_steps(log) == [0, 1, 2, 4, 8, 16, 32, 64, 100, 200, 300]
    assert schedule.base_steps(dataclasses.replace(log, ckpt_schedule="linear")) == [0, 100, 200, 300]
    # steps need not be a multiple of ckpt_every: the last step always gets a snapshot and an evaluation
    odd = mj.TrainConfig(steps=110, eval_every=25, ckpt_every=50)
    assert schedule.base_steps(odd) == [0, 50, 100, 110]
    assert schedule.evaluation_steps(odd) == [25, 50, 75, 100, 110]
    # a chunk of at most 60 steps from 64: segments end at the snapshot (100) and evaluations (75, 100) within it
    chunk = schedule.next_chunk(64, log, 4, 60)
    assert chunk.ends == [75, 100] and chunk.lengths.tolist() == [11, 25, 0, 0]
    assert chunk.evaluations.tolist() == [True, True, False, False] and chunk.snapshots.tolist() == [False, True, False, False]
    # every step a snapshot: a chunk holds as many as it has slots
    dense = mj.TrainConfig(steps=1000, eval_every=100, ckpt_every=1)
    assert schedule.next_chunk(10, dense, 8, 500).ends == list(range(11, 19))
    # nothing to stop at within the chunk's work: one segment of that many steps, neither evaluated nor kept
    sparse = schedule.next_chunk(0, mj.TrainConfig(steps=1000, eval_every=1000, ckpt_every=1000), 8, 300)
    assert sparse.ends == [300] and not sparse.evaluations.any() and not sparse.snapshots.any()
    # a loss moves in decades; a base snapshot resets the reference; the budget caps the picks
    moves = schedule.watched_value("test_loss", np.array([[1.0], [0.5], [0.05], [0.04], [0.001]]))
    base = np.array([False, False, False, True, False])
    assert schedule.extra_snapshots(moves, base, moves[0], 0.5, budget=9)[0] == [2, 4]
    assert schedule.extra_snapshots(moves, base, np.log10([10.0]), 0.5, budget=1)[0] == [0]
    with pytest.raises(mj.ConfigError, match="ckpt_schedule"):
        mj.override(tiny_grokking(), {"train.ckpt_schedule": "cubic"})


def test_a_log_spaced_run_snapshots_early_steps_and_resumes_exactly(tmp_path):
    cfg = tiny_grokking(steps=32, eval_every=4, ckpt_every=16, ckpt_schedule="log", seeds=(0, 1),
                        snapshot_compression="zstd", chunk_steps=4)
    mj.train(cfg, tmp_path / "whole", wandb="off", progress=False)
    traj = mj.Trajectory.load(tmp_path / "whole")
    assert traj.steps.tolist() == [0, 1, 2, 4, 8, 16, 32]
    assert "zstd" in (tmp_path / "whole" / "snapshots" / "W_E" / "zarr.json").read_text()
    assert traj.params["W_E"].shape[:2] == (7, 2)
    # an evaluation every eval_every steps: the snapshots between need none
    assert traj.metrics["step"].tolist() == [0, 4, 8, 12, 16, 20, 24, 28, 32]
    assert not np.array_equal(traj.params["W_E"][1], traj.params["W_E"][2])  # one AdamW step apart

    cut = tmp_path / "cut"  # stopped after the chunk to step 4 (of 8), then resumed
    cut.mkdir()
    (cut / run_dir_lib.CONFIG).write_text(config_lib.dumps(cfg))
    loop.train_task(make_task(cfg), cut, progress=False, stop_after_chunks=1)
    assert mj.Trajectory.load(cut).steps.tolist() == [0, 1, 2, 4]
    mj.resume(cut, wandb="off", progress=False)
    resumed = mj.Trajectory.load(cut)
    assert resumed.steps.tolist() == traj.steps.tolist()
    assert resumed.metrics["step"].tolist() == traj.metrics["step"].tolist()
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(traj.params), jax.tree.leaves(resumed.params)):
        assert np.array_equal(x, y), f"{leaf_name(path)} differs after resume"


def test_adaptive_snapshots_fall_where_the_watched_metric_moves_and_are_the_run_s_params(tmp_path):
    """Extra snapshots land at evaluations where the train loss moved more than ckpt_delta (log10)
    since the previous snapshot, within the budget, and each is the model at that step: the same
    params as a run that snapshots at every evaluation."""
    every = tiny_grokking(steps=40, eval_every=5, ckpt_every=5, seeds=(0, 1))
    mj.train(every, tmp_path / "every", wandb="off", progress=False)
    reference = mj.Trajectory.load(tmp_path / "every")

    budget, delta = 3, 0.01
    adaptive = mj.override(every, {"train.ckpt_every": "40", "train.ckpt_watch": "train_loss",
                                   "train.ckpt_delta": str(delta), "train.ckpt_extra": str(budget)})
    mj.train(adaptive, tmp_path / "adaptive", wandb="off", progress=False)
    traj = mj.Trajectory.load(tmp_path / "adaptive")
    steps = traj.steps.tolist()
    extras = [s for s in steps if s % 40]
    assert len(extras) == budget, f"the loss falls fast early, so the budget is spent: {steps}"
    assert steps == sorted(steps) and {0, 40} <= set(steps)

    # each extra: the watched loss (log10, largest move over members) moved > delta since the snapshot before
    loss = dict(zip(traj.metrics["step"].tolist(), np.log10(traj.metrics["train_loss"])))
    for before, step in zip(steps, steps[1:]):
        if step in extras:
            assert np.max(np.abs(loss[step] - loss[before])) > delta, (before, step)
    # and until the budget ran out, no evaluation that moved that far was passed over
    last = steps[0]
    for step in traj.metrics["step"][1:]:
        if step > extras[-1]:
            break
        if step in steps:
            last = step
        else:
            assert np.max(np.abs(loss[step] - loss[last])) <= delta, f"step {step} moved but has no snapshot"

    at = {s: i for i, s in enumerate(reference.steps.tolist())}
    for i, step in enumerate(steps):
        np.testing.assert_allclose(traj.params["W_E"][i], reference.params["W_E"][at[step]], rtol=1e-5, atol=1e-7)

    with pytest.raises(mj.ConfigError, match="not a metric of this task"):
        mj.train(mj.override(adaptive, {"train.ckpt_watch": "val_loss"}), tmp_path / "bad", wandb="off", progress=False)
