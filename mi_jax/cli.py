"""`mi-jax`: flags and errors only; the work is done by the library (`import mi_jax as mj`).

    mi-jax list
    mi-jax train PRESET [--set key=value ...] [--seeds 0,1,2] [--out DIR] [--overwrite]
    mi-jax train PRESET --init-from RUN_DIR[:STEP] [--set ...] [--out DIR]   (fine-tune from a snapshot)
    mi-jax train --resume RUN_DIR
    mi-jax sweep PRESET --grid key=v1,v2 [--grid ...] [--seeds 0,1] [--set key=value ...] [--out DIR] [--one-program]
    mi-jax sweep --resume SWEEP_DIR
    mi-jax train|sweep ... --distributed | --coordinator HOST:PORT --num-processes N --process-id I
    mi-jax analyze RUN_DIR
    mi-jax llc RUN_DIR [--set llc.epsilon=... ...] [--calibrate [--epsilons ...] [--gammas ...] [--n-betas ...]]
    mi-jax sae RUN_DIR [--hook NAME] [--set sae.k=8 --set ks=2,4,8 --set crosscoder_checkpoints=8 ...]
    mi-jax sae RUN_DIR --export DIR [--step S] [--member M]      (one checkpoint's SAEs, SAELens's format)
    mi-jax import SRC --out RUN_DIR [--preset NAME] [--set key=value ...] [--op +]
    mi-jax export RUN_DIR --out DIR [--member K]
    mi-jax convert RUN_DIR [--dtype float16] [--compression zstd]
    mi-jax demo [--out DIR]

Every command that trains or analyses takes `--quiet` (no progress bar) and `--wandb offline|online|off`.
`--presets DIR` (before the command, repeatable) adds a folder of preset files.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

SET_HELP = "a config value, as a dotted key (repeatable), e.g. --set train.lr=3e-3 --set model.d_model=64"
GRID_HELP = "a swept config key and its values (repeatable), e.g. --grid train.lr=1e-3,3e-3 --grid train.weight_decay=0.1,1"


def _parse_sets(pairs: list[str]) -> dict[str, str]:
    from mi_jax.config import ConfigError

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        out[key.strip()] = value.strip()
    return out


def _int_list(text: str | None, flag: str) -> list[int] | None:
    from mi_jax.config import ConfigError

    if text is None:
        return None
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"{flag} expects comma-separated integers, got {text!r}") from None


def _parse_seeds(text: str | None):
    from mi_jax.config import ConfigError

    seeds = _int_list(text, "--seeds")
    if seeds is not None and (not seeds or len(set(seeds)) != len(seeds)):
        raise ConfigError(f"--seeds needs distinct integers, got {text!r}")
    return None if seeds is None else tuple(seeds)


def _config(preset: str, sets: list[str], seeds: str | None = None):
    from mi_jax import config, presets
    from mi_jax.runs.run import with_seeds

    return with_seeds(config.override(presets.load(preset), _parse_sets(sets)), _parse_seeds(seeds))


def _say(text: str) -> None:
    """Print, on process 0 only when several processes run one command."""
    from mi_jax.training.distributed import is_writer

    if is_writer():
        print(text)


def cmd_list(args) -> int:
    from mi_jax import presets

    for name, (doc, source) in presets.describe().items():
        print(f"{name:24s} {doc}")
        print(f"{'':24s} ({source})")
    return 0


def cmd_train(args) -> int:
    from mi_jax.config import ConfigError
    from mi_jax.demo import summary
    from mi_jax.runs import run

    if args.resume:
        if args.sets or args.seeds or args.init_from or args.init_members:
            raise ConfigError("--resume continues a run with its saved config; drop --set/--seeds/--init-from/--init-members")
        run.resume(Path(args.resume), wandb=args.wandb, progress=not args.quiet)
        _say(f"run dir: {args.resume}")
        return 0
    if not args.preset:
        raise ConfigError("train needs a PRESET (see `mi-jax list`) or --resume RUN_DIR")
    cfg = _config(args.preset, args.sets, args.seeds)
    run_dir = Path(args.out) if args.out else run.default_run_dir(args.preset)
    final = run.train(cfg, run_dir, overwrite=args.overwrite, wandb=args.wandb, progress=not args.quiet,
                      init_from=args.init_from, init_members=_int_list(args.init_members, "--init-members"))
    origin = f" (fine-tuned from {args.init_from})" if args.init_from else ""
    _say(f"run dir: {run_dir}{origin}\nfinal (step {final.get('step')}): {summary(final)}")
    return 0


def cmd_sweep(args) -> int:
    from mi_jax.config import ConfigError
    from mi_jax.runs import run
    from mi_jax.runs.sweep import parse_grid, resume_sweep, sweep

    if args.resume:
        if args.preset or args.grid or args.sets or args.seeds:
            raise ConfigError("--resume continues a sweep with its saved grid; drop PRESET/--grid/--set/--seeds")
        result = resume_sweep(Path(args.resume), wandb=args.wandb, progress=not args.quiet)
    else:
        if not args.preset or not args.grid:
            raise ConfigError("sweep needs a PRESET and at least one --grid key=v1,v2 (or --resume SWEEP_DIR)")
        out = Path(args.out) if args.out else run.default_run_dir(f"{args.preset}_sweep")
        result = sweep(_config(args.preset, args.sets), parse_grid(args.grid), out, seeds=_parse_seeds(args.seeds),
                       one_program=args.one_program, overwrite=args.overwrite, wandb=args.wandb, progress=not args.quiet)
    _say(f"sweep dir: {result.sweep_dir}: {len(result.members)} members in {len(result.trajectories)} program(s)\n"
         f"(analyse it with `mi-jax analyze {result.sweep_dir}`)")
    return 0


def cmd_analyze(args) -> int:
    from mi_jax.reports import analyze_run

    for line in analyze_run(Path(args.run_dir), wandb=args.wandb, progress=not args.quiet):
        print(line)
    return 0


def cmd_llc(args) -> int:
    from mi_jax.config import ConfigError
    from mi_jax.reports import llc

    grids = {name: llc.parse_grid(getattr(args, name), name.replace("_", "-")) for name in ("epsilons", "gammas", "n_betas")}
    if any(v is not None for v in grids.values()) and not args.calibrate:
        raise ConfigError("--epsilons/--gammas/--n-betas set the --calibrate grid; add --calibrate")
    for line in llc.llc_run(Path(args.run_dir), _parse_sets(args.sets), args.calibrate, wandb=args.wandb,
                            progress=not args.quiet, **grids):
        print(line)
    return 0


def cmd_sae(args) -> int:
    from mi_jax.reports import sae

    sets = _parse_sets(args.sets)
    if args.hook:
        sets["hook"] = args.hook
    for line in sae.sae_run(Path(args.run_dir), sets, wandb=args.wandb, progress=not args.quiet,
                            export_to=args.export, step=args.step, member=args.member):
        print(line)
    return 0


def cmd_import(args) -> int:
    from mi_jax.config import ConfigError
    from mi_jax.interop.tl_import import import_run

    if args.sets and not args.preset:
        raise ConfigError("--set needs --preset NAME (the config the settings apply to)")
    cfg = _config(args.preset, args.sets) if args.preset else None
    series, cfg, out = import_run(args.src, Path(args.out), cfg, op=args.op)
    print(f"imported {len(series.steps)} checkpoints (steps {series.steps[0]}..{series.steps[-1]}) of {args.src} "
          f"as a {type(cfg).kind} run: {out}\n(analyse it with `mi-jax analyze {out}`)")
    return 0


def cmd_export(args) -> int:
    from mi_jax.interop.transformer_lens import export_trajectory
    from mi_jax.runs.trajectory import Trajectory

    paths = export_trajectory(Trajectory.load(Path(args.run_dir)), Path(args.out), member=args.member)
    print(f"wrote {len(paths)} TransformerLens state dicts to {args.out} ({paths[0].name} .. {paths[-1].name}); "
          "load one with `model.load_state_dict(safetensors.torch.load_file(path))`")
    return 0


def cmd_convert(args) -> int:
    from mi_jax.runs.trajectory import convert

    n = convert(Path(args.run_dir), dtype=args.dtype, compression=args.compression)
    print(f"converted {n} snapshots of {args.run_dir} to the zarr layout "
          f"({args.dtype or 'dtype as trained'}, compression {args.compression})")
    return 0


def cmd_demo(args) -> int:
    from mi_jax.demo import demo

    demo(args.out, wandb=args.wandb, progress=not args.quiet)
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mi-jax")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mi-jax", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"mi-jax {_version()}")
    parser.add_argument("--presets", action="append", default=[], metavar="DIR",
                        help="a folder of your own preset files (NAME.py defining PRESET); also $MI_JAX_PRESETS")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the presets").set_defaults(func=cmd_list)

    train = sub.add_parser("train", help="train a preset (or resume a run)")
    train.add_argument("preset", nargs="?")
    train.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    train.add_argument("--seeds", help="comma-separated seeds: train them as one vmapped ensemble")
    train.add_argument("--out", help="run dir (default checkpoints/PRESET)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue a killed run")
    train.add_argument("--init-from", dest="init_from", metavar="RUN_DIR[:STEP]",
                       help="fine-tune: start from that run's snapshot at STEP (default its last), optimiser fresh")
    train.add_argument("--init-members", dest="init_members", metavar="I,J,...",
                       help="with --init-from: the base's members that start this run's (one, or one per member; "
                            "default member i from member i)")
    train.add_argument("--overwrite", action="store_true", help="replace an existing run dir")
    train.set_defaults(func=cmd_train)

    swp = sub.add_parser("sweep", help="train a grid of settings x seeds as few vmapped programs as shapes allow")
    swp.add_argument("preset", nargs="?")
    swp.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2", help=GRID_HELP)
    swp.add_argument("--seeds", help="comma-separated seeds of every grid point")
    swp.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
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
                     help="a setting of mi_jax.analysis.llc_task.LLCSettings (repeatable), e.g. --set llc.epsilon=3e-4 "
                          "--set llc.n_chains=8 --set every=5")
    llc.add_argument("--calibrate", action="store_true", help="first a grid of sampler settings on 3 checkpoints")
    llc.add_argument("--epsilons", help="calibration grid (default: llc.epsilon x 0.1, 0.3, 1, 3, 10)")
    llc.add_argument("--gammas", help="calibration grid (default: llc.gamma x 0.1, 1, 10)")
    llc.add_argument("--n-betas", dest="n_betas", help="calibration grid (default: llc.n_beta)")
    llc.set_defaults(func=cmd_llc)

    sae = sub.add_parser("sae", help="an SAE for every checkpoint (and member) of a run at one hook point, "
                                      "with reconstruction, sparsity, spliced loss and feature recovery")
    sae.add_argument("run_dir")
    sae.add_argument("--hook", help="the hook point (default: the task's first, e.g. the final residual stream)")
    sae.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                     help="a setting of mi_jax.analysis.sae_task.SAESettings (repeatable), e.g. --set sae.k=8 "
                          "--set sae.d_sae=128 --set ks=2,4,8 --set every=5 --set crosscoder_checkpoints=8")
    sae.add_argument("--export", metavar="DIR", help="instead: the SAEs of one checkpoint in SAELens's format")
    sae.add_argument("--step", type=int, help="with --export: which checkpoint (default the last)")
    sae.add_argument("--member", type=int, default=0, help="with --export: which member (default 0)")
    sae.set_defaults(func=cmd_sae)

    imp = sub.add_parser("import", help="a TransformerLens checkpoint series as a mi_jax run dir")
    imp.add_argument("src", help="a .pth/.pt file (the Grokking demo's dict) or a folder of per-step files")
    imp.add_argument("--out", required=True, help="the run dir to write (absent or empty)")
    imp.add_argument("--preset", help="the config of the run (its model must fit the weights)")
    imp.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                     help="a value of --preset's config (repeatable), e.g. --set p=113")
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

    for p in (train, swp, analyze, llc, sae, demo):  # every command that trains or analyses
        p.add_argument("--wandb", default="offline", choices=["offline", "online", "off"],
                       help="log to wandb: offline (RUN_DIR/wandb, the default), online, or off")
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
    from mi_jax import presets, runtime
    from mi_jax.config import ConfigError
    from mi_jax.io import CheckpointError
    from mi_jax.training.failures import RunStopped
    from mi_jax.training.loop import TrainingDiverged

    runtime.configure()
    presets.USER_DIRS[:] = [Path(d) for d in args.presets]
    try:
        if hasattr(args, "distributed"):
            from mi_jax.training import distributed

            distributed.initialize(auto=args.distributed, coordinator=args.coordinator,
                                   num_processes=args.num_processes, process_id=args.process_id)
        with runtime.quiet(getattr(args, "quiet", False)):  # the bars of work below the command's own (tokenizing)
            return args.func(args)
    except (ConfigError, CheckpointError, TrainingDiverged, RunStopped) as e:
        # bad input, a bad checkpoint, a diverged loss, a full disk, a lost process: one line, exit 2
        print(f"mi-jax: error: {e}", file=sys.stderr)
        if isinstance(e, RunStopped):  # with several processes, JAX's shutdown would wait for the stopped ones
            from mi_jax.training import distributed

            distributed.leave(2)
        return 2
    except KeyboardInterrupt:
        print("mi-jax: interrupted; resume with `mi-jax train --resume RUN_DIR`", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
