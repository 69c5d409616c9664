"""A run's checkpoint series as one object, in one layout for every run: what every analysis reads.

Every parameter leaf is `[time, member, ...]`. A *member* is one model trained in the run: a solo
run has one, a seed ensemble one per seed. `members` is the small table of what each member's
settings are (`{"seed": 3}`), so a consumer never asks whether a run is an ensemble: it loops, maps
or vmaps over the member axis, which is always there.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import numpy as np

from mi_jax import config as config_lib
from mi_jax.io import snapshots, store
from mi_jax.io.lock import run_dir_lock
from mi_jax.io.members import member_config, member_label, members_of
from mi_jax.kinds import config_class


@dataclasses.dataclass
class Trajectory:
    """The checkpoint series of a run.

    steps    [time] training step of each checkpoint
    params   the model's param dict (as `init_params` gives it), every leaf [time, member, ...]:
             numpy arrays, or lazy views of the run dir (`snapshots.LazyArray`, read on
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
        return snapshots.read_tree(jax.tree.map(lambda x: x[index, member], self.params))

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
        return dataclasses.replace(self, params=snapshots.read_tree(self.params))

    @classmethod
    def load(cls, run_dir, on_corrupt: str = "warn", verify: bool = True) -> "Trajectory":
        """Load a run dir lazily: the params are read when used. Corrupt snapshots are named and
        skipped (`on_corrupt="raise"` to stop); finding them reads the series once, in bounded memory
        (`verify=False` skips that: a corrupt snapshot is then named when read)."""
        run_dir = Path(run_dir)
        cfg_path = run_dir / store.CONFIG
        if not cfg_path.exists():
            raise store.CheckpointError(f"{run_dir} is not a mi_jax run dir (no {store.CONFIG})")
        cfg = load_config(cfg_path)
        table = store.read_members(run_dir)
        solo = _solo(table, cfg)
        steps, flat, member_axis = store.load_snapshots(run_dir, on_corrupt, verify)
        if not member_axis and solo:  # written before runs had a member axis
            flat = {k: v[:, None] for k, v in flat.items()}
        metrics = store.metrics_arrays(store.read_metrics(run_dir), solo=solo)
        return cls(steps, store.unflatten(flat), cfg, metrics, tuple(table or members_of(cfg)), run_dir)


def _solo(member_table, cfg) -> bool:
    """Whether a run dir holds one model trained alone: its metric rows carry no member axis, nor do its
    snapshot files if written before runs had one."""
    return member_table is None and not cfg.train.ensemble


def load_config(path: Path):
    """The config object a run dir's config.json describes (its kind picks the class)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise store.CheckpointError(f"cannot read config {path}: {e}") from None
    return config_lib.from_dict(config_class(data.get("kind")), data)


def convert(run_dir, dtype: str | None = None, compression: str = "none") -> int:
    """Rewrite a run dir's .npy series in the zarr layout (`store.convert_npy`), holding the run dir's
    lock; -> snapshots written."""
    run_dir = Path(run_dir)
    index = store.read_index(run_dir / store.SNAPSHOTS)
    if index.get("layout") == snapshots.ZARR_LAYOUT:
        raise store.CheckpointError(f"{run_dir} is already in the zarr layout")
    solo = _solo(store.read_members(run_dir), load_config(run_dir / store.CONFIG))
    with run_dir_lock(run_dir, "converting"):
        return store.convert_npy(run_dir, solo=solo, dtype=dtype, compression=compression)
