"""Speed and memory figures: `python benchmarks/bench.py [--only NAME] [--json] [--no-record]`.

Prints one JSON object a line, `{"name": NAME, ...figures}`, and appends each as a row, with the
date, commit, cores, load and versions, to `experiments/results/benchmarks.jsonl` (`record.py`;
`--no-record` for trial runs); `python benchmarks/render.py` then writes the page from it. Each
`benchmarks/bench_*.py` defines `BENCHMARKS = {name: fn}`, fn() -> dict of figures, `TARGETS`
(what each is judged by, see `render.py`) and, where a benchmark runs a peer, `PEERS = {name: peer}`
(`peer_runs.PEER_VENVS`). Comparisons are measured side by side in the same run, those against a
peer (`tl_s`, `speedup_vs_transformer_lens`) in alternating rounds.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import record
from peer_runs import peer_versions

import jax

from mi_jax import runtime

runtime.configure(compile_cache=False)  # the CPU devices `mi-jax` runs with; compile times measured, not cached

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the bench files share `checkpoint_loops`, `chunk_timing`, `peer_runs`


def discover() -> tuple[dict, dict]:
    """({name: fn} of every bench file, {name: peer} of those that run a peer)."""
    found, peers = {}, {}
    for path in sorted(HERE.glob("bench_*.py")):
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        found.update(module.BENCHMARKS)
        peers.update(getattr(module, "PEERS", {}))
    return found, peers


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", help="run only this benchmark (repeatable)")
    parser.add_argument("--json", action="store_true", help="JSON lines only (the default output is JSON too)")
    parser.add_argument("--list", action="store_true", help="list benchmark names")
    parser.add_argument("--no-record", action="store_true", help="do not append the rows to the results file")
    parser.add_argument("--record-to", type=Path, default=record.RESULTS, metavar="PATH",
                        help="the results file to append to (default: %(default)s)")
    parser.add_argument("--quality", metavar="WHY", help="mark the rows as not counting, e.g. 'shared cores'")
    parser.add_argument("--note", help="a short note for the recorded rows")
    args = parser.parse_args(argv)
    benchmarks, peers = discover()
    if args.list:
        print("\n".join(benchmarks))
        return 0
    names = args.only or list(benchmarks)
    unknown = [n for n in names if n not in benchmarks]
    if unknown:
        print(f"bench.py: unknown benchmark {unknown[0]!r} (known: {', '.join(benchmarks)})", file=sys.stderr)
        return 2
    if not args.no_record:
        run = record.run_info(device=jax.devices()[0].device_kind)  # before any row: appending dirties no tree
    for name in names:
        date, load = record.now(), record.load()
        t0 = time.perf_counter()
        figures = benchmarks[name]()
        row = {"name": name, **figures}
        if not args.json:
            row["bench_wall_s"] = round(time.perf_counter() - t0, 2)
        print(json.dumps(row), flush=True)
        if not args.no_record:
            peer = peer_versions(peers[name]) if name in peers else None
            record.append(args.record_to, record.make_row(name, figures, run, date, load, peer=peer,
                                                          quality=args.quality, note=args.note))
    return 0


if __name__ == "__main__":
    sys.exit(main())
