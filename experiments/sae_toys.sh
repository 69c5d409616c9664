#!/usr/bin/env bash
# SAEs over training on the toy models whose features are known: TMS 5 -> 2 (16 instances, the geometry
# jumps of superposition.md) and the AND model's pre-activations and neurons (k = 1, 2, 3 in one program).
# Results: experiments/results/sae.md.
#     bash experiments/sae_toys.sh       # DIR=checkpoints/sae
set -euo pipefail
MJ=${MJ:-mi-jax}
DIR=${DIR:-checkpoints/sae}
$MJ train tms_dynamics --out "$DIR/tms_dynamics" --overwrite --wandb off --quiet
$MJ analyze "$DIR/tms_dynamics" --wandb off --quiet | grep -i "jump\|instance" | head -20
$MJ sae "$DIR/tms_dynamics" --set sae.d_sae=10 --set sae.k=1 --set sae.steps=1000 --set every=2 \
    --set inputs_per_step=256 --wandb off --quiet
$MJ train and_superposition --out "$DIR/and" --overwrite --wandb off --quiet
$MJ sae "$DIR/and" --hook hidden_pre --set sae.d_sae=40 --set sae.k=2 --set sae.steps=2000 --set sae.lr=3e-3 \
    --wandb off --quiet
$MJ sae "$DIR/and" --hook hidden --set sae.d_sae=380 --set ks=1,2,3 --set sae.steps=2000 --set sae.lr=3e-3 \
    --set every=2 --wandb off --quiet
