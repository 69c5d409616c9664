"""One writer per run dir: a second writer stops with one line before any compute and writes nothing;
a lock left by a killed process is taken over; metrics rows are never duplicated."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import pytest

import mi_jax as mj
from mi_jax.io import run_dir as run_dir_lib

HERE = Path(__file__).resolve().parent
TRAIN_SCRIPT = """
import sys
import mi_jax as mj
from conftest import tiny_grokking
mj.train(tiny_grokking(steps=300, ckpt_every=20, eval_every=20), sys.argv[1], wandb="off", progress=False)
"""


def _env():
    # the tests' compile cache (conftest), so the CLI processes load the training program the first compiled
    return {**os.environ, "MI_JAX_COMPILE_CACHE": str(HERE.parent / ".pytest_cache" / "xla"), "JAX_PLATFORMS": "cpu"}


def _cli(*argv) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mi_jax.cli", *argv], cwd=HERE, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _tree_state(folder: Path) -> dict:
    """Every file under `folder` with its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def _state(pid: int) -> str:
    """A process's state letter from /proc (R running, S sleeping, T stopped, Z zombie)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0]


def _snapshots(run_dir: Path) -> int:
    index = run_dir / run_dir_lib.SNAPSHOTS / "index.json"
    try:
        return len(json.loads(index.read_text())["steps"])
    except (OSError, json.JSONDecodeError):
        return 0


@pytest.mark.slow  # five CLI processes: ~20 s
def test_a_second_writer_stops_with_one_line_and_a_killed_holders_lock_is_taken_over(tmp_path):
    run_dir = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-c", TRAIN_SCRIPT, str(run_dir)], cwd=HERE, env=_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and first.poll() is None and _snapshots(run_dir) < 3:
        time.sleep(0.05)
    assert first.poll() is None, f"training ended before the test could reach it: {first.stderr.read()[-500:]}"

    # frozen mid-run: a resume, an analysis and an overwrite each stop with one line and exit 2, writing nothing
    os.kill(first.pid, signal.SIGSTOP)
    stopped_by = time.time() + 10
    while _state(first.pid) not in ("T", "t") and time.time() < stopped_by:  # the signal lands asynchronously
        time.sleep(0.01)
    assert _state(first.pid) in ("T", "t"), f"the training process did not stop: {_state(first.pid)}"
    before = _tree_state(run_dir)
    others = [_cli("train", "--resume", str(run_dir), "--wandb", "off", "--quiet"),
              _cli("analyze", str(run_dir), "--wandb", "off"),
              _cli("train", "grokking_small", "--out", str(run_dir), "--overwrite", "--wandb", "off", "--quiet")]
    for proc in others:
        out, err = proc.communicate(timeout=120)
        lines = [line for line in err.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1, (proc.args, err)
        assert lines[0].startswith("mi-jax: error: run dir") and "is in use (training by pid" in lines[0], lines[0]
    assert _tree_state(run_dir) == before
    os.kill(first.pid, signal.SIGKILL)  # a stopped process dies at once
    first.wait()

    # the case: two resumes of the killed run started together; one takes over, the other stops
    resumes = [_cli("train", "--resume", str(run_dir), "--wandb", "off", "--quiet") for _ in range(2)]
    results = [(proc.wait(timeout=300), proc.stderr.read()) for proc in resumes]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    winner = next(err for code, err in results if code == 0)
    assert "taking over the lock" in winner and "killed" in winner
    loser = [line for line in next(err for code, err in results if code == 2).splitlines() if line.strip()]
    assert len(loser) == 1 and "is in use" in loser[0]

    steps = [json.loads(line)["step"] for line in (run_dir / run_dir_lib.METRICS).read_text().splitlines()]
    assert steps == sorted(set(steps)) == list(range(0, 301, 20)), "each step's metrics row exactly once"
    traj = mj.Trajectory.load(run_dir, on_corrupt="raise")
    assert list(traj.steps) == list(range(0, 301, 20))
    assert not (run_dir / ".lock.owner").exists(), "a holder that finishes leaves no owner behind"


def test_reading_metrics_that_repeat_a_step_keeps_the_last_row_of_each(tmp_path):
    rows = [{"step": 0, "loss": 3.0}, {"step": 50, "loss": 2.0}, {"step": 100, "loss": 1.5},
            {"step": 50, "loss": 1.9}, {"step": 100, "loss": 1.4}, {"step": 150, "loss": 1.0}]
    (tmp_path / run_dir_lib.METRICS).write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 200, "lo')
    got = run_dir_lib.read_metrics(tmp_path)
    assert [(r["step"], r["loss"]) for r in got] == [(0, 3.0), (50, 1.9), (100, 1.4), (150, 1.0)]
    assert [r["step"] for r in run_dir_lib.read_metrics(tmp_path, upto_step=100)] == [0, 50, 100]
    arrays = run_dir_lib.metrics_arrays(got, solo=True)
    assert arrays["loss"].shape == (4, 1) and np.array_equal(arrays["step"], [0, 50, 100, 150])


def test_a_metric_missing_from_the_first_rows_is_kept_with_nans_there():
    rows = [{"step": 0, "test_loss": [3.0, 3.1]}, {"step": 50, "test_loss": [2.0, 2.1], "step_loss": [2.5, 2.6]},
            {"step": 100, "test_loss": [1.5, 1.6], "step_loss": [1.8, 1.9]}]
    arrays = run_dir_lib.metrics_arrays(rows, solo=False)
    assert arrays["step"].dtype.kind == "i" and arrays["test_loss"].shape == (3, 2)
    np.testing.assert_array_equal(arrays["step_loss"], [[np.nan, np.nan], [2.5, 2.6], [1.8, 1.9]])
