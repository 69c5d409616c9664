"""Jumps between feature geometries during training (Elhage et al. 2022, "energy level" jumps).

Input: one instance's feature dimensionalities over a checkpoint series, D [time, feat], and its
loss [time]. A checkpoint is *settled* when no D_i moves by more than `tol` over the next
`window` checkpoints; consecutive settled runs with (nearly) the same D form one plateau. A
*jump* is the unsettled stretch between two plateaus whose D differ by more than `min_change` in
some feature. Plain numpy on the [time, feat] results of `analyze` (no per-checkpoint model calls).
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Jump:
    """A move between two plateaus: D and loss at the last settled checkpoint before and the first after."""

    step_from: int
    step_to: int
    D_before: np.ndarray  # [feat]
    D_after: np.ndarray  # [feat]
    loss_before: float
    loss_after: float


def settled(D: np.ndarray, tol: float = 0.02, window: int = 5) -> np.ndarray:
    """[time] bool: max_i |D_i(t') - D_i(t)| <= tol for all t' in [t, t + window] (False near the end)."""
    T = len(D)
    out = np.zeros(T, bool)
    for t in range(T - window):
        out[t] = np.abs(D[t:t + window + 1] - D[t]).max() <= tol
    return out


def plateaus(D: np.ndarray, tol: float = 0.02, window: int = 5, min_change: float = 0.05) -> list[tuple[int, int]]:
    """[(first, last)] checkpoint index ranges of plateaus; settled runs closer than min_change are merged."""
    ok = settled(D, tol, window)
    runs, start = [], None
    for t, s in enumerate(np.append(ok, False)):
        if s and start is None:
            start = t
        elif not s and start is not None:
            runs.append([start, t - 1 + window])  # the last settled t vouches for t + window too
            start = None
    merged: list[list[int]] = []
    for run in runs:
        if merged and np.abs(D[run[0]] - D[merged[-1][1]]).max() <= min_change:
            merged[-1][1] = run[1]
        else:
            merged.append(run)
    return [(a, min(b, len(D) - 1)) for a, b in merged]


def find_jumps(steps: np.ndarray, D: np.ndarray, loss: np.ndarray, tol: float = 0.02, window: int = 5,
               min_change: float = 0.05) -> list[Jump]:
    """Jumps of one instance. steps [time], D [time, feat], loss [time]."""
    runs = plateaus(D, tol, window, min_change)
    return [
        Jump(int(steps[a_end]), int(steps[b_start]), D[a_end].copy(), D[b_start].copy(),
             float(loss[a_end]), float(loss[b_start]))
        for (_, a_end), (b_start, _) in zip(runs, runs[1:])
    ]
