"""A run's checkpoint series as one object, in one layout for every run: what every analysis reads.

Every parameter leaf is `[time, member, ...]`. A *member* is one model trained in the run: a solo
run has one, a seed ensemble one per seed. `members` is the small table of what each member's
settings are (`{"seed": 3}`), so a consumer never asks whether a run is an ensemble: it loops, maps
or vmaps over the member axis, which is always there.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np

from mi_jax.io import CheckpointError, series
from mi_jax.io import run_dir as run_dir_lib
from mi_jax.io.run_dir import is_solo, member_config, member_label, members_of
from mi_jax.tasks import config_from_dict
from mi_jax.trees import unflatten


@dataclasses.dataclass
class Trajectory:
    """The checkpoint series of a run.

    steps    [time] training step of each checkpoint
    params   the model's param dict (as `init_params` gives it), every leaf [time, member, ...]:
             numpy arrays, or lazy views of the run dir (`mi_jax.io.series.LazyArray`, read on
             `np.asarray` or indexing-then-reading; `materialize()` reads them all)
    config   the run's config object
    metrics  {"step": [n_evals], name: [n_evals, member, ...]}
    members  one dict of settings per member (`members_of(config)` unless given)
    run_dir  where it was loaded from (None if built in memory)
    """

    steps: np.ndarray
    params: dict
    config: object
    metrics: dict
    members: tuple[dict, ...] = ()
    run_dir: Path | None = None

    def __post_init__(self):
        self.members = tuple(self.members) or members_of(self.config)
        n = jax.tree.leaves(self.params)[0].shape[1]
        if n != len(self.members):
            raise ValueError(f"params have {n} members on axis 1, the member table lists {len(self.members)}")

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def n_members(self) -> int:
        return len(self.members)

    def at(self, index: int, member: int = 0) -> dict:
        """The params of one model, read into memory: checkpoint `index` of member `member`."""
        return series.read_tree(jax.tree.map(lambda x: x[index, member], self.params))

    def member_config(self, member: int):
        """The config member `member` would have trained alone."""
        return member_config(self.config, self.members[member])

    def member_label(self, member: int) -> str:
        return member_label(self.members[member])

    def select(self, indices) -> "Trajectory":
        """A sub-series of checkpoints (e.g. every 10th): `traj.select(slice(None, None, 10))`."""
        idx = np.arange(len(self.steps))[indices]
        return dataclasses.replace(self, steps=self.steps[idx], params=jax.tree.map(lambda x: x[idx], self.params))

    def select_members(self, indices) -> "Trajectory":
        """Some members only, with their metrics: `traj.select_members([0])`."""
        idx = np.arange(self.n_members)[indices]
        metrics = {k: v if k == "step" else np.asarray(v)[:, idx] for k, v in self.metrics.items()}
        return dataclasses.replace(self, params=jax.tree.map(lambda x: x[:, idx], self.params), metrics=metrics,
                                   members=tuple(self.members[i] for i in idx))

    def materialize(self) -> Trajectory:
        """The same series with every parameter read into memory (numpy arrays)."""
        return dataclasses.replace(self, params=series.read_tree(self.params))

    @classmethod
    def load(cls, run_dir, on_corrupt: str = "warn", verify: bool = True) -> "Trajectory":
        """Load a run dir lazily: the params are read when used. Corrupt snapshots are named and
        skipped (`on_corrupt="raise"` to stop); finding them reads the series once, in bounded memory
        (`verify=False` skips that: a corrupt snapshot is then named when read)."""
        run_dir = Path(run_dir)
        cfg = load_config(run_dir)
        table = run_dir_lib.read_members(run_dir)
        solo = is_solo(table, cfg)
        steps, flat, member_axis = series.load(run_dir / run_dir_lib.SNAPSHOTS, on_corrupt, verify)
        if not member_axis and solo:  # written before runs had a member axis
            flat = {k: v[:, None] for k, v in flat.items()}
        metrics = run_dir_lib.metrics_arrays(run_dir_lib.read_metrics(run_dir), solo=solo)
        return cls(steps, unflatten(flat), cfg, metrics, tuple(table or members_of(cfg)), run_dir)


def load_config(run_dir):
    """The config object of a run dir (its config.json; the kind it names picks the class)."""
    return config_from_dict(run_dir_lib.read_config(run_dir))


def convert(run_dir, dtype: str | None = None, compression: str = "none") -> int:
    """Rewrite a run dir's .npy series in the zarr layout (`series.convert_npy`), holding the run dir's
    lock; -> snapshots written."""
    run_dir = Path(run_dir)
    snap_dir = run_dir / run_dir_lib.SNAPSHOTS
    if series.read_index(snap_dir).get("layout") == series.ZARR_LAYOUT:
        raise CheckpointError(f"{run_dir} is already in the zarr layout")
    solo = is_solo(run_dir_lib.read_members(run_dir), load_config(run_dir))
    with run_dir_lib.lock(run_dir, "converting"):
        return series.convert_npy(snap_dir, solo=solo, dtype=dtype, compression=compression)
