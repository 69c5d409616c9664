"""`mi-jax`: train presets, resume runs, analyse checkpoint series, run the demo.

    mi-jax list
    mi-jax train PRESET [--set key=value ...] [--seeds 0,1,2] [--out DIR] [--overwrite] [--wandb offline|online|off]
    mi-jax train --resume RUN_DIR
    mi-jax sweep PRESET --grid key=v1,v2 [--grid ...] [--seeds 0,1] [--set key=value ...] [--out DIR] [--one-program]
    mi-jax sweep --resume SWEEP_DIR
    mi-jax train|sweep ... --distributed | --coordinator HOST:PORT --num-processes N --process-id I
    mi-jax analyze RUN_DIR
    mi-jax llc RUN_DIR [--set llc.epsilon=... ...] [--calibrate [--epsilons ...] [--gammas ...] [--n-betas ...]]
    mi-jax import SRC --out RUN_DIR [--preset NAME] [--set key=value ...] [--op +]
    mi-jax export RUN_DIR --out DIR [--member K]
    mi-jax convert RUN_DIR [--dtype float16] [--compression zstd]
    mi-jax demo [--out DIR]

`--presets DIR` (before the command, repeatable) adds a folder of preset files.
Flag parsing and errors only: the work is done by the library (`import mi_jax as mj`).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def use_cpu_cores() -> None:
    """One JAX CPU device per core, at most 4, for `train.data_parallel` (unless JAX_NUM_CPU_DEVICES
    is set; no effect once JAX has started, or on GPU/TPU). Each device's ops still use every core
    through XLA's shared thread pool; the split lets the small ops of different devices run side by
    side, and many devices would leave each a sliver of the batch."""
    os.environ.setdefault("JAX_NUM_CPU_DEVICES", str(min(os.cpu_count() or 1, 4)))


def _cpu_tag() -> str:
    """A short name for this machine's CPU (model and feature flags), for the compile cache's path."""
    import hashlib
    import platform

    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        text = "".join(sorted({l for l in lines if l.startswith(("model name", "flags", "Features"))}))
    except OSError:
        text = platform.processor()
    return f"{platform.machine()}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


def use_compile_cache() -> None:
    """Keep compiled XLA programs on disk, so the next `mi-jax train` or `analyze` of a config already
    compiled skips compiling it (no effect once JAX has started). The cache is $MI_JAX_COMPILE_CACHE
    (`off`: none), by default ~/.cache/mi_jax/xla/<cpu> ($XDG_CACHE_HOME), one folder per CPU kind
    since a shared home may serve machines that cannot run each other's code; capped at 2 GiB,
    the least recently used programs dropped first. Programs that compile in under 0.2 s are not kept."""
    path = os.environ.get("MI_JAX_COMPILE_CACHE")
    if path == "off":
        return
    if not path:
        home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        path = str(home / "mi_jax" / "xla" / _cpu_tag())
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", path)
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
    os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(2 << 30))


def _parse_sets(pairs: list[str]) -> dict[str, str]:
    from mi_jax.config import ConfigError

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        out[key.strip()] = value.strip()
    return out


def _parse_seeds(text: str | None):
    from mi_jax.config import ConfigError

    if text is None:
        return None
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise ConfigError(f"--seeds expects comma-separated integers, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds needs distinct integers, got {text!r}")
    return seeds


def cmd_list(args) -> int:
    from mi_jax import presets

    for name, (doc, source) in presets.describe().items():
        print(f"{name:24s} {doc}")
        print(f"{'':24s} ({source})")
    return 0


def build_config(preset: str, sets: list[str], seeds: str | None):
    from mi_jax import config, presets
    from mi_jax.training.run import with_seeds

    cfg = presets.load(preset)
    cfg = config.override(cfg, _parse_sets(sets or []))
    return with_seeds(cfg, _parse_seeds(seeds))


def cmd_train(args) -> int:
    from mi_jax.config import ConfigError
    from mi_jax.training import run

    if args.resume:
        if args.sets or args.seeds:
            raise ConfigError("--resume continues a run with its saved config; drop --set/--seeds")
        run.resume(Path(args.resume), wandb=args.wandb, progress=not args.quiet)
        _say(f"run dir: {args.resume}")
        return 0
    if not args.preset:
        raise ConfigError("train needs a PRESET (see `mi-jax list`) or --resume RUN_DIR")
    cfg = build_config(args.preset, args.sets, args.seeds)
    run_dir = Path(args.out) if args.out else run.default_run_dir(args.preset)
    final = run.start(cfg, run_dir, overwrite=args.overwrite, wandb=args.wandb, progress=not args.quiet)
    _say(f"run dir: {run_dir}\nfinal (step {final.get('step')}): {_summary(final)}")
    return 0


def _say(text: str) -> None:
    """Print, on process 0 only when several processes run one command."""
    from mi_jax.training.distributed import is_writer

    if is_writer():
        print(text)


def _summary(row: dict) -> str:
    """`name value` pairs; per-seed or per-instance lists shown as their mean and range."""
    import numpy as np

    parts = []
    for name, value in row.items():
        if name == "step":
            continue
        v = np.asarray(value, dtype=float)
        if v.ndim == 0:
            parts.append(f"{name} {float(v):.4g}")
        else:
            parts.append(f"{name} {v.mean():.4g} (mean of {v.size}, {v.min():.3g}..{v.max():.3g})")
    return ", ".join(parts)


def cmd_analyze(args) -> int:
    from mi_jax.reports import analyze_run

    for line in analyze_run(Path(args.run_dir), wandb=args.wandb):
        print(line)
    return 0


def cmd_sweep(args) -> int:
    from mi_jax import config, presets
    from mi_jax.training import run
    from mi_jax.training.sweep import parse_grid, read_spec, sweep
    from mi_jax.kinds import config_class

    if args.resume:
        if args.preset or args.grid or args.sets or args.seeds:
            raise config.ConfigError("--resume continues a sweep with its saved grid; drop PRESET/--grid/--set/--seeds")
        spec = read_spec(Path(args.resume))
        cfg = config.from_dict(config_class(spec["config"]["kind"]), spec["config"])
        result = sweep(cfg, spec["grid"], Path(args.resume), seeds=spec["seeds"], resume=True, wandb=args.wandb,
                       progress=not args.quiet)
    else:
        if not args.preset or not args.grid:
            raise config.ConfigError("sweep needs a PRESET and at least one --grid key=v1,v2 (or --resume SWEEP_DIR)")
        cfg = config.override(presets.load(args.preset), _parse_sets(args.sets))
        out = Path(args.out) if args.out else run.default_run_dir(f"{args.preset}_sweep")
        result = sweep(cfg, parse_grid(args.grid), out, seeds=_parse_seeds(args.seeds), one_program=args.one_program,
                       overwrite=args.overwrite, wandb=args.wandb, progress=not args.quiet)
    _say(f"sweep dir: {result.sweep_dir}: {len(result.members)} members in {len(result.trajectories)} program(s)\n"
          f"(analyse it with `mi-jax analyze {result.sweep_dir}`)")
    return 0


def cmd_llc(args) -> int:
    """The loss landscape over a run's checkpoints (its own command: sampling costs minutes and has its own settings)."""
    from mi_jax.reports import landscape

    grids = {name: landscape.parse_grid(getattr(args, name), name.replace("_", "-"))
             for name in ("epsilons", "gammas", "n_betas")}
    if any(v is not None for v in grids.values()) and not args.calibrate:
        from mi_jax.config import ConfigError

        raise ConfigError("--epsilons/--gammas/--n-betas set the --calibrate grid; add --calibrate")
    for line in landscape.llc_run(Path(args.run_dir), _parse_sets(args.sets), args.calibrate, **grids):
        print(line)
    return 0


def cmd_import(args) -> int:
    """A TransformerLens checkpoint series (the Grokking demo's file, or per-step state dict, safetensors or
    npz files) as a mi_jax run dir. With --preset (and --set) the run takes that config, whose model must
    fit the weights; without, the file must be a grokking series that carries its train/test split."""
    from mi_jax import config, presets
    from mi_jax.io.tl_grokking import grokking_config, write_run_dir
    from mi_jax.io.tl_series import read_series
    from mi_jax.io.transformer_lens import tl_config_fields

    if args.preset:
        cfg = config.override(presets.load(args.preset), _parse_sets(args.sets))
        if not hasattr(cfg, "transformer"):
            raise config.ConfigError(f"preset {args.preset!r} has no transformer to import weights into")
        series = read_series(args.src, tl_config=tl_config_fields(cfg.transformer))
    else:
        if args.sets:
            raise config.ConfigError("--set needs --preset NAME (the config the settings apply to)")
        series = read_series(args.src)
        cfg = grokking_config(series, op=args.op)
    out = write_run_dir(series, cfg, Path(args.out))
    print(f"imported {len(series.steps)} checkpoints (steps {series.steps[0]}..{series.steps[-1]}) of {args.src} "
          f"as a {type(cfg).kind} run: {out}\n(analyse it with `mi-jax analyze {out}`)")
    return 0


def cmd_export(args) -> int:
    """Every checkpoint of one member of a run as TransformerLens state dicts (OUT/{step}.safetensors)."""
    from mi_jax.io.trajectory import Trajectory
    from mi_jax.io.transformer_lens import export_trajectory

    paths = export_trajectory(Trajectory.load(Path(args.run_dir)), Path(args.out), member=args.member)
    print(f"wrote {len(paths)} TransformerLens state dicts to {args.out} ({paths[0].name} .. {paths[-1].name}); "
          "load one with `model.load_state_dict(safetensors.torch.load_file(path))`")
    return 0


def cmd_convert(args) -> int:
    """A run dir's snapshot series in the older .npy layout, rewritten in the zarr layout in place."""
    from mi_jax.io.trajectory import convert

    n = convert(Path(args.run_dir), dtype=args.dtype, compression=args.compression)
    print(f"converted {n} snapshots of {args.run_dir} to the zarr layout "
          f"({args.dtype or 'dtype as trained'}, compression {args.compression})")
    return 0


def cmd_demo(args) -> int:
    """Train grokking_small, analyse its checkpoint series and write the plots."""
    from mi_jax.reports import analyze_run
    from mi_jax.training import run

    cfg = build_config("grokking_small", [], None)
    run_dir = Path(args.out) if args.out else run.default_run_dir("grokking_small")
    print(f"[demo] training grokking_small into {run_dir} (a few minutes on 2 CPU cores)")
    final = run.start(cfg, run_dir, overwrite=True, wandb=args.wandb, progress=not args.quiet)
    print(f"[demo] final: {_summary(final)}")
    print(f"[demo] analysing every checkpoint of {run_dir}")
    for line in analyze_run(run_dir, wandb=args.wandb):
        print(f"[demo] {line}")
    print(f"[demo] done. run dir {run_dir}: config.json, metrics.jsonl, snapshots/, state/, analysis/, wandb/")
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mi-jax", description=__doc__.splitlines()[0])
    parser.add_argument("--presets", action="append", default=[], metavar="DIR",
                        help="a folder of your own preset files (NAME.py defining PRESET); also $MI_JAX_PRESETS")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the presets").set_defaults(func=cmd_list)

    train = sub.add_parser("train", help="train a preset (or resume a run)")
    train.add_argument("preset", nargs="?")
    train.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    train.add_argument("--seeds", help="comma-separated seeds: train them as one vmapped ensemble")
    train.add_argument("--out", help="run dir (default checkpoints/PRESET)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue a killed run")
    train.add_argument("--overwrite", action="store_true", help="replace an existing run dir")
    train.set_defaults(func=cmd_train)

    swp = sub.add_parser("sweep", help="train a grid of settings x seeds as few vmapped programs as shapes allow")
    swp.add_argument("preset", nargs="?")
    swp.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2", help="a swept config key (repeatable)")
    swp.add_argument("--seeds", help="comma-separated seeds of every grid point")
    swp.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    swp.add_argument("--out", help="sweep dir (default checkpoints/PRESET_sweep)")
    swp.add_argument("--one-program", action="store_true", help="fail unless every member shares one compiled program")
    swp.add_argument("--overwrite", action="store_true", help="replace an existing sweep dir")
    swp.add_argument("--resume", metavar="SWEEP_DIR", help="continue a killed sweep")
    swp.set_defaults(func=cmd_sweep)

    analyze = sub.add_parser("analyze", help="compute progress measures over a run's checkpoints and plot them")
    analyze.add_argument("run_dir")
    analyze.set_defaults(func=cmd_analyze)

    llc = sub.add_parser("llc", help="LLC (with chain diagnostics), top Hessian eigenvalue and trace over a run's checkpoints")
    llc.add_argument("run_dir")
    llc.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                     help="e.g. llc.epsilon=3e-4, llc.n_chains=8, every=5 (see mi_jax.analysis.run_landscape)")
    llc.add_argument("--calibrate", action="store_true", help="first a grid of sampler settings on 3 checkpoints")
    llc.add_argument("--epsilons", help="calibration grid (default: llc.epsilon x 0.1, 0.3, 1, 3, 10)")
    llc.add_argument("--gammas", help="calibration grid (default: llc.gamma x 0.1, 1, 10)")
    llc.add_argument("--n-betas", dest="n_betas", help="calibration grid (default: llc.n_beta)")
    llc.set_defaults(func=cmd_llc)

    imp = sub.add_parser("import", help="a TransformerLens checkpoint series as a mi_jax run dir")
    imp.add_argument("src", help="a .pth/.pt file (the Grokking demo's dict) or a folder of per-step files")
    imp.add_argument("--out", required=True, help="the run dir to write (absent or empty)")
    imp.add_argument("--preset", help="the config of the run (its model must fit the weights)")
    imp.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    imp.add_argument("--op", default="+", choices=["+", "-", "*", "/", "x2+y2"],
                     help="the grokking task's operation (a TL file does not say; default +)")
    imp.set_defaults(func=cmd_import)

    export = sub.add_parser("export", help="a run's checkpoints as TransformerLens state dicts (safetensors)")
    export.add_argument("run_dir")
    export.add_argument("--out", required=True, help="folder for OUT/{step}.safetensors")
    export.add_argument("--member", type=int, default=0, help="which member of the run (default 0)")
    export.set_defaults(func=cmd_export)

    conv = sub.add_parser("convert", help="rewrite an older run dir's .npy snapshots in the zarr layout")
    conv.add_argument("run_dir")
    conv.add_argument("--dtype", choices=["float32", "float16", "bfloat16"],
                      help="storage precision (default: as trained; reads come back float32)")
    conv.add_argument("--compression", default="none", choices=["none", "zstd"])
    conv.set_defaults(func=cmd_convert)

    demo = sub.add_parser("demo", help="train grokking_small, analyse it, write plots")
    demo.add_argument("--out", help="run dir (default checkpoints/grokking_small)")
    demo.set_defaults(func=cmd_demo)
    for p in (train, swp, analyze, demo):
        p.add_argument("--wandb", default="offline", choices=["offline", "online", "off"])
    for p in (train, swp, demo):
        p.add_argument("--quiet", action="store_true", help="no progress bar")
    for p in (train, swp):
        _distributed_flags(p)
    return parser


def _distributed_flags(p: argparse.ArgumentParser) -> None:
    """One run over several processes (`mi_jax.training.distributed`); each flag defaults to $MI_JAX_<FLAG>."""
    env = os.environ.get
    group = p.add_argument_group("several processes (multi-host)")
    group.add_argument("--distributed", action="store_true", default=env("MI_JAX_DISTRIBUTED") == "1",
                       help="join a multi-process run found in the environment (SLURM, TPU VM, Open MPI)")
    group.add_argument("--coordinator", default=env("MI_JAX_COORDINATOR"), metavar="HOST:PORT",
                       help="process 0's address (with --num-processes and --process-id)")
    group.add_argument("--num-processes", type=int, default=env("MI_JAX_NUM_PROCESSES"), metavar="N")
    group.add_argument("--process-id", type=int, default=env("MI_JAX_PROCESS_ID"), metavar="I")


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    use_cpu_cores()
    use_compile_cache()
    from mi_jax import presets
    from mi_jax.config import ConfigError
    from mi_jax.io.store import CheckpointError
    from mi_jax.training.loop import TrainingDiverged

    presets.USER_DIRS[:] = [Path(d) for d in args.presets]
    try:
        if hasattr(args, "distributed"):
            from mi_jax.training import distributed

            distributed.initialize(auto=args.distributed, coordinator=args.coordinator,
                                   num_processes=args.num_processes, process_id=args.process_id)
        return args.func(args)
    except (ConfigError, CheckpointError, TrainingDiverged) as e:
        print(f"mi-jax: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mi-jax: interrupted; resume with `mi-jax train --resume RUN_DIR`", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
