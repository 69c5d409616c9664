"""Run a peer baseline (TransformerLens / eager PyTorch / devinterp) in its own venv, side by side with mi_jax.

The peer scripts are in `benchmarks/peers/`; all but devinterp's run in `/tmp/peer-tl`, built by
`benchmarks/peers/setup-peer-venvs.sh` when missing. A peer script prints one JSON line last;
`run_peer` returns it as a dict, or {"peer_error": why}. `ServedPeer` keeps a peer script that has a
`--serve` mode running, so its timings can alternate with ours (paired, so the machine's drift
cancels in the ratio); `paired_rounds` alternates one of our timings with one whole run of a peer
script. `setup_devinterp` builds devinterp 2.0.1's venv, `/tmp/peer-di`. `peer_versions` reads the
package versions of a peer's venv, for the results file.

    python benchmarks/peer_runs.py     # build both venvs (once) and print their versions
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np

PEER_PY = Path("/tmp/peer-tl/bin/python")
PEER_SCRIPTS = Path(__file__).resolve().parent / "peers"


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else "(no output)"


def _peer_python() -> str | None:
    """None when the peer venv exists (built now if missing), else why it does not."""
    if PEER_PY.exists():
        return None
    setup = PEER_SCRIPTS / "setup-peer-venvs.sh"
    if not setup.exists():
        return f"no {PEER_PY} and no {setup} to build it"
    build = subprocess.run(["bash", str(setup)], capture_output=True, text=True)
    if build.returncode != 0 or not PEER_PY.exists():
        return f"could not build the TransformerLens venv ({setup.name}): {_last_line(build.stderr)}"
    return None


# devinterp 2.0.1 needs zarr >= 3.1 and an xarray that reads its dtypes (>= 2025.7, which needs pandas >= 2.1);
# TransformerLens 2.18 in /tmp/peer-tl needs pandas < 2.1: so devinterp gets a venv of its own, with the
# same torch, and its peer builds the grokking model in plain torch (benchmarks/peers/devinterp_llc.py)
DEVINTERP_PY = Path("/tmp/peer-di/bin/python")
DEVINTERP_PINS = ["torch==2.13.0", "devinterp==2.0.1"]
DEVINTERP_CHECK = "import importlib.metadata as m, torch; from devinterp.slt.llc import llc; " \
                  "assert m.version('devinterp') == '2.0.1' and torch.__version__.split('+')[0] == '2.13.0'"


def setup_devinterp() -> str | None:
    """Build /tmp/peer-di (torch 2.13.0 CPU + devinterp 2.0.1) once; a no-op when it imports. None, or why not."""
    if DEVINTERP_PY.exists() and subprocess.run([str(DEVINTERP_PY), "-c", DEVINTERP_CHECK]).returncode == 0:
        return None
    venv = DEVINTERP_PY.parent.parent
    pip = [str(DEVINTERP_PY), "-m", "pip", "install", "-q"]
    for cmd in (["python3", "-m", "venv", str(venv)], pip + ["--upgrade", "pip"], pip + DEVINTERP_PINS,
                [str(DEVINTERP_PY), "-c", DEVINTERP_CHECK]):
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            return f"could not build the devinterp venv: {_last_line(done.stderr)}"
    return None


# SAELens 6 wants transformer-lens 3, so it too has a venv of its own (setup-peer-venvs.sh builds it)
SAELENS_PY = Path("/tmp/peer-sae/bin/python")


# what a benchmark module's PEERS names: {peer: (the venv's python, the packages whose versions a row records)}
PEER_VENVS = {
    "transformer_lens": (PEER_PY, ("transformer-lens", "torch")),
    "torch": (PEER_PY, ("torch",)),
    "devinterp": (DEVINTERP_PY, ("devinterp", "torch")),
    "sae_lens": (SAELENS_PY, ("sae-lens", "torch")),
}


_VERSIONS = """
import importlib.metadata as m, json, sys
def version(package):
    try:
        return m.version(package)
    except m.PackageNotFoundError:
        return None
print(json.dumps({package: version(package) for package in sys.argv[1:]}))
"""


def peer_versions(peer: str) -> dict[str, str | None]:
    """{package: version} of a peer's venv (PEER_VENVS), read with importlib.metadata in that venv;
    None for a package it lacks, or for all when the venv is not there."""
    python, packages = PEER_VENVS[peer]
    try:
        out = subprocess.run([str(python), "-c", _VERSIONS, *packages], capture_output=True, text=True, timeout=60)
        return json.loads(out.stdout)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return dict.fromkeys(packages)


def _unusable(script: Path) -> str | None:
    """None when the peer venv and `script` are there to run, else why not."""
    return _peer_python() or (None if script.exists() else f"no peer script {script}")


def run_peer(script: Path, args: list[str], timeout: int = 900, python: Path = PEER_PY) -> dict:
    why = _unusable(script) if python == PEER_PY else (
        None if python.exists() else f"no {python}: build it with bash {PEER_SCRIPTS / 'setup-peer-venvs.sh'}")
    if why:
        return {"peer_error": why}
    out = subprocess.run([str(python), str(script), *map(str, args)], capture_output=True, text=True,
                         timeout=timeout, cwd=str(python.parent.parent))
    if out.returncode != 0:
        return {"peer_error": _last_line(out.stderr)}
    return json.loads(_last_line(out.stdout))


class ServedPeer:
    """A peer script run with `--serve`: it warms up, prints one line, then for every line `N` on
    its stdin runs N more steps and prints {"ms_per_step": ...}. `error` says why it is unusable."""

    def __init__(self, script: Path, args: list[str], python: Path | None = None):
        """python: the venv's interpreter (default the TransformerLens venv's, built if missing)."""
        self.proc, self.error = None, _unusable(script) if python is None else (
            None if python.exists() and script.exists() else f"no {python} or no {script}")
        if self.error:
            return
        python = python or PEER_PY
        self.proc = subprocess.Popen([str(python), str(script), *map(str, args), "--serve"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     cwd=str(python.parent.parent))
        self._reply()  # warmed up

    def _reply(self) -> dict | None:
        line = self.proc.stdout.readline()
        if not line:
            self.error = _last_line(self.proc.stderr.read())
            return None
        return json.loads(line)

    def ask(self, n: int) -> dict | None:
        """Send `n`, return the peer's reply (None once it has failed)."""
        if self.error:
            return None
        self.proc.stdin.write(f"{n}\n")
        self.proc.stdin.flush()
        return self._reply()

    def ms_per_step(self, steps: int) -> float | None:
        reply = self.ask(steps)
        return reply["ms_per_step"] if reply else None

    def close(self) -> None:
        if self.proc is not None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


def paired_rounds(ours: Callable[[], dict], script: Path, args: list, rounds: int, peer_key: str = "s_total",
                  python: Path = PEER_PY) -> dict:
    """Alternate `ours()` ({name: seconds}) with one run of the peer script (in `python`'s venv), `rounds` times.

    -> {"ours": {name: [seconds per round]}, "peer": [seconds per round], "peer_rows": [the peer's JSON per
    round], "ratios": {name: [peer / ours per round]}}, or with "peer_error" (ours still timed every round)
    when the peer cannot run.
    Per-round ratios, since this machine's speed drifts between rounds and each pair shares one state.
    """
    mine, peer, rows, error = {}, [], [], None
    for _ in range(rounds):
        for name, seconds in ours().items():
            mine.setdefault(name, []).append(seconds)
        if error is None:
            row = run_peer(script, args, python=python)
            error = row.get("peer_error")
            if error is None:
                peer.append(float(row[peer_key]))
                rows.append(row)
    out = {"ours": mine, "peer": peer, "peer_rows": rows}
    if error is not None:
        return {**out, "peer_error": error}
    return {**out, "ratios": {name: list(np.array(peer) / np.array(ts)) for name, ts in mine.items()}}


def paired_figures(paired: dict, names: dict[str, str]) -> dict:
    """Row figures from `paired_rounds`: each of ours as its median seconds under names[name], the peer's
    median `tl_s`, and for each name its median per-round ratio (`speedup_vs_transformer_lens` for the
    first name, `speedup_vs_transformer_lens_<name>` for the rest) and the first one's range."""
    med = lambda xs: round(float(np.median(xs)), 3)  # noqa: E731
    row = {label: med(paired["ours"][name]) for name, label in names.items()}
    row["rounds"] = len(next(iter(paired["ours"].values())))
    if "peer_error" in paired:
        return {**row, "peer_error": paired["peer_error"]}
    row["tl_s"] = med(paired["peer"])
    for i, name in enumerate(names):
        ratios = paired["ratios"][name]
        row["speedup_vs_transformer_lens" + ("" if i == 0 else f"_{name}")] = round(float(np.median(ratios)), 2)
        if i == 0:
            row["speedup_range"] = [round(float(min(ratios)), 2), round(float(max(ratios)), 2)]
    return row


if __name__ == "__main__":
    problems = [why for why in (_peer_python(), setup_devinterp()) if why]
    for name in PEER_VENVS:
        print(name, json.dumps(peer_versions(name)))
    sys.exit("\n".join(f"peer_runs.py: {why}" for why in problems) or 0)
