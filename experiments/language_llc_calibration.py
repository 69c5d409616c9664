"""Is the language kind's default SGLD setting (epsilon 1e-3, gamma 100) stable? `mi-jax llc --calibrate`'s grid
without the LLC over every checkpoint after it: `reports.llc.calibration_report` on one member of a run at
its first, middle and last checkpoints (epsilon x 0.1-10, gamma x 0.1-10 around the kind's defaults, each
setting's chains as `mi-jax llc` draws them). Writes RUN_DIR/analysis/llc_calibration.json and .png and
prints the stable settings and each setting's LLC at the last checkpoint.

    python experiments/language_llc_calibration.py checkpoints/language/attn_2l_lr1e-2 [MEMBER]
"""

import sys
import time
from pathlib import Path

from mi_jax.analysis import llc_task
from mi_jax.reports import llc as llc_report
from mi_jax.reports import opened
from mi_jax.tasks import make_task


def main(run_dir: Path, member: int) -> None:
    with opened(run_dir) as (traj, out_dir, lines):
        settings = llc_task.settings_for(make_task(traj.config), {"member": str(member)})
        traj = traj.select_members([member])
        start = time.perf_counter()
        lines += llc_report.calibration_report(traj, out_dir, settings)  # `mi-jax llc --calibrate`'s default grid
        lines.append(f"{time.perf_counter() - start:.0f} s")
    print("\n".join(lines))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 0)
