"""Training: the run dir as a checkpoint series, ensembles, exact resume after kill -9, bad states."""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import mi_jax as mj
from conftest import tiny_grokking
from mi_jax import config as config_lib
from mi_jax.io import run_dir as run_dir_lib
from mi_jax.io.state import StateStore
from mi_jax.tasks.grokking import GrokkingTask
from mi_jax.tasks.induction import InductionTask
from mi_jax.training import devices, loop, parallel
from mi_jax.trees import leaf_name


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One finished tiny run (steps 0..200, a snapshot every 50) and its final metrics row."""
    path = tmp_path_factory.mktemp("trained") / "run"
    final = mj.train(tiny_grokking(), path, wandb="off", progress=False)
    return path, final


@pytest.fixture
def run_copy(trained_run, tmp_path):
    """A private copy of the trained run, for tests that damage it."""
    shutil.copytree(trained_run[0], tmp_path / "run")
    return tmp_path / "run"


def test_run_dir_loads_as_one_stacked_trajectory(trained_run, tiny_cfg):
    path, final = trained_run
    traj = mj.Trajectory.load(path)
    assert list(traj.steps) == [0, 50, 100, 150, 200]
    assert traj.params["W_E"].shape == (5, 1, 14, 32)  # [time, member, vocab, d_model]: a solo run is one member
    assert traj.params["blocks"][0]["attn"]["W_Q"].shape == (5, 1, 2, 32, 16)
    assert traj.config == tiny_cfg and traj.members == ({"seed": 0},)
    assert list(traj.metrics["step"]) == [0] + list(range(25, 201, 25))
    assert traj.metrics["train_loss"].shape == (9, 1)
    assert traj.metrics["train_loss"][-1, 0] == pytest.approx(final["train_loss"])
    assert traj.metrics["train_loss"][-1, 0] < traj.metrics["train_loss"][0, 0]
    # the snapshot at the end equals what the task evaluates to in the metrics
    task = GrokkingTask(tiny_cfg)
    last = jax.tree.map(np.asarray, traj.at(-1, 0))
    assert float(task.evaluate(last)["train_loss"]) == pytest.approx(final["train_loss"], rel=1e-5)


def test_frozen_biases_stay_zero_and_minibatches_train(tmp_path):
    cfg = tiny_grokking(freeze_biases=True, batch_size=32, steps=100)
    mj.train(cfg, tmp_path / "run", wandb="off", progress=False)
    traj = mj.Trajectory.load(tmp_path / "run")
    assert np.all(traj.params["blocks"][0]["mlp"]["b_in"] == 0)
    assert np.all(traj.params["b_U"] == 0)
    assert not np.allclose(traj.params["W_E"][0], traj.params["W_E"][-1])
    assert traj.metrics["train_loss"][-1, 0] < traj.metrics["train_loss"][0, 0]


def _split_and_plain_chunks(extra: dict):
    """One chunk of 25 steps with and without data_parallel: [(state, member params, metrics)] x 2."""
    chunks = []
    for parallel_on in (False, True):
        cfg = tiny_grokking(steps=50, ckpt_every=25, data_parallel=parallel_on, **extra)
        trainer = loop.Trainer(GrokkingTask(cfg), cfg.train)
        state, metrics = trainer.train_steps(trainer.init_state(), 25)
        chunks.append((state, trainer.member_params(state["params"]), metrics))
    return chunks


def _assert_split_equals_plain(chunks, n_members: int):
    # equal up to float reassociation; (b_K has no gradient but float noise, which Adam scales up to lr)
    (_, plain, plain_metrics), (split_state, split, split_metrics) = chunks
    assert split_state["params"]["W_E"].sharding.num_devices == 2
    assert split["W_E"].shape == plain["W_E"].shape == (n_members, 14, 32)
    for name in ("W_E", "W_U"):
        np.testing.assert_allclose(split[name], plain[name], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(split_metrics["test_loss"], plain_metrics["test_loss"], rtol=1e-4)


def test_a_sharded_ensemble_equals_the_one_device_ensemble():
    # its 3 seeds padded to 4 with a copy of the last and split 2 and 2 over the 2 test CPU devices;
    # the dummy member is neither in the params nor the metrics
    assert jax.local_device_count() == 2, "conftest sets two CPU devices"
    _assert_split_equals_plain(_split_and_plain_chunks({"seeds": (3, 5, 7)}), 3)


@pytest.mark.slow  # the solo run's split batch; the induction chunk test splits a batch in the default suite
def test_a_solo_run_with_its_batch_split_equals_the_one_device_run():
    _assert_split_equals_plain(_split_and_plain_chunks({"batch_size": 32}), 1)


@pytest.mark.slow  # three short runs; the default suite resumes data-parallel members in the padded-ensemble test
def test_a_data_parallel_run_resumes_exactly(tmp_path):
    # interrupted after 1 of 2 chunks, resumed: bit-identical to the uninterrupted data-parallel run
    cfg = tiny_grokking(steps=50, ckpt_every=25, batch_size=32, data_parallel=True)
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / run_dir_lib.CONFIG).write_text(config_lib.dumps(cfg))
    loop.train_task(GrokkingTask(cfg), cut, progress=False, stop_after_chunks=1)
    assert list(mj.Trajectory.load(cut).steps) == [0, 25]
    mj.resume(cut, wandb="off", progress=False)
    mj.train(cfg, tmp_path / "whole", wandb="off", progress=False)
    a, b = mj.Trajectory.load(cut, on_corrupt="raise"), mj.Trajectory.load(tmp_path / "whole")
    assert list(a.steps) == list(b.steps) == [0, 25, 50]
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        assert np.array_equal(x, y)


def test_data_parallel_induction_chunk_splits_its_evaluation_and_matches_the_plain_evaluation(monkeypatch):
    # the induction task passes its evaluation batches through `split_batch`: split over the 2 devices
    # inside the chunk, the metrics equal the task's own (unsplit) evaluation of the same params
    import mi_jax.tasks.induction as induction_tasks

    split_over = []  # the sharding active at each call while the chunk is traced

    def recording_split_batch(tree):
        split_over.append(parallel._BATCH_SHARDING.get())
        return parallel.split_batch(tree)

    monkeypatch.setattr(induction_tasks, "split_batch", recording_split_batch)
    cfg = mj.InductionConfig(seq_len=16, d_vocab=16, repeat_len=6, min_repeat_len=3, n_eval=8,
                             model=mj.TransformerConfig(n_layers=2, d_model=16, n_heads=2, d_mlp=None, layer_norm=True),
                             train=mj.TrainConfig(steps=10, lr=1e-3, batch_size=8, eval_every=10, ckpt_every=10,
                                                  data_parallel=True))
    task = InductionTask(cfg)
    trainer = loop.Trainer(task, cfg.train)
    state, metrics = trainer.train_steps(trainer.init_state(), 10)
    assert state["params"]["W_E"].sharding.num_devices == 2
    assert split_over and all(sharding is not None and sharding.num_devices == 2 for sharding in split_over)
    plain = jax.jit(task.evaluate)(jax.device_get(state["params"]))
    for name in ("test_loss", "icl_score", "probe_copy_loss"):
        np.testing.assert_allclose(metrics[name][-1], plain[name], rtol=1e-5, atol=1e-6)


def test_split_batch_and_mean_value_and_grad():
    split = NamedSharding(Mesh(np.array(jax.local_devices()[:2]), ("data",)), PartitionSpec("data"))
    rows, odd = jnp.arange(8.0).reshape(4, 2), jnp.arange(3.0)
    with parallel.splitting_batches(split):
        a, b = jax.jit(lambda: parallel.split_batch((rows * 2, odd * 2)))()
    assert a.sharding.is_equivalent_to(split, 2)
    assert b.sharding.is_fully_replicated  # 3 rows do not split over 2 devices
    assert parallel.split_batch(rows) is rows  # outside a data-parallel chunk: unchanged
    # one all-reduce of every device's (loss, grads) = value_and_grad of the mean over the whole batch
    loss = lambda p, batch: ((batch @ p["w"] + p["b"] - 1.0) ** 2).mean()  # noqa: E731
    params, batch = {"w": jnp.array([0.3, -0.2]), "b": jnp.array(0.1)}, jnp.arange(16.0).reshape(8, 2) / 8
    want = jax.value_and_grad(loss)(params, batch)
    got = jax.jit(parallel.mean_value_and_grad(loss, split))(params, batch)
    for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(x, y, rtol=1e-6)


@pytest.mark.slow  # ~11 s cold; the sharded and the padded ensemble tests keep the member split in the default suite
def test_data_parallel_uses_as_many_devices_as_divide_the_batch():
    # a solo run: params replicated on both devices, each 32-row batch split in two
    solo = tiny_grokking(batch_size=32, data_parallel=True)
    plan = devices.plan(GrokkingTask(solo), solo.train)
    assert plan.state.spec == PartitionSpec() and plan.batch.spec == PartitionSpec("data")
    assert plan.state.mesh.size == plan.batch.mesh.size == 2
    # an ensemble of 4: its seeds split 2 and 2 (state and metrics), each seed's batch whole on its device
    four = tiny_grokking(seeds=(0, 1, 2, 3), data_parallel=True, steps=50)
    trainer = loop.Trainer(GrokkingTask(four), four.train)
    state, metrics = trainer.train_steps(trainer.init_state(), 10)
    assert trainer.plan.state.spec == PartitionSpec("data")
    assert devices.plan(GrokkingTask(four), four.train).batch is None
    w_e = state["params"]["W_E"]
    assert w_e.shape == (4, 14, 32) and {shard.data.shape for shard in w_e.addressable_shards} == {(2, 14, 32)}
    # sizes the devices do not divide fall back to one device
    odd = tiny_grokking(batch_size=25, data_parallel=True)
    assert devices.plan(GrokkingTask(odd), odd.train).state is None  # 25 rows: one device
    # members the devices do not divide are padded: 3 seeds on 2 devices compute 4, of which 3 are saved
    three = tiny_grokking(seeds=(0, 1, 2), data_parallel=True)
    padded = devices.plan(GrokkingTask(three), three.train)
    assert padded.state.mesh.size == 2 and padded.n_dummies == 1
    assert padded.padding == "2 devices, 3 members: padded to 4 (1 dummy member not saved)"
    # train.devices splits over that many even without data_parallel; more than exist is one line
    assert devices.plan(GrokkingTask(three), dataclasses.replace(three.train, data_parallel=False, devices=1)) \
        .state is None
    with pytest.raises(mj.ConfigError, match="train.devices=3 but only 2 devices exist"):
        devices.plan(GrokkingTask(three), dataclasses.replace(three.train, devices=3))


def _cut_padded_ensemble(path: Path):
    """3 seeds on 2 devices (a 4th computed, a copy of seed 7), stopped after its first chunk of 25 steps."""
    cfg = tiny_grokking(seeds=(3, 5, 7), steps=50, ckpt_every=25, data_parallel=True, chunk_steps=25)
    path.mkdir()
    (path / run_dir_lib.CONFIG).write_text(config_lib.dumps(cfg))
    loop.train_task(GrokkingTask(cfg), path, progress=False, stop_after_chunks=1)
    return cfg


def test_a_padded_ensemble_writes_only_its_members_and_resumes_exactly(tmp_path, capsys):
    # the series holds the 3, the train state the 4 computed, each device's shard as it is; a resume on
    # the 2 devices is bit-identical to the uninterrupted run
    cfg = _cut_padded_ensemble(tmp_path / "cut")
    assert "2 devices, 3 members: padded to 4 (1 dummy member not saved)" in capsys.readouterr().err
    assert StateStore(tmp_path / "cut", read_only=True).latest_meta()["computed_members"] == 4
    mj.resume(tmp_path / "cut", wandb="off", progress=False)
    mj.train(cfg, tmp_path / "whole", wandb="off", progress=False)
    a, b = mj.Trajectory.load(tmp_path / "cut", on_corrupt="raise"), mj.Trajectory.load(tmp_path / "whole")
    assert a.params["W_E"].shape == (3, 3, 14, 32) and a.metrics["test_loss"].shape == (3, 3)
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        assert np.array_equal(x, y)


ONE_DEVICE_RESUME = """
import sys, jax
jax.config.update("jax_num_cpu_devices", 1)
import mi_jax as mj
mj.resume(sys.argv[1], wandb="off", progress=False)
"""


@pytest.mark.slow  # a fresh process: ~8 s
def test_a_padded_ensemble_resumes_on_another_layout_from_its_state_read_on_the_host(tmp_path):
    # on a single device no member is padded: the state saved for 4 computed members is read on the host
    # and the run goes on with its 3
    _cut_padded_ensemble(tmp_path / "cut")
    before = np.asarray(mj.Trajectory.load(tmp_path / "cut").params["W_E"])
    done = subprocess.run([sys.executable, "-c", ONE_DEVICE_RESUME, str(tmp_path / "cut")], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    c = mj.Trajectory.load(tmp_path / "cut", on_corrupt="raise")
    assert c.params["W_E"].shape == (3, 3, 14, 32) and c.steps.tolist() == [0, 25, 50]
    np.testing.assert_array_equal(c.params["W_E"][:2], before)  # the rows written before the cut
    assert np.isfinite(np.asarray(c.params["W_E"])).all()


RESUME_SCRIPT = """
import sys
import mi_jax as mj
from conftest import tiny_grokking
cfg = tiny_grokking(steps=400, ckpt_every=20, eval_every=20, chunk_steps=20)
mj.train(cfg, sys.argv[1], wandb="off", progress=False)
"""


@pytest.mark.slow  # ~13 s; stopped-and-resumed runs are bit-identical in the default suite (test_reproducibility)
def test_resume_after_kill_9_is_bit_identical(tmp_path):
    cfg = tiny_grokking(steps=400, ckpt_every=20, eval_every=20, chunk_steps=20)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-c", RESUME_SCRIPT, str(killed)], cwd=Path(__file__).parent,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.time() + 240
    index = killed / "snapshots" / "index.json"
    while time.time() < deadline and proc.poll() is None:
        if index.exists() and len(json.loads(index.read_text() or '{"steps": []}')["steps"]) >= 5:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"training finished or died before the kill: {proc.stderr.read()[-500:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    n_before = len(json.loads(index.read_text())["steps"])
    assert n_before < 21, "the kill came after the end"

    mj.resume(killed, wandb="off", progress=False)
    mj.train(cfg, tmp_path / "straight", wandb="off", progress=False)
    a, b = mj.Trajectory.load(killed, on_corrupt="raise"), mj.Trajectory.load(tmp_path / "straight")
    assert list(a.steps) == list(b.steps) == list(range(0, 401, 20))
    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a.params)[0], jax.tree.leaves(b.params)):
        assert np.array_equal(x, y), f"{leaf_name(path)} differs after resume"
    assert np.array_equal(a.metrics["step"], b.metrics["step"])
    assert np.array_equal(a.metrics["test_loss"], b.metrics["test_loss"])


def chunk_file(run_dir: Path, name: str, row: int) -> Path:
    """The file holding snapshot `row` of parameter `name` (every member of a one-process run)."""
    (path,) = [p for p in (run_dir / run_dir_lib.SNAPSHOTS / name / "c" / str(row)).rglob("*") if p.is_file()]
    return path


def test_corrupt_snapshot_is_named_and_skipped(run_copy):
    path = chunk_file(run_copy, "W_U", 2)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10  # silently flip one bit of the snapshot at step 100
    path.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="step 100.*W_U"):
        traj = mj.Trajectory.load(run_copy)
    assert list(traj.steps) == [0, 50, 150, 200]
    assert np.asarray(traj.params["W_U"]).shape[0] == 4
    with pytest.raises(mj.CheckpointError, match="step 100"):
        mj.Trajectory.load(run_copy, on_corrupt="raise")


def test_truncated_or_missing_snapshot_is_named(run_copy):
    path = chunk_file(run_copy, "W_E", 1)
    path.write_bytes(path.read_bytes()[:100])
    chunk_file(run_copy, "b_U", 3).unlink()
    with pytest.warns(UserWarning) as caught:
        traj = mj.Trajectory.load(run_copy)
    truncated, missing = (str(w.message) for w in caught)
    assert "step 50 " in truncated and "W_E" in truncated
    assert "step 150 " in missing and "b_U" in missing and "missing" in missing
    assert list(traj.steps) == [0, 100, 200]


def test_resume_falls_back_to_the_last_good_state(run_copy):
    state_dir = run_copy / "state"
    newest = max((p for p in state_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    for f in (newest / "state").rglob("*"):
        if f.is_file() and f.stat().st_size > 0 and "metadata" not in f.name:
            f.write_bytes(b"\0" * f.stat().st_size)  # zero every data file of the newest state
    with pytest.warns(UserWarning, match=f"step {newest.name}"):
        mj.resume(run_copy, wandb="off", progress=False)
    traj = mj.Trajectory.load(run_copy, on_corrupt="raise")
    assert list(traj.steps) == [0, 50, 100, 150, 200]


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = tiny_grokking(lr=1e30, warmup_steps=0, weight_decay=0.0)
    with pytest.raises(loop.TrainingDiverged, match="NaN"):
        mj.train(cfg, tmp_path / "run", wandb="off", progress=False)
    traj = mj.Trajectory.load(tmp_path / "run", on_corrupt="raise")
    assert len(traj) >= 1
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(traj.params))


def test_config_round_trips_through_json(tiny_cfg):
    data = json.loads(config_lib.dumps(tiny_cfg))
    assert data["kind"] == "grokking"
    assert config_lib.from_dict(type(tiny_cfg), data) == tiny_cfg
    seeds = config_lib.override(tiny_cfg, {"train.seeds": "1,2,3", "p": "17"})
    assert seeds.train.seeds == (1, 2, 3) and seeds.p == 17 and seeds.transformer.d_vocab == 18


@pytest.mark.slow
def test_grokking_small_groks_on_cpu(tmp_path):
    """The demo preset generalises: test accuracy >= 0.95 by the end (a minute or two on 2 cores)."""
    final = mj.train(mj.load_preset("grokking_small"), tmp_path / "run", wandb="off", progress=False)
    assert final["train_acc"] == 1.0
    assert final["test_acc"] >= 0.95
    traj = mj.Trajectory.load(tmp_path / "run")
    at_200 = traj.metrics["step"] == 200
    assert traj.metrics["train_acc"][at_200][0, 0] > 0.99, "memorises the training set first"
    assert traj.metrics["test_acc"][at_200][0, 0] < 0.3, "... while the test accuracy is still low"


def test_a_bfloat16_forward_pass_trains_float32_parameters_close_to_the_float32_run(tmp_path):
    runs = {}
    for dtype in ("float32", "bfloat16"):
        cfg = tiny_grokking(steps=50, ckpt_every=50, compute_dtype=dtype)
        trainer = loop.Trainer(GrokkingTask(cfg), cfg.train)
        state, metrics = trainer.train_steps(trainer.init_state(), 50, 25)
        runs[dtype] = (state, metrics)
    (f32, f32_metrics), (bf16, bf16_metrics) = runs["float32"], runs["bfloat16"]
    assert bf16["params"]["W_E"].dtype == jnp.float32 and bf16["opt_state"][0].mu["W_E"].dtype == jnp.float32
    assert not np.array_equal(bf16["params"]["W_E"], f32["params"]["W_E"])  # the bfloat16 pass did run
    # bfloat16 keeps ~3 significant digits: 50 steps drift apart a little, not far
    np.testing.assert_allclose(bf16_metrics["train_loss"], f32_metrics["train_loss"], rtol=0.05)
    assert float(bf16_metrics["train_loss"][-1, 0]) < float(bf16_metrics["train_loss"][0, 0])
