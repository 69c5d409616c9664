#!/usr/bin/env bash
# SAEs over training on transformers: grokking's MLP and residual stream at the `=` token (are the key
# Fourier frequencies SAE features, and when?), the synthetic induction task's attention outputs with a
# crosscoder over 16 checkpoints (are features born at the phase change?), and the hour-long text LM
# of language.md (its layer-1 attention output, the same question on code).
# Results: experiments/results/sae.md.
#     bash experiments/sae_transformers.sh       # DIR=checkpoints/sae, LM=checkpoints/language/attn_2l_induction
set -euo pipefail
MJ=${MJ:-mi-jax}
DIR=${DIR:-checkpoints/sae}
LM=${LM:-checkpoints/language/attn_2l_induction}

$MJ train grokking_small --out "$DIR/grokking_small" --overwrite --wandb off --quiet
$MJ analyze "$DIR/grokking_small" --wandb off --quiet
GROK="--set position=-1 --set sae.d_sae=256 --set ks=2,8,32 --set sae.steps=1000 --set inputs_per_step=256 --set every=3"
$MJ sae "$DIR/grokking_small" --hook blocks.0.mlp.hook_post $GROK --wandb off --quiet
$MJ sae "$DIR/grokking_small" --hook blocks.0.hook_resid_post $GROK --wandb off --quiet

$MJ train induction_2l --out "$DIR/induction_2l" --overwrite --wandb off --quiet
$MJ analyze "$DIR/induction_2l" --wandb off --quiet
INDUCTION="--set sae.d_sae=128 --set sae.k=4 --set sae.steps=1000 --set inputs_per_step=16 --set every=2"
$MJ sae "$DIR/induction_2l" --hook blocks.1.hook_attn_out $INDUCTION --set crosscoder_checkpoints=16 \
    --set crosscoder.d_sae=128 --set crosscoder.k=4 --set crosscoder.steps=2000 --wandb off --quiet
$MJ sae "$DIR/induction_2l" --hook blocks.0.hook_attn_out $INDUCTION --wandb off --quiet

[ -d "$LM" ] || $MJ train language_attn_2l_induction --out "$LM" --wandb off --quiet   # ~1 hour on 2 cores
$MJ sae "$LM" --hook blocks.1.hook_attn_out --set sae.d_sae=512 --set sae.k=8 --set sae.steps=1000 \
    --set inputs_per_step=2 --set every=6 --set crosscoder_checkpoints=16 --set crosscoder.d_sae=512 \
    --set crosscoder.k=8 --set crosscoder.steps=2000 --wandb off --quiet
python experiments/sae_births.py "$DIR/induction_2l" "$LM"
