"""Run a peer baseline (TransformerLens / eager PyTorch) in its own venv, side by side with mi_jax.

The venv is `/tmp/peer-tl`, built by `shared/peers/setup-peer-venvs.sh` when missing. A peer
script prints one JSON line last; `run_peer` returns it as a dict, or {"peer_error": why}.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

PEER_PY = Path("/tmp/peer-tl/bin/python")
SHARED_PEERS = Path(__file__).resolve().parent.parent.parent / "shared" / "peers"
OWN_PEERS = Path(__file__).resolve().parent / "peers"


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else "(no output)"


def run_peer(script: Path, args: list[str], timeout: int = 900) -> dict:
    if not PEER_PY.exists():
        setup = SHARED_PEERS / "setup-peer-venvs.sh"
        if not setup.exists():
            return {"peer_error": f"no {PEER_PY} and no {setup} to build it"}
        build = subprocess.run(["bash", str(setup)], capture_output=True, text=True)
        if build.returncode != 0 or not PEER_PY.exists():
            return {"peer_error": f"could not build {PEER_PY.parent.parent}: {_last_line(build.stderr)}"}
    if not script.exists():
        return {"peer_error": f"no peer script {script}"}
    out = subprocess.run([str(PEER_PY), str(script), *map(str, args)], capture_output=True, text=True,
                         timeout=timeout, cwd=str(PEER_PY.parent.parent))
    if out.returncode != 0:
        return {"peer_error": _last_line(out.stderr)}
    return json.loads(_last_line(out.stdout))
