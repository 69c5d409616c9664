#!/usr/bin/env bash
# Does a larger vocabulary delay induction, or the repetition of a small corpus? The vocabulary points of
# language_induction_factors.sh (BPEs of 512 and 1,024 at lr 1e-2, 40M tokens) on the whole standard
# library with its tests (data.source=stdlib+tests, 2.6x the default corpus): seeds 0-3 of each, then
# seeds 4-7 at 512, ~25-29 minutes a program of 4 seeds on 2 cores. Then language_corpus_size.py sets
# them beside the 8 seeds of each on the default corpus (from language_induction_map.sh and
# language_induction_factors.sh, run first).
# Results: experiments/results/language.md.
#     bash experiments/language_corpus_size.sh        # DIR=checkpoints/language
set -euo pipefail
DIR=${DIR:-checkpoints/language}
run() {  # a folder, the seeds, the factor values
    DIR="$1" SEEDS="$2" TOKENS=40e6 FACTORS="$3" EXTRA="--set data.source=stdlib+tests" \
        bash "$(dirname "$0")/language_induction_factors.sh"
}
run "$DIR/corpus_size" 0,1,2,3 "data.vocab_size=1024 data.vocab_size=512"
run "$DIR/corpus_size/seeds_4-7" 4,5,6,7 "data.vocab_size=512"
python "$(dirname "$0")/language_corpus_size.py" "$DIR/induction_map_lr" "$DIR/induction_map_factors" \
    "$DIR/corpus_size/induction_map_factors" "$DIR/corpus_size/seeds_4-7/induction_map_factors"
