"""Several processes, one run: what `jax.distributed` costs on one machine.

`multiprocess_overhead`: the same small grokking sweep (4 members: 2 learning rates x 2 seeds, p=11,
d_model=d_mlp=32, 200 steps, a snapshot every 20) trained by `mi-jax sweep` as 1 process of 2 CPU
devices and as 2 processes of 2 CPU devices each (gloo collectives over localhost), wall time from
launch to exit, compilation included (the compile cache off: jax writes it from process 0 only and
process 1's programs miss it, so both layouts compile). The ratio is the price of running across hosts on one
machine's cores: the processes share the cores, compile twice and meet at every snapshot.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SWEEP = ["sweep", "grokking_small", "--grid", "train.lr=1e-3,3e-3", "--seeds", "0,1", "--set", "p=11",
         "--set", "model.d_model=32", "--set", "model.d_mlp=32", "--set", "train.steps=200",
         "--set", "train.eval_every=20", "--set", "train.ckpt_every=20", "--set", "train.data_parallel=true",
         "--wandb", "off", "--quiet"]


def _launch(out: Path, n_processes: int) -> float:
    """Seconds from launching `n_processes` `mi-jax sweep` processes (2 CPU devices each) to the last exit."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": "2", "JAX_PLATFORMS": "cpu", "MI_JAX_COMPILE_CACHE": "off"}
    several = ["--coordinator", f"localhost:{port}", "--num-processes", str(n_processes)]
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "mi_jax.cli", *SWEEP, "--out", str(out),
                               *(several + ["--process-id", str(i)] if n_processes > 1 else [])],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(n_processes)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    seconds = time.perf_counter() - t0
    if any(p.returncode for p in procs):
        raise RuntimeError("\n".join(o[-2000:] for o in outputs))
    return seconds


def multiprocess_overhead() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        one = _launch(Path(tmp) / "one", 1)
        two = _launch(Path(tmp) / "two", 2)
    return {"one_process_2_devices_s": round(one, 2), "two_processes_2_devices_each_s": round(two, 2),
            "ratio": round(two / one, 2), "members": 4, "steps": 200}


BENCHMARKS = {"multiprocess_overhead": multiprocess_overhead}
# each benchmark's target (none where no bound is given) and the figures the results page shows beside it;
# a literal, read by benchmarks/render.py without importing this file
TARGETS = {
    "multiprocess_overhead": {"figure": "ratio", "mi_jax": "two_processes_2_devices_each_s",
                              "peer": "one_process_2_devices_s", "peer_name": "1 process"},
}
