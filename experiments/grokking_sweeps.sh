#!/usr/bin/env bash
# The grokking phase diagram over learning rate x weight decay (Liu et al. 2022: comprehension,
# grokking, memorisation, confusion) and the steps to generalise against the train fraction
# (Power et al. 2022), as two sweeps of grokking_p31 (a model sized for 2 CPU cores); then bfloat16
# against float32. Each sweep is one `mi-jax sweep`; each trains as ONE vmapped program (50 members:
# 5 x 5 cells x 2 seeds; 24: 8 fractions x 3 seeds, each member's split a mask over all pairs).
# Results: experiments/results/grokking_sweeps.md.
#     bash experiments/grokking_sweeps.sh        # DIR=checkpoints/grokking_sweeps PRESET=grokking_p31
# STEPS, CKPT: the preset's own unless set. COPY_TO=DIR copies each sweep's summary and figures there.
set -euo pipefail
MJ=${MJ:-mi-jax}
DIR=${DIR:-checkpoints/grokking_sweeps}
PRESET=${PRESET:-grokking_p31}
LRS=${LRS:-3e-4,1e-3,3e-3,1e-2,3e-2}
WDS=${WDS:-0,0.1,0.3,1,3}
FRACS=${FRACS:-0.25,0.3,0.4,0.5,0.6,0.7,0.8,0.9}
common=(--wandb off --quiet --overwrite)
[ -n "${STEPS:-}" ] && common+=(--set "train.steps=$STEPS")
[ -n "${CKPT:-}" ] && common+=(--set "train.ckpt_every=$CKPT")
keep() {  # keep(SWEEP, FILE...): copy a sweep's results to $COPY_TO as SWEEP_FILE
  [ -n "${COPY_TO:-}" ] || return 0
  local sweep=$1; shift
  for f in "$@"; do [ -f "$DIR/$sweep/$f" ] && cp "$DIR/$sweep/$f" "$COPY_TO/${sweep}_$(basename "$f")"; done; return 0
}
$MJ sweep "$PRESET" --grid "train.lr=$LRS" --grid "train.weight_decay=$WDS" \
  --seeds 0,1 --one-program "${common[@]}" --out "$DIR/lr_wd"
$MJ analyze "$DIR/lr_wd" --wandb off | tail -8
keep lr_wd analysis/sweep_summary.json analysis/sweep_phase_diagram.png analysis/sweep_steps_to_generalise.png
# at lr 1e-2 (weight decay 1), where the phase diagram groks fastest; the note also quotes lr 3e-3
# (FRACS=0.3,0.4,0.5,0.6,0.8 with --set train.lr=3e-3 and seeds 0,1)
$MJ sweep "$PRESET" --grid "train_frac=$FRACS" --seeds 0,1,2 --one-program --set train.lr=1e-2 "${common[@]}" \
  --out "$DIR/train_frac_lr1e-2"
$MJ analyze "$DIR/train_frac_lr1e-2" --wandb off | tail -8
keep train_frac_lr1e-2 analysis/sweep_summary.json analysis/sweep_steps_to_generalise.png
# bfloat16 forward and backward passes (float32 parameters) against float32: does it still grok, and when?
$MJ sweep "$PRESET" --grid train.compute_dtype=float32,bfloat16 --seeds 0,1,2 "${common[@]}" --out "$DIR/dtype"
$MJ analyze "$DIR/dtype" --wandb off | tail -4
keep dtype analysis/sweep_summary.json
