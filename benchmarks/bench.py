"""Speed and memory figures: `python benchmarks/bench.py [--only NAME] [--json]`.

Prints one JSON object a line, `{"name": NAME, ...figures}`. Each `benchmarks/bench_*.py`
defines `BENCHMARKS = {name: fn}`, fn() -> dict of figures; comparisons are measured side by side
in the same run, those against a peer (`tl_s`, `speedup_vs_transformer_lens`) in alternating rounds.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

from mi_jax.cli import use_cpu_cores

use_cpu_cores()  # the CPU devices `mi-jax` trains on (presets with train.data_parallel split over them)

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the bench files share `checkpoint_loops`, `chunk_timing`, `peer_runs`


def discover() -> dict:
    found = {}
    for path in sorted(HERE.glob("bench_*.py")):
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        found.update(module.BENCHMARKS)
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", help="run only this benchmark (repeatable)")
    parser.add_argument("--json", action="store_true", help="JSON lines only (the default output is JSON too)")
    parser.add_argument("--list", action="store_true", help="list benchmark names")
    args = parser.parse_args(argv)
    benchmarks = discover()
    if args.list:
        print("\n".join(benchmarks))
        return 0
    names = args.only or list(benchmarks)
    unknown = [n for n in names if n not in benchmarks]
    if unknown:
        print(f"bench.py: unknown benchmark {unknown[0]!r} (known: {', '.join(benchmarks)})", file=sys.stderr)
        return 2
    for name in names:
        t0 = time.perf_counter()
        row = {"name": name, **benchmarks[name]()}
        if not args.json:
            row["bench_wall_s"] = round(time.perf_counter() - t0, 2)
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
