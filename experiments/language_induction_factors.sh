#!/usr/bin/env bash
# Tokens to induction against width, context, vocabulary and batch: language_attn_2l_induction at lr
# 1e-2 (where language_induction_map.sh put the median onset at 13M tokens), one key changed at a time,
# seeds 0-7 of each value as one vmapped program. Each value changes shapes, so each is its own sweep,
# run to the same TOKENS (steps = TOKENS / (batch x context), 60 snapshots), then analysed (every
# member's `tokens_to_induction`). LANES programs run side by side: on one accelerator, processes that
# share it (each takes a fraction of its memory), since one 8-member toy leaves most of it idle.
# Results: experiments/results/language.md, figure by language_induction_factors.py.
#     bash experiments/language_induction_factors.sh        # DIR=checkpoints/language, TOKENS=40e6
#     FACTORS="seq_len=512" EXTRA="--set data.source=PATH" bash experiments/language_induction_factors.sh
set -uo pipefail
MJ=${MJ:-mi-jax}
DIR=${DIR:-checkpoints/language}/induction_map_factors
SEEDS=${SEEDS:-0,1,2,3,4,5,6,7}
TOKENS=${TOKENS:-40e6}
LANES=${LANES:-1}
FACTORS=${FACTORS:-model.d_model=32 model.d_model=128 seq_len=128 seq_len=512 train.batch_size=16 train.batch_size=64 data.vocab_size=1024 data.vocab_size=2048}
mkdir -p "$DIR"
[ "$LANES" -gt 1 ] && export XLA_PYTHON_CLIENT_MEM_FRACTION=$(python3 -c "print(round(0.9 / $LANES, 2))")

one() {  # one factor value: its sweep, then its analysis
    local factor=$1 batch=32 context=256
    case $factor in train.batch_size=*) batch=${factor#*=} ;; seq_len=*) context=${factor#*=} ;; esac
    local every; every=$(python3 -c "print(max(1, round($TOKENS / ($batch * $context) / 60)))")
    local t0=$SECONDS
    timeout "${TIMEOUT:-0}" $MJ sweep language_attn_2l_induction --grid "$factor" --seeds "$SEEDS" \
        --set train.lr=1e-2 --set train.steps=$((every * 60)) --set train.ckpt_every=$every --set train.eval_every=$every \
        ${EXTRA:-} --out "$DIR/$factor" --overwrite --wandb off --quiet > "$DIR/$factor.log" 2>&1
    echo "$factor: sweep exit $? after $((SECONDS - t0))s ($((every * 60)) steps)" | tee -a "$DIR/$factor.log"
    $MJ analyze "$DIR/$factor" --wandb off --quiet >> "$DIR/$factor.log" 2>&1
    echo "$factor: analysed, exit $? after $((SECONDS - t0))s" | tee -a "$DIR/$factor.log"
}

for factor in $FACTORS; do  # a pool of LANES: the next value starts as soon as any lane is free
    while [ "$(jobs -rp | wc -l)" -ge "$LANES" ]; do wait -n; done
    one "$factor" &
done
wait
