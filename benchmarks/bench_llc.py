"""The local learning coefficient over a checkpoint series: one compiled call against mi_jax's own
per-checkpoint loop and against devinterp 2.0.1's loop (benchmarks/peers/devinterp_llc.py).

`llc_over_training`: the LLC of 100 checkpoints of grokking_small's model, 4 chains x 200 draws each,
the settings `mi-jax llc` uses for grokking runs (`GrokkingTask.LLC_SETTINGS`). The checkpoints are
random inits (one key each): SGLD's cost does not depend on the values as long as no chain diverges
(devinterp stops a diverged chain early; mi_jax runs it to the end), and `diverged_chains` counts them.
`vmapped_s`: `analyze_params` over the stacked series, compilation included; `loop_s`: a loop calling
one jitted function of a checkpoint (compiled once), timed on `loop_measured` checkpoints and scaled to
all (`checkpoint_loops.loop_seconds`); `devinterp_s`: devinterp's `llc` per checkpoint, in its own
process, `peer_checkpoints` checkpoints per round, scaled to all. Paired: each round times mi_jax's
vmapped call and then the peer's share, and `speedup_vs_devinterp` is the median of the rounds' ratios.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import jax
import numpy as np
from checkpoint_loops import loop_seconds
from peer_runs import DEVINTERP_PY, PEER_SCRIPTS, ServedPeer, setup_devinterp

sys.path.insert(0, str(PEER_SCRIPTS))  # the peer script's `dump_series` writes the series it reads
import devinterp_llc  # noqa: E402

from mi_jax.analysis import llc_task
from mi_jax.analysis.core import analyze_params
from mi_jax.presets import load
from mi_jax.tasks import make_task


def llc_over_training(n_checkpoints: int = 100, n_chains: int = 4, n_draws: int = 200, loop_measured: int = 4,
                      peer_checkpoints: int = 2, rounds: int = 2) -> dict:
    cfg = load("grokking_small")
    task = make_task(cfg)
    settings = llc_task.settings_for(task, {"llc.n_chains": str(n_chains), "llc.n_draws": str(n_draws)})
    keys = jax.random.split(jax.random.key(0), n_checkpoints)
    stacked = jax.tree.map(np.asarray, jax.jit(jax.vmap(task.init_params))(keys))
    data = llc_task.training_set(task, settings)
    measure = llc_task.llc_measure(task, settings.llc, data)
    row = {"n_checkpoints": n_checkpoints, "chains": n_chains, "draws": n_draws, "params": "random init",
           "devices": jax.local_device_count(), "loadavg_1m_before": round(os.getloadavg()[0], 2)}

    with tempfile.TemporaryDirectory() as folder:
        series = devinterp_llc.dump_series(np.arange(n_checkpoints), stacked, cfg, settings,
                                         os.path.join(folder, "series.npz"))
        why = setup_devinterp()
        peer = None if why else ServedPeer(PEER_SCRIPTS / "devinterp_llc.py", ["--series", series, "--threads",
                                                                               os.cpu_count()], python=DEVINTERP_PY)
        vmapped, peer_s = [], []
        with cfg.train.precision():
            for _ in range(rounds):
                t0 = time.perf_counter()
                out = analyze_params(stacked, {"llc": measure}, member_axis=False)  # traced and compiled anew each round
                vmapped.append(time.perf_counter() - t0)
                reply = peer.ask(peer_checkpoints) if peer is not None else None
                peer_s.append(reply["s_per_checkpoint"] * n_checkpoints if reply else None)
            loop_s, _ = loop_seconds(jax.jit(measure), stacked, n_checkpoints, loop_measured)
        if peer is not None:
            why = peer.error
            peer.close()
    row.update({"vmapped_s": round(vmapped[0], 2), "vmapped_rounds_s": [round(v, 2) for v in vmapped],
                "loop_s": round(loop_s, 2), "loop_measured": loop_measured,
                "speedup_vs_loop": round(loop_s / vmapped[0], 2),
                "diverged_chains": int((~np.isfinite(out["loss_trace"]).all(-1)).sum())})
    if why or None in peer_s:
        return {**row, "peer_error": why or "the peer stopped answering"}
    ratios = np.array(peer_s) / np.array(vmapped)
    return {**row, "devinterp_s": round(float(np.median(peer_s)), 1), "peer_checkpoints_per_round": peer_checkpoints,
            "rounds": rounds, "speedup_vs_devinterp": round(float(np.median(ratios)), 2),
            "speedup_range": [round(float(ratios.min()), 2), round(float(ratios.max()), 2)]}


BENCHMARKS = {"llc_over_training": llc_over_training}
# each benchmark's target (none where no bound is given) and the figures the results page shows beside it;
# a literal, read by benchmarks/render.py without importing this file
TARGETS = {
    "llc_over_training": {"figure": "speedup_vs_devinterp", "at_least": 5, "mi_jax": "vmapped_s",
                          "peer": "devinterp_s", "peer_name": "devinterp"},
}
# the peer venv each benchmark runs, whose versions its recorded rows carry (peer_runs.PEER_VENVS)
PEERS = {"llc_over_training": "devinterp"}
