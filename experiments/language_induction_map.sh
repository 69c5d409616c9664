#!/usr/bin/env bash
# Tokens to induction against the learning rate: language_attn_2l_induction with every learning rate
# in LRS and every seed in SEEDS as ONE vmapped program, to STEPS steps (8,192 tokens a step), then
# each member's onset of copying (`steps_to_induction`, `tokens_to_induction`) against the grid
# (sweep_summary.json, sweep_tokens_to_induction.png). An accelerator's job: 24 members to step
# 24,000 would take about a day on 2 CPU cores. A sweep killed by TIMEOUT (seconds) is analysed as far
# as its snapshots go. Results: experiments/results/language.md.
#     bash experiments/language_induction_map.sh      # DIR=checkpoints/language, LRS=1e-3,3e-3,1e-2, SEEDS=0,...,7
#     EXTRA="--set data.source=PATH" bash experiments/language_induction_map.sh   # another corpus
set -uo pipefail
MJ=${MJ:-mi-jax}
DIR=${DIR:-checkpoints/language}
LRS=${LRS:-1e-3,3e-3,1e-2}
SEEDS=${SEEDS:-0,1,2,3,4,5,6,7}
STEPS=${STEPS:-24000}
timeout "${TIMEOUT:-0}" $MJ sweep language_attn_2l_induction --grid train.lr="$LRS" --seeds "$SEEDS" \
    --set train.steps="$STEPS" ${EXTRA:-} --out "$DIR/induction_map_lr" --overwrite --wandb off --quiet
echo "sweep exit $? after ${SECONDS}s"
$MJ analyze "$DIR/induction_map_lr" --wandb off --quiet | grep -i "seed\|induction\|lr"
