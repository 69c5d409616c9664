"""`mi-jax analyze SWEEP_DIR`, after every program's own report (`analyze_run` of its run dir): each
member's summary measures drawn against the swept values.

Summary measures, from each member's metrics: the final value of every scalar metric,
`steps_to_generalise` and `steps_to_memorise`, the first evaluation step with test (train) accuracy
>= 0.99 (None when never: such cells are marked in the figures, not left blank), and the member's
`phase` in the sense of Liu et al. 2022 (`phase`); from its program's own report, any onset it
records (`steps_to_*`, `tokens_to_*`: a language run's `tokens_to_induction`). A sweep over two keys
also gets a phase diagram.
"""

from __future__ import annotations

import json

import numpy as np

from mi_jax.io.run_dir import ANALYSIS
from mi_jax.plots import sweep as plots

GENERALISED = 0.99
PHASES = ("comprehension", "grokking", "memorisation", "confusion")


def phase(steps_to_memorise: int | None, steps_to_generalise: int | None, final_train_acc: float = 1.0) -> str:
    """Liu et al. 2022's four phases, within the run's steps: *confusion*, the train set is not fit at
    the end (train accuracy < 0.99: never fit, or fit and then lost, as at a too large learning rate);
    *memorisation*, it is but the test set never was; *grokking*, both were, and generalising took
    more than twice as long as memorising (the test accuracy lags by at least the time to fit the
    train set); *comprehension*, both were, with a shorter lag."""
    if final_train_acc < GENERALISED or (steps_to_memorise is None and steps_to_generalise is None):
        return "confusion"
    if steps_to_generalise is None:
        return "memorisation"
    if steps_to_memorise is None:
        return "comprehension"
    return "grokking" if steps_to_generalise > 2 * steps_to_memorise else "comprehension"


def _first_at_least(values: np.ndarray, steps: np.ndarray) -> int | None:
    hit = np.flatnonzero(values >= GENERALISED)
    return int(steps[hit[0]]) if len(hit) else None


def summary_rows(sweep) -> list[dict]:
    """One row per member: its settings (the grid keys, seed, program) and its summary measures."""
    rows = []
    settings = iter(sweep.members)  # program by program, member by member: the order of the loops below
    for traj in sweep.trajectories:
        steps = np.asarray(traj.metrics["step"])
        for m in range(traj.n_members):
            row = dict(next(settings))
            for name, values in traj.metrics.items():
                values = np.asarray(values)
                if name != "step" and values.ndim == 2:  # [n_evals, member]: a scalar metric
                    row[f"final_{name}"] = float(values[-1, m])
            if "test_acc" in traj.metrics:
                row["steps_to_generalise"] = _first_at_least(np.asarray(traj.metrics["test_acc"])[:, m], steps)
            if "train_acc" in traj.metrics and "test_acc" in traj.metrics:
                row["steps_to_memorise"] = _first_at_least(np.asarray(traj.metrics["train_acc"])[:, m], steps)
                row["phase"] = phase(row["steps_to_memorise"], row["steps_to_generalise"], row["final_train_acc"])
            row.update(_onsets(traj, m))
            rows.append(row)
    return rows


def _onsets(traj, member: int) -> dict:
    """The `steps_to_*` and `tokens_to_*` entries (an onset, None when never) of the member in its program's
    own analysis summary (e.g. a language run's `tokens_to_induction`), where there is one."""
    path = traj.run_dir / ANALYSIS / f"{type(traj.config).kind}_summary.json"
    if not path.exists():
        return {}
    mine = json.loads(path.read_text())["members"][member]
    return {k: v for k, v in mine.items() if k.startswith(("steps_to_", "tokens_to_"))}


def report(sweep) -> list[str]:
    """Write a loaded `Sweep`'s summary and figures -> lines to print."""
    rows = summary_rows(sweep)
    out = sweep.sweep_dir / ANALYSIS
    out.mkdir(parents=True, exist_ok=True)
    path = out / "sweep_summary.json"
    path.write_text(json.dumps({"grid": sweep.grid, "members": rows}, indent=1))
    lines = [f"wrote {path} ({len(rows)} members)"]
    keys = list(sweep.grid)
    measures = [name for name in rows[0] if name.startswith(("final_", "steps_to_", "tokens_to_"))]
    for name in measures:
        lines.append(f"wrote {plots.measure_against_grid(rows, keys, name, out / f'sweep_{name}.png')}")
    if "phase" in rows[0] and len(keys) >= 2:
        lines.append(f"wrote {plots.phase_diagram(rows, keys[:2], PHASES, out / 'sweep_phase_diagram.png')}")
    return lines
