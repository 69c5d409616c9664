"""Snapshot storage: the cost of writing a snapshot (the zarr layout through tensorstore, against the
older layout's .npy memory map), of dense snapshot series in a whole `mi-jax train`, and the peak
memory of analysing a 64-member sweep streamed from disk, against reading it whole first."""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import jax
import numpy as np
from chunk_timing import time_chunks

from mi_jax import config as config_lib
from mi_jax import presets
from mi_jax.analysis.core import STREAM_BYTES
from mi_jax.io import atomic_write
from mi_jax.io import run_dir as run_dir_lib
from mi_jax.io.series import SeriesWriter
from mi_jax.tasks.grokking import GrokkingTask
from mi_jax.training import loop
from mi_jax.trees import flatten

N_WRITES = 100
SWEEP_MEMBERS = 64
SWEEP_CHECKPOINTS = 32  # of grokking_p113's 251, to keep the synthetic series at 1.9 GB on disk


class NpyWriter:
    """The older layout's write path, kept here as the baseline: preallocated [capacity, member, ...]
    .npy memory maps, a row written in place and flushed, a CRC32 per row in index.json."""

    def __init__(self, run_dir: Path, template: dict, capacity: int):
        self.dir = Path(run_dir) / run_dir_lib.SNAPSHOTS
        self.dir.mkdir(parents=True, exist_ok=True)
        self.arrays = {n: np.lib.format.open_memmap(self.dir / f"{n}.npy", mode="w+", dtype=np.float32,
                                                    shape=(capacity, *np.shape(v)))
                       for n, v in flatten(template).items()}
        self.steps, self.crcs = [], []

    def write(self, step: int, params) -> None:
        row, flat = len(self.steps), flatten(params)
        crc = 0
        for name, arr in self.arrays.items():
            arr[row] = np.asarray(flat[name])
            arr.flush()
            crc = zlib.crc32(np.ascontiguousarray(arr[row]).view(np.uint8), crc)
        self.steps.append(step)
        self.crcs.append(crc)
        atomic_write(self.dir / "index.json", json.dumps({"steps": self.steps, "crc32": self.crcs}))


class ZarrWriter:
    """The zarr layout's write path as training takes it for one snapshot: its chunks, then the index."""

    def __init__(self, run_dir: Path, template: dict, capacity: int, **storage):
        self.series = SeriesWriter.create(Path(run_dir) / run_dir_lib.SNAPSHOTS, template, capacity, **storage)

    def write(self, step: int, params) -> None:
        self.series.write(step, params)
        self.series.write_index()


def _ms_per_write(make_writer, params) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        writer = make_writer(Path(tmp), params)
        t0 = time.perf_counter()
        for step in range(N_WRITES):
            writer.write(step, params)
        return 1e3 * (time.perf_counter() - t0) / N_WRITES


def snapshot_write() -> dict:
    """ms per snapshot of grokking_small (one member, ~227k params), 100 writes each way, against
    the time of the 50 training steps between two of its snapshots."""
    cfg = presets.load("grokking_small")
    task = GrokkingTask(cfg)
    params = jax.tree.map(lambda x: np.asarray(x)[None], task.init_params(jax.random.key(0)))  # [member 1, ...]
    trainer = loop.Trainer(task, cfg.train)
    chunk_s, _ = time_chunks(trainer, trainer.init_state(), n_chunks=5)
    chunk_ms = 1e3 * chunk_s / 5
    row = {"params": sum(x.size for x in jax.tree.leaves(params)), "writes": N_WRITES,
           "train_chunk_ms": round(chunk_ms, 1)}
    writers = {
        "npy_memmap": lambda d, p: NpyWriter(d, p, N_WRITES),
        "zarr": lambda d, p: ZarrWriter(d, p, N_WRITES),
        "zarr_bf16_zstd": lambda d, p: ZarrWriter(d, p, N_WRITES, dtype="bfloat16", compression="zstd"),
    }
    for name, make in writers.items():
        ms = _ms_per_write(make, params)
        row[f"{name}_ms"] = round(ms, 2)
        row[f"{name}_pct_of_training"] = round(100 * ms / chunk_ms, 2)
    return row


# ----------------------------------------------------------------------------- analysis memory


def _sweep_series(run_dir: Path) -> int:
    """A synthetic grokking_p113-shaped sweep: SWEEP_MEMBERS members, SWEEP_CHECKPOINTS random snapshots."""
    cfg = presets.load("grokking_p113")
    run_dir.mkdir(parents=True)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seeds=tuple(range(SWEEP_MEMBERS))))
    (run_dir / run_dir_lib.CONFIG).write_text(config_lib.dumps(cfg))
    one = jax.tree.map(np.asarray, GrokkingTask(cfg).init_params(jax.random.key(0)))
    rng = np.random.default_rng(0)
    sample = lambda: jax.tree.map(  # noqa: E731
        lambda x: rng.normal(size=(SWEEP_MEMBERS, *x.shape)).astype(np.float32), one)
    writer = ZarrWriter(run_dir, sample(), SWEEP_CHECKPOINTS)
    for t in range(SWEEP_CHECKPOINTS):
        writer.write(100 * t, sample())
    return sum(x.size for x in jax.tree.leaves(one))


def _measures() -> dict:
    """Cheap measures of every parameter (the memory is the params', whatever is computed from them)."""
    import jax.numpy as jnp

    return {"weight_norm": lambda p, _: sum(jnp.sum(x**2) for x in jax.tree.leaves(p)),
            "embed_freq": lambda p, _: jnp.abs(jnp.fft.rfft(p["W_E"][:-1], axis=0)).sum(-1)}


MODES = {  # name: (read it all first, block_bytes, checkpoints analysed)
    "one_checkpoint": (False, STREAM_BYTES, 1),  # the same program on one checkpoint: jax's own memory
    "streamed": (False, STREAM_BYTES, SWEEP_CHECKPOINTS),
    "streamed_256mb": (False, 256 << 20, SWEEP_CHECKPOINTS),
    "whole": (True, 1 << 62, SWEEP_CHECKPOINTS),
}


def measure_in_this_process(run_dir: str, mode: str) -> dict:
    """One mode's (time, peak RSS): load lazily (checking every chunk), then analyse in blocks, or
    read the whole series into memory first and analyse it in one block ("whole")."""
    import mi_jax as mj
    from mi_jax.analysis.core import analyze

    whole, block_bytes, n_checkpoints = MODES[mode]
    t0 = time.perf_counter()
    traj = mj.Trajectory.load(run_dir, on_corrupt="raise").select(slice(0, n_checkpoints))
    load_s = time.perf_counter() - t0
    if whole:
        traj = traj.materialize()
    results = analyze(traj, _measures(), block_bytes=block_bytes)
    assert results["weight_norm"].shape == (n_checkpoints, SWEEP_MEMBERS)
    return {"load_s": round(load_s, 1), "total_s": round(time.perf_counter() - t0, 1),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}


def analysis_memory() -> dict:
    """Peak host RSS and time of analysing a 64-member grokking_p113 sweep streamed from disk (blocks
    of 64 MB, the default, and of 256 MB), against reading it whole first, each in its own process;
    `one_checkpoint` is the floor: the same program on one checkpoint."""
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "sweep"
        n_params = _sweep_series(run_dir)
        row = {"members": SWEEP_MEMBERS, "checkpoints": SWEEP_CHECKPOINTS, "params_per_member": n_params,
               "series_mb": round(4 * n_params * SWEEP_MEMBERS * SWEEP_CHECKPOINTS / 2**20)}
        for mode in MODES:
            code = f"import bench_store, json; print(json.dumps(bench_store.measure_in_this_process({str(run_dir)!r}, {mode!r})))"
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
            out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
            row.update({f"{mode}_{k}": v for k, v in json.loads(out.stdout.splitlines()[-1]).items()})
    return row


# ----------------------------------------------------------------------------- dense series


DENSE = {"two_snapshots": 1000, "every_100": 100, "every_10": 10, "every_step": 1}  # name: train.ckpt_every


def _train_seconds(out: Path, ckpt_every: int) -> float:
    """Wall time of `mi-jax train grokking_small` for 1,000 steps with a snapshot every `ckpt_every`,
    launch to exit, compiling included (the compile cache off: a first run)."""
    env = {**os.environ, "MI_JAX_COMPILE_CACHE": "off"}
    argv = [sys.executable, "-m", "mi_jax.cli", "train", "grokking_small", "--set", "train.steps=1000",
            "--set", f"train.ckpt_every={ckpt_every}", "--out", str(out), "--overwrite", "--wandb", "off", "--quiet"]
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def dense_snapshots(rounds: int = 3) -> dict:
    """1,000 steps of grokking_small (an evaluation every 50) with 2 snapshots (steps 0 and 1,000), one
    every 100 steps, every 10 and every step: wall time of `mi-jax train` each, in alternating rounds,
    and the median over rounds of each one's ratio to the 2-snapshot run of its round."""
    seconds = {name: [] for name in DENSE}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(rounds):
            for name, every in DENSE.items():
                seconds[name].append(_train_seconds(Path(tmp) / name, every))
    base = np.asarray(seconds["two_snapshots"])
    row = {"steps": 1000, "rounds": rounds, **{f"{name}_s": round(float(np.median(v)), 2) for name, v in seconds.items()}}
    for name in ("every_100", "every_10", "every_step"):
        row[f"{name}_ratio"] = round(float(np.median(np.asarray(seconds[name]) / base)), 3)
    return row


BENCHMARKS = {"snapshot_write": snapshot_write, "analysis_memory": analysis_memory, "dense_snapshots": dense_snapshots}
# each benchmark's target (none where no bound is given) and the figures the results page shows beside it;
# a literal, read by benchmarks/render.py without importing this file
TARGETS = {
    "snapshot_write": {"figure": "zarr_pct_of_training", "mi_jax": "zarr_ms", "peer": "npy_memmap_ms",
                       "peer_name": ".npy memory map"},
    "analysis_memory": {"mi_jax": "streamed_peak_rss_mb", "peer": "whole_peak_rss_mb", "peer_name": "read whole"},
    "dense_snapshots": {"figure": "every_step_ratio", "at_most": 1.5, "mi_jax": "every_step_s", "peer": "two_snapshots_s",
                        "peer_name": "2 snapshots",
                        "also": [{"figure": "every_10_ratio", "at_most": 1.1, "mi_jax": "every_10_s"}]},
}
