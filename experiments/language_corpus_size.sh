#!/usr/bin/env bash
# Does a larger vocabulary delay induction, or the repetition of a small corpus? The vocabulary points of
# language_induction_factors.sh (BPEs of 512 and 1,024 at lr 1e-2, 40M tokens), seeds 0-3, on the whole
# standard library with its tests (data.source=stdlib+tests, 2.6x the default corpus): ~25 minutes a
# program on 2 cores. Then language_corpus_size.py sets them beside the same seeds on the default corpus
# (from language_induction_map.sh and language_induction_factors.sh, run first).
# Results: experiments/results/language.md.
#     bash experiments/language_corpus_size.sh        # DIR=checkpoints/language
set -euo pipefail
DIR=${DIR:-checkpoints/language}
DIR=$DIR/corpus_size SEEDS=0,1,2,3 TOKENS=40e6 FACTORS="data.vocab_size=1024 data.vocab_size=512" \
    EXTRA="--set data.source=stdlib+tests" bash "$(dirname "$0")/language_induction_factors.sh"
python "$(dirname "$0")/language_corpus_size.py" "$DIR/induction_map_lr" "$DIR/induction_map_factors" \
    "$DIR/corpus_size/induction_map_factors"
