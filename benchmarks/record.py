"""The benchmark results file, `experiments/results/benchmarks.jsonl`: one row a line, appended by
`bench.py` after each benchmark (`--no-record` for trial runs), read by `render.py`.

A row is one run of one benchmark:
    name                          the benchmark (`bench.py --list`)
    date                          when it started, ISO 8601 in UTC
    commit, dirty                 `git rev-parse --short HEAD`, and whether tracked files differed from it
                                  (the results file aside); null where there is no git checkout
    cores                         os.cpu_count()
    device                        jax's first device kind ("cpu", "NVIDIA H200")
    loadavg_start, loadavg_end    the 1-minute load average before and after
    jax, jaxlib                   their versions
    peer                          {package: version} of the peer venv, for a benchmark whose module declares
                                  one in PEERS (peer_runs.PEER_VENVS), else null
    figures                       what the benchmark returned
    quality                       null, or why the row does not count (e.g. "shared cores"): such a row
                                  shows in its benchmark's history only, not in the current table
    note                          null, or a short remark
Rows converted from the earlier hand-written page carry the commit that wrote each figure there (or
the commit measured, where it is known), the load average as the text that page gave ("8-12"), and
null for what it did not give.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "experiments" / "results" / "benchmarks.jsonl"
FIELDS = ("name", "date", "commit", "dirty", "cores", "device", "loadavg_start", "loadavg_end", "jax", "jaxlib",
          "peer", "figures", "quality", "note")


def _git(*args: str) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None


def checkout() -> dict:
    """{"commit", "dirty"} of the repository, both None outside a git checkout."""
    head = _git("rev-parse", "--short", "HEAD")
    if head is None or head.returncode != 0:
        return {"commit": None, "dirty": None}
    # the results file aside: rows appended since the last commit do not change what was measured
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".",
                  f":(exclude){RESULTS.relative_to(ROOT).as_posix()}")
    return {"commit": head.stdout.strip(), "dirty": None if status is None else bool(status.stdout.strip())}


def run_info(device: str) -> dict:
    """What every row of one `bench.py` run shares (taken once, before any row is appended)."""
    return {**checkout(), "cores": os.cpu_count(), "device": device,
            "jax": importlib.metadata.version("jax"), "jaxlib": importlib.metadata.version("jaxlib")}


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def load() -> float:
    return round(os.getloadavg()[0], 2)


def make_row(name: str, figures: dict, run: dict, date: str, loadavg_start: float, peer: dict | None = None,
             quality: str | None = None, note: str | None = None) -> dict:
    """A row of the results file (see the module docstring), the load average at its end read now."""
    row = {"name": name, "date": date, **run, "loadavg_start": loadavg_start, "loadavg_end": load(),
           "peer": peer, "figures": figures, "quality": quality, "note": note}
    return {field: row[field] for field in FIELDS}


def append(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def read(path: Path = RESULTS) -> list[dict]:
    """Every row, in the order they were appended."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
