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
MAX_SLOTS = 64


def _powers(tc) -> list[int]:
    """The log schedule's dense early steps: the powers of two below ckpt_every (and the run's end)."""
    if tc.ckpt_schedule != "log":
        return []
    return [2**k for k in range(tc.ckpt_every.bit_length()) if 2**k < min(tc.ckpt_every, tc.steps)]


def is_base(tc, step: int) -> bool:
    """Whether `step` always gets a snapshot (see module doc)."""
    return step % tc.ckpt_every == 0 or step == tc.steps or step in _powers(tc)


def is_evaluation(tc, step: int) -> bool:
    """Whether `step` gets an evaluation: every eval_every, and the last (step 0 is evaluated before training)."""
    return step > 0 and (step % tc.eval_every == 0 or step == tc.steps)


def base_steps(tc) -> list[int]:
    """The steps that always get a snapshot: [0, ..., tc.steps] (see module doc)."""
    return sorted({0, *_powers(tc), *range(tc.ckpt_every, tc.steps + 1, tc.ckpt_every), tc.steps})


def base_count(tc, upto: int) -> int:
    """How many base steps are <= upto (arithmetic: no list of a long run's steps)."""
    powers = sum(1 for p in _powers(tc) if p <= upto and p % tc.ckpt_every)
    last = 1 if tc.steps <= upto and tc.steps % tc.ckpt_every else 0
    return 1 + min(upto, tc.steps) // tc.ckpt_every + powers + last


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
    limit = min(start + max(max_steps, 1), tc.steps)
    ends = []
    for every in (tc.eval_every, tc.ckpt_every):  # the multiples in (start, limit], at most n_slots of each
        first = (start // every + 1) * every
        ends += range(first, min(limit, first + every * (n_slots - 1)) + 1, every)
    ends += [p for p in _powers(tc) if start < p <= limit] + ([tc.steps] if limit == tc.steps else [])
    ends = sorted(set(ends))[:n_slots] or [limit]
    lengths = np.zeros(n_slots, np.int32)
    lengths[: len(ends)] = np.diff([start, *ends])
    flags = lambda test: np.array([i < len(ends) and test(tc, ends[i]) for i in range(n_slots)])  # noqa: E731
    return Chunk(lengths, flags(is_evaluation), flags(is_base), ends)


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
