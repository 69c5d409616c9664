"""Sweeps: many members of a grid as ONE vmapped program against one member at a time.

`sweep_throughput`: a 16-member grokking_small sweep (4 learning rates x 4 seeds; each member's
learning rate a [member] array) as one program, against 16 solo runs of the same steps one after
another (each compiled for its own learning rate, as separate runs would be). Figures with and
without compilation. On 2 CPU cores one model already fills the cores, so the speedup there is small;
the accelerator row (`sweep_p113_members`) is where vmapping members pays.

`sweep_p113_members`: member-steps/s of a grokking_p113 sweep with 64 members (4 learning rates x 16
seeds; 4 members on CPU) against one member, after compilation, and each program's compile time; and
the train step's achieved FLOP/s (XLA's count of a member's step) against the device's peak where it
is known (MFU). On a GPU XLA's count undercounts matrix products (`lm_full_step` found 152 GFLOP a step
where its model does 1,328, and counts the model's FLOPs instead), so there this MFU is a lower bound.
"""

from __future__ import annotations

import dataclasses
import time

import jax
from bench_training import matmul_peak_gflops, step_flops
from chunk_timing import one_chunk, time_chunks

from mi_jax import presets
from mi_jax.tasks import make_task
from mi_jax.training.loop import Trainer

# dense peaks in TFLOP/s of the cards this project is lent (bf16 tensor cores; fp32 matmuls run as TF32)
PEAK_TFLOPS = {"H200": {"bf16": 989.0, "tf32": 494.5}, "H100": {"bf16": 989.0, "tf32": 494.5}}


def mfu(tflops: float, kind: str) -> dict:
    """{mfu_vs_tf32_peak, mfu_vs_bf16_peak} of `tflops` on a card of PEAK_TFLOPS ({} for another device)."""
    peak = next((p for name, p in PEAK_TFLOPS.items() if name in kind), None)
    return {} if peak is None else {f"mfu_vs_{k}_peak": round(tflops / peak[k], 4) for k in ("tf32", "bf16")}


def _members(lrs, seeds) -> list[dict]:
    return [{"train.lr": lr, "seed": seed} for lr in lrs for seed in seeds]


def _steps_per_s(trainer, n_chunks: int) -> tuple[float, float]:
    """(seconds of the first chunk, compile included; steps/s after it)."""
    t0 = time.perf_counter()
    state = trainer.init_state()
    state, metrics = one_chunk(trainer, state)
    first = time.perf_counter() - t0
    seconds, _ = time_chunks(trainer, state, n_chunks, warm=False)
    return first, n_chunks * trainer.tc.ckpt_every / seconds


def sweep_throughput(steps: int = 200) -> dict:
    cfg = presets.load("grokking_small")
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=steps, eval_every=50, ckpt_every=steps))
    lrs, seeds = (5e-4, 1e-3, 2e-3, 4e-3), (0, 1, 2, 3)
    task = make_task(cfg)
    with jax.enable_x64(cfg.train.logsoftmax_f64):
        t0 = time.perf_counter()
        trainer = Trainer(task, cfg.train, _members(lrs, seeds))
        jax.block_until_ready(one_chunk(trainer, trainer.init_state()))
        vmapped_s = time.perf_counter() - t0
        vmapped_warm_s, _ = time_chunks(trainer, trainer.init_state(), 1, warm=False)
        loop_s = loop_warm_s = 0.0
        for lr in lrs:
            for seed in seeds:
                solo_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr=lr, seed=seed))
                t0 = time.perf_counter()
                solo = Trainer(make_task(solo_cfg), solo_cfg.train)
                jax.block_until_ready(one_chunk(solo, solo.init_state()))
                loop_s += time.perf_counter() - t0
                loop_warm_s += time_chunks(solo, solo.init_state(), 1, warm=False)[0]
    return {"members": len(lrs) * len(seeds), "steps": steps, "vmapped_s": round(vmapped_s, 2),
            "loop_s": round(loop_s, 2), "speedup": round(loop_s / vmapped_s, 2),
            "vmapped_after_compile_s": round(vmapped_warm_s, 2), "loop_after_compile_s": round(loop_warm_s, 2),
            "speedup_after_compile": round(loop_warm_s / vmapped_warm_s, 2), "device": jax.devices()[0].device_kind}


def sweep_p113_members(n_members: int | None = None, n_chunks: int = 5) -> dict:
    n_members = n_members or (64 if jax.default_backend() != "cpu" else 4)  # 64 p113 members take ~40 min on 2 cores
    cfg = presets.load("grokking_p113")
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, eval_every=100, ckpt_every=100))
    task = make_task(cfg)
    lrs = (3e-4, 1e-3, 3e-3, 1e-2)
    with jax.enable_x64(cfg.train.logsoftmax_f64):
        one_first_s, one_rate = _steps_per_s(Trainer(task, cfg.train, _members(lrs[1:2], (0,))), n_chunks)
        many_first_s, many_rate = _steps_per_s(
            Trainer(task, cfg.train, _members(lrs, range(n_members // len(lrs)))), n_chunks)
        flops = step_flops(task)
    kind = jax.devices()[0].device_kind
    row = {"device": kind, "members": n_members, "one_member_steps_per_s": round(one_rate, 1),
           "members_steps_per_s": round(many_rate * n_members, 1),
           "speedup_member_steps": round(many_rate * n_members / one_rate, 2),
           "first_chunk_s_one": round(one_first_s, 2), "first_chunk_s_many": round(many_first_s, 2),
           # compilation: the first chunk's time less what a compiled chunk of its steps takes
           "compile_s_one": round(one_first_s - cfg.train.ckpt_every / one_rate, 2),
           "compile_s_many": round(many_first_s - cfg.train.ckpt_every / many_rate, 2),
           "gflop_per_member_step": round(flops / 1e9, 3),
           "achieved_tflops": round(flops * many_rate * n_members / 1e12, 3)}
    row.update(mfu(row["achieved_tflops"], kind))
    if "mfu_vs_tf32_peak" not in row:
        row["matmul_peak_gflops"] = round(matmul_peak_gflops(), 1)
    return row


BENCHMARKS = {"sweep_throughput": sweep_throughput, "sweep_p113_members": sweep_p113_members}
# each benchmark's target (none where no bound is given) and the figures the results page shows beside it;
# a literal, read by benchmarks/render.py without importing this file
TARGETS = {
    "sweep_throughput": {"figure": "speedup", "mi_jax": "vmapped_s", "peer": "loop_s", "peer_name": "16 solo runs"},
    "sweep_p113_members": {"figure": "speedup_member_steps", "mi_jax": "members_steps_per_s",
                           "peer": "one_member_steps_per_s", "peer_name": "one member"},
}
