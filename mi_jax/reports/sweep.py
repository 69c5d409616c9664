"""`mi-jax analyze SWEEP_DIR`: every program's own report (its kind's measures for every member in one
call), then each member's summary measures drawn against the swept values.

Summary measures, from each member's metrics: the final value of every scalar metric, and
`steps_to_generalise`, the first evaluation step with test accuracy >= 0.99 (None when never: such
cells are marked in the figures, not left blank).
"""

from __future__ import annotations

import json

import numpy as np

from mi_jax.io.results import ANALYSIS

GENERALISED = 0.99


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
                hit = np.flatnonzero(np.asarray(traj.metrics["test_acc"])[:, m] >= GENERALISED)
                row["steps_to_generalise"] = int(steps[hit[0]]) if len(hit) else None
            rows.append(row)
    return rows


def report(sweep, wandb: str = "offline") -> list[str]:
    """Analyse every program of a loaded `Sweep`, then write the sweep's summary and figures."""
    from mi_jax.plots import sweep as plots
    from mi_jax.reports import analyze_run

    lines = []
    for traj in sweep.trajectories:
        lines += analyze_run(traj.run_dir, wandb=wandb)
    rows = summary_rows(sweep)
    out = sweep.sweep_dir / ANALYSIS
    out.mkdir(parents=True, exist_ok=True)
    path = out / "sweep_summary.json"
    path.write_text(json.dumps({"grid": sweep.grid, "members": rows}, indent=1))
    lines.append(f"wrote {path} ({len(rows)} members)")
    keys = list(sweep.grid)
    measures = [name for name in rows[0] if name.startswith("final_") or name == "steps_to_generalise"]
    for name in measures:
        lines.append(f"wrote {plots.measure_against_grid(rows, keys, name, out / f'sweep_{name}.png')}")
    return lines
