"""Sweeps: a grid of settings times seeds, trained as few compiled programs as the shapes allow.

    sweep = mj.sweep(mj.load_preset("grokking_small"), {"train.lr": [1e-3, 3e-3], "train.weight_decay": [0.1, 1.0]},
                     seeds=(0, 1), out="checkpoints/wd_lr")      # 8 members, one vmapped program
    mi-jax sweep grokking_small --grid train.lr=1e-3,3e-3 --grid train.weight_decay=0.1,1 --seeds 0,1

Members are every point of the grid (the product of its values) with every seed. Members that
differ only in the optimiser's hyperparameters (`training.optimizer.HYPERPARAMETERS`: lr, weight decay,
betas, warm-up), the settings the kind's task takes per member (grokking: the train fraction and the
data seed, as a per-member mask over all pairs, and the init scale) and the seed share ONE vmapped
program, each member's values a [member] array; any other key (p, model.d_model, ...) splits the
members into programs, one run dir each. A member trains as the solo run of its settings would, up to float rounding (tested; README: Reproducibility).

    SWEEP_DIR/sweep.json        the preset's config, the grid, the seeds and each program's members
    SWEEP_DIR/wandb_sweep.yaml  the grid as a wandb sweep config, for wandb agents online (the sweep
                                server needs a network; offline, the runs share a wandb group instead)
    SWEEP_DIR/program_K/        a run dir; its members.json lists its members' settings
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

from mi_jax import config as config_lib
from mi_jax import runtime
from mi_jax.config import ConfigError, check
from mi_jax.io import CheckpointError
from mi_jax.io import run_dir as run_dir_lib
from mi_jax.runs import run
from mi_jax.runs.trajectory import Trajectory
from mi_jax.tasks import config_dict, config_from_dict, kind_of, make_task
from mi_jax.training import devices, distributed, failures
from mi_jax.training.optimizer import TRAIN_KEYS

SWEEP = "sweep.json"


def shared_keys(cfg) -> tuple[str, ...]:
    """The keys members of one program may differ in: the optimiser's, and those the kind's task takes
    per member (grokking: train_frac, data_seed, model.init_std), besides the seed."""
    return TRAIN_KEYS + tuple(getattr(kind_of(cfg).task, "MEMBER_KEYS", ()))


def parse_grid(items: list[str]) -> dict[str, list[str]]:
    """["train.lr=1e-3,3e-3", ...] -> {"train.lr": ["1e-3", "3e-3"], ...} (one line per bad item)."""
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        check(bool(sep and key and values.strip()), f"--grid expects key=value1,value2,..., got {item!r}")
        check(key not in grid, f"--grid names {key} twice")
        check(key not in ("train.seed", "train.seeds"), "sweep seeds with --seeds, not --grid")
        grid[key] = [v.strip() for v in values.split(",") if v.strip()]
    return grid


def _value(cfg, dotted: str):
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def members(cfg, grid: dict[str, list], seeds) -> list[dict]:
    """Every grid point with every seed: [{key: value, ..., "seed": s}], values typed as the config's
    fields (an unknown key or a value of the wrong type is one ConfigError line)."""
    typed = {key: [_value(config_lib.override(cfg, {key: raw}), key) for raw in values] for key, values in grid.items()}
    points = [dict(zip(typed, combo)) for combo in itertools.product(*typed.values())]
    for point in points:  # each member's whole config is valid (e.g. ckpt_every divides steps)
        config_lib.override(cfg, point)
    seeds = tuple(seeds) if seeds else (cfg.train.seed,)
    return [{**point, "seed": seed} for point in points for seed in seeds]


def programs(cfg, member_table: list[dict]) -> list[tuple[object, list[dict]]]:
    """Group members into compiled programs: [(the program's config, its members)], where a program's
    config carries its members' common settings (every key but `shared_keys` and the seed)."""
    shared = shared_keys(cfg)
    groups: dict[tuple, list[dict]] = {}
    for member in member_table:
        own = tuple((k, v) for k, v in member.items() if k not in shared and k != "seed")
        groups.setdefault(own, []).append({k: v for k, v in member.items() if k in shared or k == "seed"})
    out = []
    for own, group in groups.items():
        base = config_lib.override(cfg, dict(own)) if own else cfg
        base = dataclasses.replace(base, train=dataclasses.replace(base.train, seeds=None))
        out.append((base, group))
    return out


@dataclasses.dataclass
class Sweep:
    """A sweep dir loaded: `members` (one dict of settings per member, with its "program"), and each
    program's checkpoint series (`trajectories[k]`, params [time, member, ...] of that program's members)."""

    grid: dict
    seeds: tuple
    members: list[dict]
    trajectories: list[Trajectory]
    sweep_dir: Path

    @classmethod
    def load(cls, sweep_dir) -> "Sweep":
        sweep_dir = Path(sweep_dir)
        spec = read_spec(sweep_dir)
        # lazily and unverified: a sweep's table needs metrics only; each program's analysis checks its series
        trajectories = [Trajectory.load(sweep_dir / name, verify=False) for name in spec["programs"]]
        grid_keys = list(spec["grid"])
        table = [{**{key: _value(traj.member_config(m), key) for key in grid_keys}, "seed": member["seed"], "program": k}
                 for k, traj in enumerate(trajectories) for m, member in enumerate(traj.members)]
        return cls(spec["grid"], tuple(spec["seeds"]), table, trajectories, sweep_dir)


def resume_sweep(sweep_dir, *, wandb: str = "offline", progress: bool = True) -> Sweep:
    """Continue a killed sweep with its own config, grid and seeds (programs already finished are kept)."""
    spec = read_spec(Path(sweep_dir))
    return sweep(config_from_dict(spec["config"]), spec["grid"], sweep_dir, seeds=spec["seeds"], resume=True,
                 wandb=wandb, progress=progress)


def read_spec(sweep_dir: Path) -> dict:
    path = Path(sweep_dir) / SWEEP
    if not path.exists():
        raise CheckpointError(f"{sweep_dir} is not a sweep dir (no {SWEEP})")
    return json.loads(path.read_text())


def is_sweep_dir(path) -> bool:
    return (Path(path) / SWEEP).exists()


def wandb_sweep_config(grid: dict[str, list], seeds, name: str) -> dict:
    """The grid as a wandb sweep config (method grid): run it with `wandb sweep` + `wandb agent`."""
    parameters = {key: {"values": list(values)} for key, values in grid.items()}
    parameters["seed"] = {"values": list(seeds)}
    return {"name": name, "method": "grid", "parameters": parameters,
            "command": ["mi-jax", "train", "${program_preset}", "${args_no_hyphens}"]}


def sweep(cfg, grid: dict[str, list], out, *, seeds=None, one_program: bool = False, overwrite: bool = False,
          resume: bool = False, wandb: str = "offline", progress: bool = True) -> Sweep:
    """Train every member of `grid` x `seeds` into the sweep dir `out` -> the loaded `Sweep`.

    grid: {dotted key: [values]} (strings are parsed as the config's field types); seeds: the seeds
    of every grid point (default: the config's seed). `one_program` insists that every member share
    one compiled program. `resume` continues a killed sweep with the same grid (programs already
    finished are kept).
    """
    runtime.configure()
    out = Path(out)
    grid = {key: list(values) for key, values in grid.items()}
    table = members(cfg, grid, seeds)
    plan = programs(cfg, table)
    check(not one_program or len(plan) == 1,
          f"the grid makes {len(plan)} programs: only {', '.join(shared_keys(cfg))} and seeds can share one "
          f"(drop --one-program, or sweep the other keys in separate sweeps)")
    names = [f"program_{k}" for k in range(len(plan))]
    spec = {"config": config_dict(cfg), "grid": {k: [str(v) for v in vs] for k, vs in grid.items()},
            "seeds": sorted({m["seed"] for m in table}), "programs": names}
    if resume:
        found = read_spec(out)
        check({k: found[k] for k in ("config", "grid", "seeds")} == {k: spec[k] for k in ("config", "grid", "seeds")},
              f"sweep dir {out} was made with grid {found['grid']} and seeds {found['seeds']}, "
              f"not {spec['grid']} and {spec['seeds']}: resume it with its own grid")
    elif out.exists() and any(out.iterdir()):
        check(overwrite, f"sweep dir {out} already exists (pass --overwrite to replace it, or --resume it)")
        check(is_sweep_dir(out), f"refusing to overwrite {out}: it is not a mi_jax sweep dir")
    for program_cfg, program_members in plan:  # every program's config is valid before any trains
        devices.plan(make_task(program_cfg), program_cfg.train, program_members)
    with distributed.writer_lock(out, "sweeping", before=lambda: out.mkdir(parents=True, exist_ok=True)) as writer:
        if writer and not resume:
            run.empty(out)
            try:
                (out / SWEEP).write_text(json.dumps(spec, indent=1))
                # JSON is YAML: `wandb sweep wandb_sweep.yaml` reads it
                (out / "wandb_sweep.yaml").write_text(
                    json.dumps(wandb_sweep_config(grid, spec["seeds"], out.name), indent=1))
            except OSError as e:
                raise ConfigError(f"cannot write the sweep dir {out}: {e.strerror or e}") from None
        distributed.sync(f"mi_jax: made {out}")
        for (program_cfg, program_members), name in zip(plan, names):
            program_dir, resume_sweep_command = out / name, f"mi-jax sweep --resume {out}"
            try:
                with distributed.explaining(
                        lambda lost: str(failures.peer_lost(lost, program_dir).resumed_with(resume_sweep_command))):
                    # a program stopped before it saved a train state (a full disk at its first save) starts again
                    if resume and run_dir_lib.is_run_dir(program_dir) and (
                            _finished(program_dir, program_cfg) or run.resumable(program_dir)):
                        if not _finished(program_dir, program_cfg):
                            run.resume(program_dir, wandb=wandb, progress=progress)
                        continue
                    run.train(program_cfg, program_dir, overwrite=True, wandb=wandb, progress=progress,
                              members=program_members, group=out.name)
            except Exception as e:  # a full disk, a lost process: continued by resuming the sweep
                stopped = failures.stopped_by(e, program_dir)
                if stopped is None:
                    raise
                raise stopped.resumed_with(resume_sweep_command) from None
    return Sweep.load(out)


def _finished(run_dir: Path, cfg) -> bool:
    rows = run_dir_lib.read_metrics(run_dir)
    return bool(rows) and rows[-1]["step"] >= cfg.train.steps

