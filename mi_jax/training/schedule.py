"""When a run snapshots, evaluates and saves its state: pure functions of the config and metric values
(the training loop does the I/O).

Snapshots: the *base* steps always get one: linear is 0, N, 2N, ... (N = `train.ckpt_every`); log-spaced
is 0, 1, 2, 4, ..., the powers of two below N, then N, 2N, ...; both end with the last step. With
`train.ckpt_watch` set, an evaluation between them adds an *extra* snapshot where the watched metric
moved fast since the last snapshot (`extra_snapshots`), at most `train.ckpt_extra` in the run.
Evaluations: every `train.eval_every` steps, and at the last step.

Neither ends a compiled chunk: a chunk is a run of *segments*, each ending at a snapshot or evaluation
step (or where the chunk's work ends), at most `slots` of them and about `max_steps` steps in all
(`next_chunk`); the train state is saved once per chunk.
"""

from __future__ import annotations

import dataclasses

import numpy as np

CHUNK_SECONDS = 4.0  # compute per chunk once its speed is known: long enough that its state save is a small share
EMITTED_BYTES = 64 << 20  # params a chunk emits (one copy per segment, every member): bounds its slots
MAX_SLOTS = 256


def base_steps(tc) -> list[int]:
    """The steps that always get a snapshot: [0, ..., tc.steps] (see module doc)."""
    every = list(range(tc.ckpt_every, tc.steps + 1, tc.ckpt_every))
    if tc.ckpt_schedule == "log":
        every = [2**k for k in range(tc.ckpt_every.bit_length()) if 2**k < min(tc.ckpt_every, tc.steps)] + every
    return sorted({0, *every, tc.steps})


def evaluation_steps(tc) -> list[int]:
    """The steps that get an evaluation (besides step 0, before training): every eval_every, and the last."""
    return sorted({*range(tc.eval_every, tc.steps + 1, tc.eval_every), tc.steps})


def watched_metric(tc) -> str | None:
    """The metric adaptive snapshots watch, or None when the run takes none (no watch, or no budget)."""
    return tc.ckpt_watch if tc.ckpt_extra > 0 else None


def slots(params_bytes: int) -> int:
    """Segments a compiled chunk holds at most, for params of `params_bytes` (all members): as many as
    fit in EMITTED_BYTES, one at least."""
    return int(np.clip(EMITTED_BYTES // max(params_bytes, 1), 1, MAX_SLOTS))


@dataclasses.dataclass(frozen=True)
class Chunk:
    """One compiled chunk: `lengths` [slots] steps of each segment (0: unused), `evaluations` and
    `snapshots` [slots] whether a segment ends with one, `ends` the step each used segment ends at."""

    lengths: np.ndarray
    evaluations: np.ndarray
    snapshots: np.ndarray
    ends: list[int]

    @property
    def used(self) -> int:
        return len(self.ends)


def next_chunk(start: int, tc, n_slots: int, max_steps: int) -> Chunk:
    """The chunk from step `start`: segments to each snapshot or evaluation step after it, at most
    `n_slots` of them and none ending past start + max_steps (where no such step comes within
    max_steps, one segment of max_steps steps); never past tc.steps."""
    stops = sorted(set(base_steps(tc)) | set(evaluation_steps(tc)))
    limit = min(start + max(max_steps, 1), tc.steps)
    ends = [s for s in stops if start < s <= limit][:n_slots] or [limit]
    lengths = np.zeros(n_slots, np.int32)
    lengths[: len(ends)] = np.diff([start, *ends])
    flags = lambda steps: np.isin(np.arange(n_slots), [i for i, s in enumerate(ends) if s in steps])  # noqa: E731
    return Chunk(lengths, flags(set(evaluation_steps(tc))), flags(set(base_steps(tc))), ends)


def chunk_steps(seconds_per_step: float | None, tc) -> int:
    """Steps in the next chunk: train.chunk_steps when set; else about CHUNK_SECONDS of compute at the
    measured speed; before any is measured, to the first snapshot or evaluation."""
    if tc.chunk_steps is not None:
        return tc.chunk_steps
    if not seconds_per_step:
        return min(tc.eval_every, tc.ckpt_every)
    return max(1, int(CHUNK_SECONDS / seconds_per_step))


def watched_value(name: str, values) -> np.ndarray:
    """A watched metric as the schedule compares it: a loss in log10 (losses move by decades), any
    other metric (an accuracy, a score) as it is. values: [...] -> float64 [...]"""
    values = np.asarray(values, np.float64)
    return np.log10(np.maximum(values, 1e-30)) if "loss" in name else values


def extra_snapshots(watched: np.ndarray, base: np.ndarray, last: np.ndarray, delta: float, budget: int
                    ) -> tuple[list[int], np.ndarray]:
    """Which evaluations of a chunk get an extra snapshot, and the watched value at the last snapshot after them.

    watched: [evals, member] the watched metric at the chunk's evaluations (`watched_value`); base:
    [evals] whether an evaluation falls on a base snapshot (which resets the reference); last: [member]
    the value at the snapshot before the chunk. An evaluation not on a base snapshot is picked where
    some member's value has moved more than `delta` from its value at the snapshot before; at most
    `budget` picks.
    """
    picks = []
    for i in range(len(watched)):
        if base[i]:
            last = watched[i]
        elif len(picks) < budget and np.max(np.abs(watched[i] - last)) > delta:
            picks.append(i)
            last = watched[i]
    return picks, last
