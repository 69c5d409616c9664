#!/usr/bin/env bash
# Olsson et al.'s loss bump on code: the 1-layer control of the learning-rate map (lr 1e-2, 4 seeds,
# 6,000 steps) and a 2-layer run at lr 1e-2 with 512 validation windows and an evaluation every 100
# steps (4 seeds, 3,200 steps), each analysed (~17 and ~25 min when run side by side on 2 cores); then the bump against each
# member's onset of copying, over the learning-rate map (experiments/language_induction_map.sh, run first)
# and the control; last, the LLC of the 4 lr-1e-2 seeds at every 4th checkpoint (~35 min on 2 cores).
# Results: experiments/results/language.md.
#     bash experiments/language_bump.sh      # DIR=checkpoints/language
#     EXTRA="--set data.source=PATH" bash experiments/language_bump.sh   # another corpus
set -euo pipefail
MJ=${MJ:-mi-jax}
DIR=${DIR:-checkpoints/language}
$MJ train language_attn_2l_induction --set model.n_layers=1 --set train.lr=1e-2 --set train.steps=6000 \
    --seeds 0,1,2,3 ${EXTRA:-} --out "$DIR/attn_1l_lr1e-2" --overwrite --wandb off --quiet
$MJ analyze "$DIR/attn_1l_lr1e-2" --wandb off --quiet | grep seed
$MJ train language_attn_2l_induction --set train.lr=1e-2 --set train.steps=3200 --set n_eval=512 \
    --set train.eval_every=100 --set train.ckpt_every=100 --seeds 0,1,2,3 ${EXTRA:-} \
    --out "$DIR/attn_2l_lr1e-2" --overwrite --wandb off --quiet
$MJ analyze "$DIR/attn_2l_lr1e-2" --wandb off --quiet | grep seed
python experiments/language_bump.py "$DIR"
$MJ llc "$DIR/attn_2l_lr1e-2" --set every=4 --wandb off --quiet
python experiments/llc_figures.py language_seeds "$DIR/attn_2l_lr1e-2" experiments/results/language_llc_seeds.png
