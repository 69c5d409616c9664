"""Storage, one module per thing on disk, at the edges of the numerics (nothing here is traced by jax):

    series         RUN_DIR/snapshots/: the parameter series as zarr arrays, read lazily; the older .npy layout
    run_dir        the run dir itself: its layout, config.json, metrics.jsonl, members.json, the lock
    state          RUN_DIR/state/: the resumable train state (orbax)
    results        RUN_DIR/analysis/: measures saved by the reports (npz, summary JSON)
    wandb_logger   wandb logging (offline by default)
"""

from __future__ import annotations

import os
from pathlib import Path


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated or corrupt, or a run dir is not one (the message names it)."""


def atomic_write(path: Path, text: str) -> None:
    """Write `text` to `path` so that a reader sees the old file or the new one, never a part."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
