"""Optimisation and bookkeeping settings shared by every experiment kind."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Literal

import jax

from mi_jax.config import check


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to train, evaluate and checkpoint (the same for every experiment kind).

    steps          optimiser steps in total
    lr, weight_decay, beta1, beta2   AdamW (optax.adamw; decoupled weight decay, set explicitly)
    warmup_steps   linear learning-rate warm-up from 0 (lr at step s is lr * min(s / warmup, 1))
    batch_size     None = full batch (the whole training set every step)
    eval_every     metrics (train/test loss and accuracy, ...) every this many steps and at the last
                   step, inside the compiled chunk
    ckpt_every     a parameter snapshot every this many steps (and at the last step); snapshots need
                   no evaluation and do not end a compiled chunk, so dense series (every step) are cheap
    ckpt_schedule  "linear": snapshots at 0, ckpt_every, 2 ckpt_every, ...; "log": dense early, at
                   0, 1, 2, 4, ... (the powers of two below ckpt_every), then every ckpt_every
    snapshot_dtype, snapshot_compression
                   how the parameter series is stored: "float32", "float16" or "bfloat16" (the
                   analysis reads float32 back), "none" or "zstd"
    ckpt_watch     adaptive snapshots: an evaluation metric ("test_loss", "test_acc", ...); any
                   evaluation that is not a scheduled snapshot where it has moved more than
                   ckpt_delta since the last snapshot (losses in log10, other metrics as they are;
                   the largest move over the members) gets an extra snapshot, at most ckpt_extra
                   in the run. None: off
    chunk_steps    optimiser steps per compiled chunk, between which the resumable train state is
                   saved and the progress bar moves; None: about 4 s of compute each, once the speed
                   is known. The results are the same whatever it is
    seed           model seed of a solo run; `seeds` (e.g. (0, 1, 2)) trains an ensemble as one program
    freeze_biases  keep biases at their initial value (zero), as the TransformerLens grokking demo does
    logsoftmax_f64 take the final log-softmax in float64 (needs jax x64 for the run; avoids the
                   loss spikes float32 shows once the loss is ~1e-7)
    compute_dtype  "float32", or "bfloat16": each training step's forward and backward pass in bfloat16
                   (the parameters cast from their float32 values; matmuls accumulate in float32, and
                   the logits come back in float32 for the loss); the parameters, the optimiser and
                   the evaluations stay float32
    interventions  hooks applied at every training step and evaluation, as spec strings
                   (`mi_jax.models.hook_specs`: "ablate_head:0.1", "zero:blocks.0.hook_mlp_out",
                   "project_off:hook_embed:FILE.npy", ...); transformer kinds only. The checkpoints
                   are the weights, so an analysis sees the model without the intervention
    data_parallel  split every step over the local devices: a solo run shards each batch and its
                   evaluation (params and optimiser state replicated; each device's gradients of its
                   share's mean loss are averaged in one all-reduce, so the task's loss must be a
                   mean over the batch's leading axis, as every task's is), an ensemble
                   shards its members; a solo run as many devices as divide the batch size.
                   On CPU the devices are JAX_NUM_CPU_DEVICES (`mi-jax` sets it to the core
                   count, at most 4); with one device this is a plain run. Results equal a plain
                   run's up to float reassociation. Several members are split over
                   min(devices, members) devices, padded with copies of the last member to a
                   multiple of the device count (the copies are computed, never saved or reported)
    devices        how many devices the [member] axis (a solo run: the batch) is split over; None:
                   as data_parallel chooses (and with several processes, every device of every
                   process). Setting it splits even without data_parallel
    """

    steps: int = 10_000
    lr: float = 1e-3
    weight_decay: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.98
    warmup_steps: int = 10
    batch_size: int | None = None
    eval_every: int = 100
    ckpt_every: int = 100
    ckpt_schedule: Literal["linear", "log"] = "linear"
    ckpt_watch: str | None = None
    snapshot_dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    snapshot_compression: Literal["none", "zstd"] = "none"
    ckpt_delta: float = 0.1
    ckpt_extra: int = 100
    chunk_steps: int | None = None
    seed: int = 0
    seeds: tuple[int, ...] | None = None
    freeze_biases: bool = False
    logsoftmax_f64: bool = False
    data_parallel: bool = False
    devices: int | None = None
    compute_dtype: Literal["float32", "bfloat16"] = "float32"
    interventions: tuple[str, ...] = ()

    def __post_init__(self):
        check(self.steps >= 1, f"train.steps must be >= 1, got {self.steps}")
        check(self.lr > 0, f"train.lr must be > 0, got {self.lr}")
        check(self.weight_decay >= 0, f"train.weight_decay must be >= 0, got {self.weight_decay}")
        check(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "train.beta1 and train.beta2 must be in [0, 1)")
        check(self.warmup_steps >= 0, f"train.warmup_steps must be >= 0, got {self.warmup_steps}")
        check(self.batch_size is None or self.batch_size >= 1, f"train.batch_size must be >= 1, got {self.batch_size}")
        check(self.eval_every >= 1, f"train.eval_every must be >= 1, got {self.eval_every}")
        check(self.ckpt_every >= 1, f"train.ckpt_every must be >= 1, got {self.ckpt_every}")
        check(self.chunk_steps is None or self.chunk_steps >= 1, f"train.chunk_steps must be >= 1, got {self.chunk_steps}")
        check(self.ckpt_delta > 0, f"train.ckpt_delta must be > 0, got {self.ckpt_delta}")
        check(self.ckpt_extra >= 0, f"train.ckpt_extra must be >= 0, got {self.ckpt_extra}")
        check(self.devices is None or self.devices >= 1, f"train.devices must be >= 1, got {self.devices}")
        if self.seeds is not None:
            check(len(self.seeds) >= 1, "train.seeds must name at least one seed")
            check(len(set(self.seeds)) == len(self.seeds), f"train.seeds has duplicates: {self.seeds}")

    @property
    def ensemble(self) -> bool:
        return self.seeds is not None

    @property
    def seed_list(self) -> tuple[int, ...]:
        return self.seeds if self.seeds is not None else (self.seed,)

    def precision(self):
        """The context a run's losses are computed in, training and analysis alike: jax's float64 enabled
        when the log-softmax is taken in float64 (`logsoftmax_f64`)."""
        return jax.enable_x64(True) if self.logsoftmax_f64 else contextlib.nullcontext()
