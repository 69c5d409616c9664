#!/usr/bin/env bash
# The stages of a small language model on the standard library's source: the 2-layer attention-only
# preset (3 seeds, one program), its 1-layer control and the 1-layer model with an MLP, each analysed
# over every checkpoint (n-gram distances, the gain from context, previous-token and induction heads,
# the ICL score, the loss bump); then the hour-long preset at which induction heads form on 2 cores,
# its 4 seeds against the 1-layer control, and the LLC over one of them.
# Results: experiments/results/language.md.
#     bash experiments/language_stages.sh       # DIR=checkpoints/language
set -euo pipefail
MJ=${MJ:-mi-jax}
DIR=${DIR:-checkpoints/language}
$MJ train language_attn_2l --seeds 0,1,2 --out "$DIR/attn_2l" --overwrite --wandb off --quiet
$MJ analyze "$DIR/attn_2l" --wandb off --quiet | grep seed
$MJ train language_attn_1l --out "$DIR/attn_1l" --overwrite --wandb off --quiet
$MJ analyze "$DIR/attn_1l" --wandb off --quiet | grep seed
$MJ train language_gelu_1l --out "$DIR/gelu_1l" --overwrite --wandb off --quiet
$MJ analyze "$DIR/gelu_1l" --wandb off --quiet | grep seed
python experiments/language_one_layer.py "$DIR"
$MJ train language_attn_2l_induction --out "$DIR/attn_2l_induction" --overwrite --wandb off --quiet   # ~1 hour
$MJ analyze "$DIR/attn_2l_induction" --wandb off --quiet | grep seed
# application (a): 4 seeds as one program (2 hours on 2 cores) to step 14,000 (115M tokens), and
# the same model with one layer; then (b): the LLC of one seed over every 5th checkpoint
$MJ train language_attn_2l_induction --seeds 0,1,2,3 --set train.steps=14000 --out "$DIR/attn_2l_induction_seeds" \
    --overwrite --wandb off --quiet
$MJ analyze "$DIR/attn_2l_induction_seeds" --wandb off --quiet | grep seed
$MJ train language_attn_2l_induction --set model.n_layers=1 --set train.steps=14000 --out "$DIR/attn_1l_induction" \
    --overwrite --wandb off --quiet
$MJ analyze "$DIR/attn_1l_induction" --wandb off --quiet | grep seed
python experiments/language_induction_seeds.py "$DIR"
$MJ llc "$DIR/attn_2l_induction_seeds" --set member=0 --set every=5 --wandb off --quiet
python experiments/llc_figures.py language "$DIR/attn_2l_induction_seeds" experiments/results/language_induction_llc.png
