#!/usr/bin/env bash
# The stages of a small language model on the standard library's source: the 2-layer attention-only
# preset (3 seeds, one program), its 1-layer control and the 1-layer model with an MLP, each analysed
# over every checkpoint (n-gram distances, the gain from context, previous-token and induction heads,
# the ICL score, the loss bump); then the hour-long preset at which induction heads form on 2 cores,
# and the LLC over it.
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
$MJ llc "$DIR/attn_2l_induction" --set every=3 --wandb off --quiet
