"""A run's checkpoint series as one object, in one layout for every run: what every analysis reads.

Every parameter leaf is `[time, member, ...]`. A *member* is one model trained in the run: a solo
run has one, a seed ensemble one per seed. `members` is the small table of what each member's
settings are (`{"seed": 3}`), so a consumer never asks whether a run is an ensemble: it loops, maps
or vmaps over the member axis, which is always there.

A fine-tuned run (`mj.train(..., init_from="BASE_DIR:STEP")`) records its lineage in config.json
(`"init_from": {"run", "step", "member"}`, see `lineage`). Its snapshot index and metrics.jsonl count
its own steps from 0, which is what resuming it reads; `Trajectory.load` adds the base's step, so
its series reads as steps S, S + ckpt_every, ... continuing the base's.
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
    init_from  a fine-tuned run's lineage (`lineage`): {"run": the base run dir, "step": the base's step it
             started from (the offset of `steps`), "member": the base member each member started from}
    """

    steps: np.ndarray
    params: dict
    config: object
    metrics: dict
    members: tuple[dict, ...] = ()
    run_dir: Path | None = None
    init_from: dict | None = None

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

    def members_at(self, index: int, members) -> dict:
        """The params of checkpoint `index` of each of `members` (a list of member indices, repeats allowed),
        read into memory, each member once: leaves [len(members), ...]."""
        read = {m: self.at(index, m) for m in sorted(set(members))}
        return jax.tree.map(lambda *xs: np.stack(xs), *[read[m] for m in members])

    def member_config(self, member: int):
        """The config member `member` would have trained alone."""
        return member_config(self.config, self.members[member])

    def member_label(self, member: int) -> str:
        return member_label(self.members[member])

    def select(self, indices) -> "Trajectory":
        """A sub-series of checkpoints (e.g. every 10th): `traj.select(slice(None, None, 10))`."""
        idx = np.arange(len(self.steps))[indices]
        return dataclasses.replace(self, steps=self.steps[idx], params=jax.tree.map(lambda x: x[idx], self.params))

    def thinned(self, every: int) -> "Trajectory":
        """Every `every`-th checkpoint and the last."""
        return self.select(np.unique(np.r_[np.arange(0, len(self), every), len(self) - 1]))

    def select_members(self, indices) -> "Trajectory":
        """Some members only, with their metrics: `traj.select_members([0])`."""
        idx = np.arange(self.n_members)[indices]
        metrics = {k: v if k == "step" else np.asarray(v)[:, idx] for k, v in self.metrics.items()}
        init_from = self.init_from  # each kept member keeps the base member it started from
        if init_from is not None:
            init_from = {**init_from, "member": [init_from["member"][i] for i in idx]}
        return dataclasses.replace(self, params=jax.tree.map(lambda x: x[:, idx], self.params), metrics=metrics,
                                   members=tuple(self.members[i] for i in idx), init_from=init_from)

    def materialize(self) -> Trajectory:
        """The same series with every parameter read into memory (numpy arrays)."""
        return dataclasses.replace(self, params=series.read_tree(self.params))

    @classmethod
    def load(cls, run_dir, on_corrupt: str = "warn", verify: bool = True) -> "Trajectory":
        """Load a run dir lazily: the params are read when used. Corrupt snapshots are named and
        skipped (`on_corrupt="raise"` to stop); finding them reads the series once, in bounded memory
        (`verify=False` skips that: a corrupt snapshot is then named when read). A fine-tuned run's
        steps (and metrics' steps) continue its base's: its own count plus `init_from["step"]`."""
        run_dir = Path(run_dir)
        cfg, init_from = load_config(run_dir), lineage(run_dir)
        table = run_dir_lib.read_members(run_dir)
        solo = is_solo(table, cfg)
        steps, flat, member_axis = series.load(run_dir / run_dir_lib.SNAPSHOTS, on_corrupt, verify)
        if not member_axis and solo:  # written before runs had a member axis
            flat = {k: v[:, None] for k, v in flat.items()}
        metrics = run_dir_lib.metrics_arrays(run_dir_lib.read_metrics(run_dir), solo=solo)
        offset = step_offset(init_from)
        if offset:  # the files count the fine-tune's own steps (what a resume reads); the series, the base's
            steps, metrics = np.asarray(steps) + offset, {**metrics, "step": np.asarray(metrics["step"]) + offset}
        return cls(steps, unflatten(flat), cfg, metrics, tuple(table or members_of(cfg)), run_dir, init_from)


INIT_FROM = "init_from"  # config.json's key for a fine-tuned run's lineage, beside the config's own fields


def load_config(run_dir):
    """The config object of a run dir (its config.json; the kind it names picks the class)."""
    data = run_dir_lib.read_config(run_dir)
    data.pop(INIT_FROM, None)  # the lineage is the run's, not the config's: the same config trains from scratch
    return config_from_dict(data)


def lineage(run_dir) -> dict | None:
    """A fine-tuned run's lineage, as its config.json records it: {"run": the base run dir (absolute),
    "step": the base's step it started from, "member": [the base member each member started from]};
    None for a run trained from scratch."""
    return run_dir_lib.read_config(run_dir).get(INIT_FROM)


def base_params(init_from: dict) -> dict:
    """The params a fine-tuned run started from, as its lineage (`lineage`) names them: leaves [member, ...],
    one per member of the fine-tune; one CheckpointError line when the base run no longer holds them."""
    run = Path(init_from["run"])
    if not run_dir_lib.is_run_dir(run):
        raise CheckpointError(f"the base run {run} of this fine-tune is gone (no {run_dir_lib.CONFIG})")
    base = Trajectory.load(run, on_corrupt="raise", verify=False)  # the one snapshot read is checked
    steps = [int(s) for s in base.steps]
    if int(init_from["step"]) not in steps:
        raise CheckpointError(f"the base run {run} of this fine-tune no longer holds step {init_from['step']}")
    return base.members_at(steps.index(int(init_from["step"])), init_from["member"])


def step_offset(init_from: dict | None) -> int:
    """The base step a run's own step 0 is (0 for a run from scratch): its files' steps plus this are its series'."""
    return int(init_from["step"]) if init_from else 0


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
