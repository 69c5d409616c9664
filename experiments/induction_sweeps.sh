#!/usr/bin/env bash
# The induction phase change across learning rates (and warm-ups): does its step move, and is the
# circuit (previous-token head -> induction head, their K-composition) the same? Each sweep trains
# induction_2l as ONE vmapped program; `mi-jax analyze` finds each member's heads and phase change.
# Results: experiments/results/induction_sweeps.md.
#     bash experiments/induction_sweeps.sh       # DIR=checkpoints/induction_sweeps
set -euo pipefail
MJ=${MJ:-mi-jax}
DIR=${DIR:-checkpoints/induction_sweeps}
LRS=${LRS:-5e-4,1e-3,2e-3,4e-3}
WARMUPS=${WARMUPS:-0,100,400,1000}
common=(--set train.steps=2000 --wandb off --quiet --overwrite)
$MJ sweep induction_2l --grid "train.lr=$LRS" --seeds 0 --one-program "${common[@]}" --out "$DIR/lr"
$MJ analyze "$DIR/lr" --wandb off | tail -4
$MJ sweep induction_2l --grid "train.warmup_steps=$WARMUPS" --seeds 0 --one-program "${common[@]}" --out "$DIR/warmup"
$MJ analyze "$DIR/warmup" --wandb off | tail -4
