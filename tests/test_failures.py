"""Failures a run cannot help, said in one line (`mi-jax: error: ...`, exit 2) with nothing lost: a full
disk (a write made to fail in each layer the loop writes through; a real 1 MB filesystem where one can be
mounted) and a process of a 2-process run killed (slow). Each run then resumes to the uninterrupted one."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import mi_jax as mj
from conftest import tiny_grokking
from mi_jax import cli, presets
from mi_jax.io import run_dir as run_dir_lib
from mi_jax.io.series import SeriesWriter
from mi_jax.io.state import StateStore, saved_step
from mi_jax.training import distributed, failures, loop
from mi_jax.trees import leaf_name

TINY = {"steps": 100, "eval_every": 25, "ckpt_every": 25, "chunk_steps": 25}  # 4 chunks, a snapshot after each
PRESET = f'"""A tiny grokking run."""\nfrom conftest import tiny_grokking\nPRESET = tiny_grokking(**{TINY!r})\n'

# what each layer the loop writes through raises when its filesystem is full (found on a full tmpfs)
TENSORSTORE_FULL = ValueError('RESOURCE_EXHAUSTED: Error writing local file "/x/run/snapshots/W_E/c/2/0/0/0": '
                              'Failed writing: "/x/run/snapshots/W_E/c/2/0/0/0.__lock": Failed to write 16388 bytes '
                              "to file 4: No space left on device [os_error_code='28']")
ORBAX_FULL = ValueError('RESOURCE_EXHAUSTED: Error writing "params.W_E/0.0" in OCDBT database at local file '
                        '"/x/run/state/50.orbax-checkpoint-tmp/state.orbax-checkpoint-tmp/ocdbt.process_0/": Failed '
                        "to write 549315 bytes to file 18: No space left on device [os_error_code='28']")
PYTHON_FULL = OSError(errno.ENOSPC, "No space left on device")


def cfg():
    return tiny_grokking(**TINY)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The tiny run, uninterrupted."""
    path = tmp_path_factory.mktemp("straight") / "run"
    mj.train(cfg(), path, wandb="off", progress=False)
    return path


@pytest.fixture
def preset_dir(tmp_path, monkeypatch):
    folder = tmp_path / "presets"
    folder.mkdir()
    (folder / "failing_tiny.py").write_text(PRESET)
    monkeypatch.setattr(presets, "USER_DIRS", [])  # `--presets` fills it; a fresh list, restored after
    return folder


def failing_at(call: int, error: BaseException):
    """A wrapper of a function that raises `error` on its `call`-th call instead of running."""
    calls = {"n": 0}

    def wrap(real):
        def failing(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == call:
                raise error
            return real(*args, **kwargs)

        return failing

    return wrap


def one_error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def assert_same_run(a: Path, b: Path) -> None:
    """Bit-identical series and metrics, and no metrics row written twice."""
    x, y = mj.Trajectory.load(a, on_corrupt="raise"), mj.Trajectory.load(b, on_corrupt="raise")
    assert list(x.steps) == list(y.steps)
    for (path, u), v in zip(jax.tree_util.tree_flatten_with_path(x.params)[0], jax.tree.leaves(y.params)):
        assert np.array_equal(u, v), f"{leaf_name(path)} differs after resume"
    for name in ("step", "train_loss", "test_loss"):
        assert np.array_equal(x.metrics[name], y.metrics[name]), name
    steps = [json.loads(line)["step"] for line in (a / run_dir_lib.METRICS).read_text().splitlines()]
    assert steps == sorted(set(steps)), "a metrics row written twice"


@pytest.mark.parametrize("layer", [pytest.param("snapshots", marks=pytest.mark.slow),  # ~5 s each: the
                                   pytest.param("metrics", marks=pytest.mark.slow), "state"])  # default suite is full
def test_a_full_disk_is_one_line_naming_the_last_step_and_resume_is_bit_identical(
        layer, straight, preset_dir, tmp_path, monkeypatch, capsys):
    # the 3rd write of the layer finds the disk full: in the second chunk, after the state of step 25 was saved
    where, (owner, name, error) = {
        "snapshots": ("snapshots", (SeriesWriter, "_write", TENSORSTORE_FULL)),
        "metrics": ("metrics.jsonl", (run_dir_lib, "append_metrics", PYTHON_FULL)),
        "state": ("state", (StateStore, "save", PYTHON_FULL)),
    }[layer]
    monkeypatch.setattr(owner, name, failing_at(3, error)(getattr(owner, name)))
    run = tmp_path / "run"
    code = cli.main(["--presets", str(preset_dir), "train", "failing_tiny", "--out", str(run), "--wandb", "off",
                     "--quiet"])
    line = one_error_line(capsys)
    assert code == 2
    assert line.startswith(f"mi-jax: error: no space left on device writing {run / where} (filesystem "), line
    assert line.endswith(f"; {run} holds the run up to step 25: free some space, then continue with "
                         f"`mi-jax train --resume {run}`"), line
    assert saved_step(run) == 25

    monkeypatch.undo()  # space freed
    assert cli.main(["train", "--resume", str(run), "--wandb", "off", "--quiet"]) == 0
    assert_same_run(run, straight)


@pytest.mark.slow  # ~6 s
def test_a_sweep_stopped_before_its_first_state_resumes_by_training_that_program_again(
        preset_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(StateStore, "save", failing_at(1, PYTHON_FULL)(StateStore.save))
    out, args = tmp_path / "sweep", ["--wandb", "off", "--quiet"]
    code = cli.main(["--presets", str(preset_dir), "sweep", "failing_tiny", "--grid", "train.lr=1e-3,3e-3",
                     "--out", str(out), *args])
    line, program = one_error_line(capsys), out / "program_0"
    assert code == 2
    assert line.startswith(f"mi-jax: error: no space left on device writing {program / 'state'} (filesystem "), line
    assert line.endswith(f"; {program} holds snapshots up to step 0 but no train state yet: free some space, then "
                         f"continue with `mi-jax sweep --resume {out}`"), line

    monkeypatch.undo()
    assert cli.main(["sweep", "--resume", str(out), *args]) == 0
    sweep = mj.Sweep.load(out)
    assert list(sweep.trajectories[0].steps) == [0, 25, 50, 75, 100] and len(sweep.members) == 2
    steps = [json.loads(line)["step"] for line in (program / run_dir_lib.METRICS).read_text().splitlines()]
    assert steps == [0, 25, 50, 75, 100]


@pytest.mark.parametrize("error, path", [(TENSORSTORE_FULL, "/x/run/snapshots/W_E/c/2/0/0/0"),
                                         (ORBAX_FULL, "/x/run/state/50.orbax-checkpoint-tmp/state.orbax-checkpoint"
                                                      "-tmp/ocdbt.process_0/"),
                                         (PYTHON_FULL, None),
                                         (OSError(errno.EDQUOT, "Disk quota exceeded", "/x/run/metrics.jsonl"),
                                          "/x/run/metrics.jsonl")])
def test_each_writer_s_full_disk_is_recognised_wherever_it_surfaces(error, path, tmp_path):
    """Outside the loop's own writes (where the path is the loop's), the path comes from the error."""
    stopped = failures.stopped_by(error, tmp_path)
    assert isinstance(stopped, failures.DiskFull) and stopped.step is None
    assert str(stopped).startswith(f"no space left on device writing {path or tmp_path} (filesystem ")
    assert str(stopped).endswith(f"; {tmp_path} holds no train state yet: free some space, then train it again "
                                 "(--overwrite)")
    assert failures.stopped_by(ValueError("RESOURCE_EXHAUSTED: Out of memory allocating 1 GiB"), tmp_path) is None
    assert failures.stopped_by(OSError(errno.EACCES, "Permission denied"), tmp_path) is None


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MB filesystem (a tmpfs), unmounted after the test; skipped where mounting one is not allowed."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)],
                                                   capture_output=True).returncode == 0
    if not mounted:
        pytest.skip("no small filesystem to fill here (mounting a tmpfs needs root)")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


@pytest.mark.slow  # ~11 s cold; a write made to fail is in the default suite
def test_a_real_full_filesystem_stops_mj_train_quietly_and_resume_is_bit_identical(small_disk, straight, capfd):
    run = small_disk / "run"
    with pytest.raises(failures.DiskFull) as stopped:
        mj.train(cfg(), run, wandb="off", progress=False)
    e = stopped.value
    assert e.__cause__ is None and e.__suppress_context__  # no chain of orbax's or tensorstore's errors
    assert e.step is not None and e.step == saved_step(run) < 100
    assert "\n" not in str(e) and str(e).startswith(f"no space left on device writing {run}"), str(e)
    assert f"(filesystem {small_disk}: " in str(e) and f"holds the run up to step {e.step}:" in str(e)
    assert capfd.readouterr().err == ""  # what orbax and tensorstore log or print of it: dropped

    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)  # space freed
    mj.resume(run, wandb="off", progress=False)
    assert capfd.readouterr().err == ""  # nor orbax's note on the partial save it removes
    assert_same_run(run, straight)


# ----------------------------------------------------------------------------- a process of 2 killed

SWEEP_PRESET = '''"""A 2-lr x 2-seed grokking sweep, long enough to kill a process of it midway."""
import mi_jax as mj

PRESET = mj.GrokkingConfig(p=11, train_frac=0.5, data_seed=1,
                           model=mj.TransformerConfig(n_layers=1, d_model=32, n_heads=2, d_mlp=32),
                           train=mj.TrainConfig(steps=600, lr=3e-3, eval_every=10, ckpt_every=10, chunk_steps=20))
'''


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _gloo_available() -> bool:
    from jax._src.lib import _jax

    return hasattr(_jax, "make_gloo_tcp_collectives")


@pytest.mark.slow  # ~1-2 min on 2 cores: two 2-process sweeps (each process compiles its programs)
@pytest.mark.skipif(not _gloo_available(), reason="this jaxlib has no gloo CPU collectives for several processes")
def test_a_killed_process_stops_the_other_in_one_line_and_both_resume(tmp_path):
    here = Path(__file__).resolve().parent
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "killed_sweep.py").write_text(SWEEP_PRESET)
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": "2", "PYTHONPATH": os.pathsep.join([str(here.parent), str(here)]),
           "JAX_COMPILATION_CACHE_DIR": str(here.parent / ".pytest_cache" / "xla"), "JAX_PLATFORMS": "cpu"}
    out, program = tmp_path / "sweep", tmp_path / "sweep" / "program_0"

    def launch(*args):
        address = f"localhost:{_free_port()}"
        command = [sys.executable, "-m", "mi_jax.cli", "--presets", str(tmp_path / "presets"), "sweep", *args,
                   "--wandb", "off", "--quiet", "--coordinator", address, "--num-processes", "2", "--process-id"]
        return address, [subprocess.Popen([*command, str(i)], env=env, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE, text=True) for i in range(2)]

    address, procs = launch("killed_sweep", "--grid", "train.lr=1e-3,3e-3", "--seeds", "0,1", "--out", str(out))
    try:
        index, deadline = program / "snapshots" / "index.json", time.time() + 240
        while time.time() < deadline and all(p.poll() is None for p in procs):
            if index.exists() and len(json.loads(index.read_text() or '{"steps": []}')["steps"]) >= 4:
                break
            time.sleep(0.05)
        assert all(p.poll() is None for p in procs), "\n".join(p.communicate()[1][-2000:] for p in procs)
        os.kill(procs[1].pid, signal.SIGKILL)
        killed = time.time()
        err = procs[0].communicate(timeout=120)[1]
        took = time.time() - killed
    finally:
        for p in procs:
            p.kill()
    lines = [line for line in err.splitlines() if line.strip()]
    assert procs[0].returncode == 2 and len(lines) == 1, err[-3000:]
    step = saved_step(program)
    assert step is not None and step < 600
    assert lines[0] == (f"mi-jax: error: process 1 of 2 stopped answering; {program} holds the run up to step "
                        f"{step}: continue with `mi-jax sweep --resume {out} --coordinator {address} "
                        "--num-processes 2 --process-id I` on each process I = 0..1")
    # the lost process's beat is still for SILENT_S, then process 0 says so: before JAX's own heartbeat would abort
    assert took < distributed.HEARTBEAT_TIMEOUT_S, f"process 0 took {took:.0f} s to stop"

    _, procs = launch("--resume", str(out))
    try:
        errs = [p.communicate(timeout=300)[1] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert all(p.returncode == 0 for p in procs), "\n".join(e[-2000:] for e in errs)
    steps = [json.loads(line)["step"] for line in (program / run_dir_lib.METRICS).read_text().splitlines()]
    assert steps == list(range(0, 601, 10)), "a metrics row missing or written twice"
    assert list(mj.Sweep.load(out).trajectories[0].steps) == list(range(0, 601, 10))
