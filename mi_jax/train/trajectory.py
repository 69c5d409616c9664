"""A run's checkpoint series as one pytree: what every analysis consumes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import numpy as np

from mi_jax import config as config_lib
from mi_jax.tasks import config_class
from mi_jax.train import store


@dataclasses.dataclass
class Trajectory:
    """steps [time]; params: the model's param dict with every leaf [time, (seed,) ...];
    config: the run's config object; metrics: {"step": [n_evals], name: [n_evals, (seed)]}."""

    steps: np.ndarray
    params: dict
    config: object
    metrics: dict
    run_dir: Path | None = None

    @property
    def ensemble(self) -> bool:
        return self.config.train.ensemble

    @property
    def seeds(self) -> tuple[int, ...]:
        return self.config.train.seed_list

    def __len__(self) -> int:
        return len(self.steps)

    def at(self, index: int, seed_index: int | None = None) -> dict:
        """The params of one checkpoint (and one ensemble member)."""
        pick = (index,) if seed_index is None else (index, seed_index)
        return jax.tree.map(lambda x: x[pick], self.params)

    def select(self, indices) -> "Trajectory":
        """A sub-series (e.g. every 10th checkpoint): `traj.select(slice(None, None, 10))`."""
        idx = np.arange(len(self.steps))[indices]
        return dataclasses.replace(self, steps=self.steps[idx], params=jax.tree.map(lambda x: x[idx], self.params))

    @classmethod
    def load(cls, run_dir, on_corrupt: str = "warn") -> "Trajectory":
        """Load a run dir. Corrupt snapshots are named and skipped (`on_corrupt="raise"` to stop)."""
        run_dir = Path(run_dir)
        cfg_path = run_dir / store.CONFIG
        if not cfg_path.exists():
            raise store.CheckpointError(f"{run_dir} is not a mi_jax run dir (no {store.CONFIG})")
        cfg = load_config(cfg_path)
        steps, flat = store.load_snapshots(run_dir, on_corrupt)
        metrics = store.metrics_arrays(store.read_metrics(run_dir))
        return cls(steps, store.unflatten(flat), cfg, metrics, run_dir)


def load_config(path: Path):
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise store.CheckpointError(f"cannot read config {path}: {e}") from None
    kind = data.get("kind")
    return config_lib.from_dict(config_class(kind), data)
