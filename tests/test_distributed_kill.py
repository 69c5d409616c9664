"""A process of a 2-process run killed in the middle of writing its snapshot blocks: the other process
stops, the index never lists a row with a missing chunk, and a resume on 2 fresh processes continues
from the last saved state, bit-identical to an uninterrupted 2-process run.

Each process writes the zarr chunks of the members on its own devices, then all meet (`distributed.sync`)
and process 0 lists the rows in snapshots/index.json, then all save the train state together; a
process killed before the meeting leaves chunks of rows that no index lists and no state counts."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import mi_jax as mj
from mi_jax.io.state import StateStore
from test_distributed import _free_port, _gloo_available

KILL_AT_WRITE = 3  # process 1 dies in its 3rd snapshot write: row 0, chunk 1 (rows 1-4), then chunk 2 (rows 5-8)
STOP_BOUND_S = 150  # how long the surviving process may take to stop before the test kills it

# each of the 2 processes runs this: argv = coordinator address, process id, output folder, mode
# mode "kill": train the ensemble into out/cut, process 1 killing itself (SIGKILL) in the middle of its
# KILL_AT_WRITE-th `SeriesWriter._write`, after writing the blocks of some of the params only;
# mode "resume": resume out/cut, then train the same config uninterrupted into out/whole
SCRIPT = """
import os, signal, sys, time
from pathlib import Path

from mi_jax.training import distributed

distributed.initialize(coordinator=sys.argv[1], num_processes=2, process_id=int(sys.argv[2]))
import jax
import mi_jax as mj
from mi_jax.io.series import SeriesWriter
from test_distributed_kill import KILL_AT_WRITE, kill_config

assert jax.device_count() == 4 and jax.local_device_count() == 2
out, mode = Path(sys.argv[3]), sys.argv[4]
if mode == "kill":
    if jax.process_index() == 1:
        write, calls = SeriesWriter._write, []

        def dying_write(self, steps, blocks):
            calls.append(steps)
            if len(calls) < KILL_AT_WRITE:
                return write(self, steps, blocks)
            names = list(blocks)
            write(self, steps, {n: (b if i < len(names) // 2 else []) for i, (n, b) in enumerate(blocks.items())})
            print(f"process 1: wrote {len(names) // 2} of {len(names)} params of rows {steps}, killing myself",
                  flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

        SeriesWriter._write = dying_write
    mj.train(kill_config(), out / "cut", wandb="off", progress=False)
    print("training finished: process 1 was not killed", flush=True)
else:
    mj.resume(out / "cut", wandb="off", progress=False)
    mj.train(kill_config(), out / "whole", wandb="off", progress=False)
"""


def kill_config():
    """An ensemble of 4 seeds, one per device of 2 processes x 2 devices, a snapshot every step, written
    every 4 steps (a chunk)."""
    return mj.GrokkingConfig(p=11, train_frac=0.5, data_seed=1,
                             model=mj.TransformerConfig(n_layers=1, d_model=32, n_heads=2, d_mlp=32),
                             train=mj.TrainConfig(steps=24, lr=3e-3, eval_every=4, ckpt_every=1, chunk_steps=4,
                                                  seeds=(0, 1, 2, 3)))


def _start(tmp_path: Path, mode: str) -> list[tuple[subprocess.Popen, Path]]:
    here = Path(__file__).resolve().parent
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": "2", "PYTHONPATH": os.pathsep.join([str(here.parent), str(here)]),
           "JAX_COMPILATION_CACHE_DIR": str(here.parent / ".pytest_cache" / "xla"), "JAX_PLATFORMS": "cpu"}
    address, procs = f"localhost:{_free_port()}", []
    for i in range(2):
        log = tmp_path / f"{mode}_{i}.log"
        with open(log, "w") as f:
            procs.append((subprocess.Popen([sys.executable, "-c", SCRIPT, address, str(i), str(tmp_path), mode],
                                           env=env, stdout=f, stderr=subprocess.STDOUT), log))
    return procs


def _tail(procs) -> str:
    return "\n".join(f"--- {log.name}:\n{log.read_text()[-3000:]}" for _, log in procs)


def chunk_files(snap_dir: Path, row: int) -> list[Path]:
    """The chunk files of snapshot `row`, every param and member block."""
    return [p for p in snap_dir.glob(f"*/c/{row}/**/*") if p.is_file()]


@pytest.mark.slow  # ~1-2 min on 2 cores: 4 processes, each compiling the ensemble's programs
@pytest.mark.skipif(not _gloo_available(), reason="this jaxlib has no gloo CPU collectives for several processes")
def test_a_process_killed_mid_write_stops_the_run_and_a_resume_is_exact(tmp_path):
    procs = _start(tmp_path, "kill")
    (p0, _), (p1, _) = procs
    try:
        assert p1.wait(timeout=240) == -9, _tail(procs)  # process 1 killed itself, mid-write
        died = time.monotonic()
        try:
            p0.wait(timeout=STOP_BOUND_S)
            hung = False
        except subprocess.TimeoutExpired:
            p0.kill()
            p0.wait()
            hung = True
        stopped_after = time.monotonic() - died
    finally:
        for p, _ in procs:
            p.kill()
            p.wait()
    said = [line for line in procs[0][1].read_text().splitlines() if line.strip()]
    print(f"process 0 {'hung and was killed' if hung else 'stopped by itself'} {stopped_after:.1f} s after "
          f"process 1 died (exit status {p0.returncode}); its last line: {said[-1] if said else ''}")
    assert "killing myself" in procs[1][1].read_text()
    assert not hung, f"process 0 still ran {STOP_BOUND_S} s after process 1 died:\n{_tail(procs)}"
    assert p0.returncode != 0, "process 0 finished a run that lost a process"
    assert "--overwrite" not in "\n".join(said), "process 0 says to start again, but a resumable state was saved"

    cut, snap_dir = tmp_path / "cut", tmp_path / "cut" / "snapshots"
    listed = json.loads((snap_dir / "index.json").read_text())["steps"]
    saved = StateStore(cut, read_only=True).latest_meta()
    # the rows of chunk 2 were half written (process 0's blocks, some of process 1's): none of them listed,
    # nor counted by the saved state, which is that of the end of chunk 1
    assert listed == [0, 1, 2, 3, 4] and saved["step"] == 4 and saved["snapshots"] == 5
    assert chunk_files(snap_dir, 5), "the kill came before any block of the next rows was written"
    every = len(chunk_files(snap_dir, 0))
    assert 0 < len(chunk_files(snap_dir, 5)) < every
    # every listed row is whole: loading with on_corrupt="raise" reads every chunk of it
    killed = mj.Trajectory.load(cut, on_corrupt="raise")
    assert list(killed.steps) == listed

    procs = _start(tmp_path, "resume")
    try:
        for p, _ in procs:
            p.wait(timeout=300)
    finally:
        for p, _ in procs:
            p.kill()
            p.wait()
    assert all(p.returncode == 0 for p, _ in procs), _tail(procs)
    a = mj.Trajectory.load(cut, on_corrupt="raise")
    b = mj.Trajectory.load(tmp_path / "whole", on_corrupt="raise")
    assert list(a.steps) == list(b.steps) == list(range(25))
    assert a.params["W_E"].shape == (25, 4, 12, 32)
    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a.params)[0], jax.tree.leaves(b.params)):
        assert np.array_equal(x, y), f"{jax.tree_util.keystr(path)} differs after the resume"
    # the rows written before the kill are those of the uninterrupted run too
    for x, y in zip(jax.tree.leaves(killed.params), jax.tree.leaves(b.params)):
        assert np.array_equal(np.asarray(x), np.asarray(y)[:5])
    for name in ("train_loss", "test_loss"):
        assert np.array_equal(a.metrics[name], b.metrics[name])
    assert list(a.metrics["step"]) == list(range(0, 25, 4))
