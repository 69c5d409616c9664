"""Several processes, one run: a sweep trained by 2 processes of 2 CPU devices each equals the
one-process sweep; process 0 alone writes the run dir; a stopped 2-process run resumes exactly."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import mi_jax as mj
from mi_jax.io import run_dir as run_dir_lib
from mi_jax.trees import flatten

GRID = {"train.lr": ["1e-3", "3e-3"]}

# each of the 2 processes runs this: argv = coordinator address, process id, output folder
TWO_PROCESS_SCRIPT = """
import sys
from pathlib import Path

from mi_jax.training import distributed

distributed.initialize(coordinator=sys.argv[1], num_processes=2, process_id=int(sys.argv[2]))
import jax
import mi_jax as mj
from mi_jax import config as config_lib
from mi_jax.io import run_dir as run_dir_lib
from mi_jax.trees import flatten
from mi_jax.tasks import make_task
from mi_jax.training import loop
from test_distributed import GRID, sweep_config

assert jax.device_count() == 4 and jax.local_device_count() == 2
out = Path(sys.argv[3])
sweep = mj.sweep(sweep_config(), GRID, out / "sweep", seeds=(0, 1), wandb="off", progress=False)
# the same program stopped after 2 of its 4 chunks (as if killed), then resumed by both processes
cut, members = out / "cut", sweep.trajectories[0].members
if distributed.is_writer():
    cut.mkdir()
    (cut / run_dir_lib.CONFIG).write_text(config_lib.dumps(sweep.trajectories[0].config))
    run_dir_lib.write_members(cut, list(members))
distributed.sync("cut run made")
task = make_task(sweep.trajectories[0].config)
loop.train_task(task, cut, progress=False, stop_after_chunks=2, members=list(members))
mj.resume(cut, wandb="off", progress=False)
"""


def sweep_config():
    """A grokking sweep of 4 members (2 lrs x 2 seeds) small enough to train 40 steps in a second."""
    return mj.GrokkingConfig(p=11, train_frac=0.5, data_seed=1,
                             model=mj.TransformerConfig(n_layers=1, d_model=32, n_heads=2, d_mlp=32),
                             train=mj.TrainConfig(steps=40, lr=3e-3, eval_every=10, ckpt_every=10))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _gloo_available() -> bool:
    from jax._src.lib import _jax

    return hasattr(_jax, "make_gloo_tcp_collectives")


@pytest.mark.slow  # ~50 s on 2 cores: process 1 compiles every program (jax caches compiles from process 0 only)
@pytest.mark.skipif(not _gloo_available(), reason="this jaxlib has no gloo CPU collectives for several processes")
def test_a_sweep_over_two_processes_equals_the_one_process_sweep_and_resumes(tmp_path):
    here = Path(__file__).resolve().parent
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": "2", "PYTHONPATH": os.pathsep.join([str(here.parent), str(here)]),
           "JAX_COMPILATION_CACHE_DIR": str(here.parent / ".pytest_cache" / "xla"), "JAX_PLATFORMS": "cpu"}
    address = f"localhost:{_free_port()}"
    procs = [subprocess.Popen([sys.executable, "-c", TWO_PROCESS_SCRIPT, address, str(i), str(tmp_path)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    try:
        outputs = [p.communicate(timeout=180)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outputs)

    two = mj.Sweep.load(tmp_path / "sweep")
    one = mj.sweep(sweep_config(), GRID, tmp_path / "one", seeds=(0, 1), wandb="off", progress=False)
    assert two.members == one.members and len(two.members) == 4
    (a,), (b,) = two.trajectories, one.trajectories
    assert list(a.steps) == list(b.steps) == [0, 10, 20, 30, 40]
    # every parameter of every member at every snapshot (but b_K: no gradient, only float noise that
    # Adam scales up to lr, so it differs with the order of float sums)
    ones = flatten(b.params)
    for name, two_processes in flatten(a.params).items():
        if name != "blocks.0.attn.b_K":
            np.testing.assert_allclose(two_processes, ones[name], rtol=1e-4, atol=1e-5, err_msg=name)
    for name in ("train_loss", "test_loss", "test_acc"):
        np.testing.assert_allclose(a.metrics[name], b.metrics[name], rtol=1e-4, atol=1e-6)
    # process 0 alone wrote: one metrics row per evaluation, not one per process
    assert len((a.run_dir / "metrics.jsonl").read_text().splitlines()) == 5
    assert not (a.run_dir / ".lock.owner").exists()

    # stopped after 2 chunks and resumed by both processes: bit-identical to the uninterrupted run
    cut = mj.Trajectory.load(tmp_path / "cut", on_corrupt="raise")
    assert list(cut.steps) == [0, 10, 20, 30, 40]
    for x, y in zip(jax.tree.leaves(cut.params), jax.tree.leaves(a.params)):
        assert np.array_equal(x, y)
    assert json.loads((tmp_path / "cut" / "snapshots" / "index.json").read_text())["steps"] == [0, 10, 20, 30, 40]
