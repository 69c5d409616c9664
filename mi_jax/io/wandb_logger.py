"""wandb logging (offline by default: no account or network needed), at the edge of the loop."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np

from mi_jax.config import check, to_dict
from mi_jax.io.run_dir import member_key, members_of

MODES = ("offline", "online", "off")


class WandbLogger:
    """Logs metric rows to wandb; each member's values of a run with several go under `seed{k}/name`
    (with their mean under `name`)."""

    def __init__(self, run_dir: Path, cfg, mode: str = "offline", project: str = "mi_jax",
                 members: list[dict] | None = None, group: str | None = None):
        check(mode in MODES, f"--wandb must be one of {', '.join(MODES)}, got {mode!r}")
        self.run = None
        if mode == "off":
            return
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        run_dir = Path(run_dir)
        id_file = run_dir / "wandb_id.txt"
        run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:8]
        id_file.write_text(run_id)
        self.members = [member_key(member) for member in (members or members_of(cfg))]
        self.run = wandb.init(
            project=project, name=run_dir.name, id=run_id, resume="allow", dir=str(run_dir),
            mode=mode, config={**to_dict(cfg), **({"members": members} if members else {})}, group=group,
        )

    def log(self, rows: list[dict], **extra) -> None:
        if self.run is None:
            return
        for i, row in enumerate(rows):
            out = {}
            for name, value in row.items():
                if name == "step":
                    continue
                value = np.asarray(value, dtype=float)
                if value.ndim and len(self.members) > 1:  # rows of several members: [member, ...]
                    for member, v in zip(self.members, value):
                        out[f"{member}/{name}"] = float(np.mean(v))
                out[name] = float(value.mean())
            if i == len(rows) - 1:
                out.update(extra)
            self.run.log(out, step=int(row["step"]))

    def log_series(self, steps, series: dict[str, np.ndarray]) -> None:
        """Log analysis results against training steps: series {name: [time, member, ...]}, each
        logged as its mean over everything but time."""
        if self.run is None:
            return
        self.run.define_metric("analysis/*", step_metric="analysis/step")
        for i, step in enumerate(steps):
            row = {f"analysis/{k}": float(np.mean(v[i])) for k, v in series.items()}
            self.run.log({"analysis/step": int(step), **row})

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
