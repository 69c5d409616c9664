"""The progress bar of a training run: step, steps/s and the current losses (tqdm; silent when off)."""

from __future__ import annotations

import math

import numpy as np


class ProgressBar:
    def __init__(self, total: int, initial: int, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)

    def update(self, n: int, row: dict, steps_per_s: float):
        """Advance by n steps, showing the losses of the latest metrics `row` (means over members)."""
        if self.bar is None:
            return
        shown = {}
        for key in ("train_loss", "test_loss", "test_acc", "step_loss"):
            if key in row:
                value = np.mean(row[key])
                shown[key] = f"{value:.3g}" if math.isfinite(value) else str(value)
        shown["steps/s"] = f"{steps_per_s:.0f}"
        self.bar.set_postfix(shown, refresh=False)
        self.bar.update(n)

    def close(self):
        if self.bar is not None:
            self.bar.close()
