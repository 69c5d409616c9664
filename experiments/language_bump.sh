#!/usr/bin/env bash
# Olsson et al.'s loss bump on code: the 1-layer control of the learning-rate map (lr 1e-2, 4 seeds,
# 6,000 steps) and the preset language_attn_2l_bump (2 layers at lr 1e-2, 512 validation windows evaluated
# every 100 steps, 3,200 steps; 4 seeds), each analysed (~17 and ~25 min when run side by side on 2
# cores); then the bump against each member's onset of copying, over the learning-rate map
# (experiments/language_induction_map.sh, run first) and the control; last, the LLC of the 4 lr-1e-2
# seeds at every 4th checkpoint (~35 min on 2 cores), and its calibration.
# Results: experiments/results/language.md.
#     bash experiments/language_bump.sh      # DIR=checkpoints/language
#     EXTRA="--set data.source=PATH" bash experiments/language_bump.sh   # another corpus
set -euo pipefail
MJ=${MJ:-mi-jax}
DIR=${DIR:-checkpoints/language}
$MJ train language_attn_2l_induction --set model.n_layers=1 --set train.lr=1e-2 --set train.steps=6000 \
    --seeds 0,1,2,3 ${EXTRA:-} --out "$DIR/attn_1l_lr1e-2" --overwrite --wandb off --quiet
$MJ analyze "$DIR/attn_1l_lr1e-2" --wandb off --quiet | grep seed
$MJ train language_attn_2l_bump --seeds 0,1,2,3 ${EXTRA:-} --out "$DIR/attn_2l_lr1e-2" --overwrite --wandb off --quiet
$MJ analyze "$DIR/attn_2l_lr1e-2" --wandb off --quiet | grep seed
python experiments/language_bump.py "$DIR"
$MJ llc "$DIR/attn_2l_lr1e-2" --set every=4 --wandb off --quiet
python experiments/llc_figures.py language_seeds "$DIR/attn_2l_lr1e-2" experiments/results/language_llc_seeds.png
# the sampler's grid on seed 0 (~13 min), then the LLC of every seed at steps 0, 1,600 and 3,200 at
# gamma 1000, stable at all three (in a copy of the run: its analysis/llc.npz keeps the default's)
python experiments/language_llc_calibration.py "$DIR/attn_2l_lr1e-2" 0
rm -rf "$DIR/attn_2l_lr1e-2_gamma1000" && cp -r "$DIR/attn_2l_lr1e-2" "$DIR/attn_2l_lr1e-2_gamma1000"
$MJ llc "$DIR/attn_2l_lr1e-2_gamma1000" --set every=16 --set llc.gamma=1000 --wandb off --quiet
