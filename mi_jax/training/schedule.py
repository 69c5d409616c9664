"""When a run snapshots its parameters: linear, log-spaced, and adaptive extra snapshots.

A run's *base* schedule is a sorted list of steps that always get a snapshot (and a resumable
state): linear is 0, N, 2N, ... (N = `train.ckpt_every`); log-spaced is 0, 1, 2, 4, ..., the powers
of two below N, then N, 2N, ... . Between two base steps a compiled *chunk* runs, evaluating at
every multiple of `train.eval_every` and at the chunk's end (`eval_lengths`). With `train.ckpt_watch`
set, any of those evaluations may add an *extra* snapshot where the watched metric moved fast since
the last snapshot (`extra_snapshots`), at most `train.ckpt_extra` of them in the run.
Pure functions of the config and metric values; the training loop does the I/O.
"""

from __future__ import annotations

import numpy as np


def base_steps(tc) -> list[int]:
    """The steps that always get a snapshot: [0, ..., tc.steps] (see module doc)."""
    every = list(range(tc.ckpt_every, tc.steps + 1, tc.ckpt_every))
    if tc.ckpt_schedule == "log":
        powers = [2**k for k in range(tc.ckpt_every.bit_length()) if 2**k < tc.ckpt_every]
        return [0, *powers, *every]
    return [0, *every]


def watched_metric(tc) -> str | None:
    """The metric adaptive snapshots watch, or None when the run takes none (no watch, or no budget)."""
    return tc.ckpt_watch if tc.ckpt_extra > 0 else None


def eval_slots(tc) -> int:
    """How many evaluations one chunk holds at most (its compiled length)."""
    return tc.ckpt_every // tc.eval_every


def eval_lengths(start: int, end: int, eval_every: int, slots: int) -> np.ndarray:
    """Steps before each evaluation of the chunk (start, end]: evaluations at every multiple of
    `eval_every` in it and at `end`. -> int32 [slots], unused slots 0 (skipped)."""
    stops = [s for s in range(start + 1, end + 1) if s % eval_every == 0 or s == end]
    if len(stops) > slots:
        raise ValueError(f"the chunk ({start}, {end}] needs {len(stops)} evaluations, more than its {slots} slots")
    lengths = np.zeros(slots, np.int32)
    lengths[: len(stops)] = np.diff([start, *stops])
    return lengths


def watched_value(name: str, values) -> np.ndarray:
    """A watched metric as the schedule compares it: a loss in log10 (losses move by decades), any
    other metric (an accuracy, a score) as it is. values: [...] -> float64 [...]"""
    values = np.asarray(values, np.float64)
    return np.log10(np.maximum(values, 1e-30)) if "loss" in name else values


def extra_snapshots(watched: np.ndarray, last: np.ndarray, delta: float, budget: int) -> list[int]:
    """Which evaluations of a chunk (not its last, which is a base snapshot) get an extra snapshot.

    watched: [evals, member] the watched metric at the chunk's evaluations (`watched_value`);
    last: [member] its value at the previous snapshot. An evaluation is picked where some member's
    value has moved more than `delta` from its value at the snapshot before; at most `budget` picks.
    """
    picks = []
    for i in range(len(watched) - 1):
        if len(picks) >= budget:
            break
        if np.max(np.abs(watched[i] - last)) > delta:
            picks.append(i)
            last = watched[i]
    return picks
