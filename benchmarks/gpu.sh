#!/usr/bin/env bash
# The GPU suite, on one H100/H200 in under 8 minutes: the GPU run (`gpu_run.sh`: the full
# grokking_p113 run of 25,000 steps with a snapshot every 100, 1 against 64 seeds, and the analysis
# benches with 16 checkpoints per batch), then a 64-member grokking_p113 sweep's member-steps/s
# against one member, each program's compile time and the step's MFU (`sweep_p113_members`), the
# full-size language model's tokens/s and MFU in float32 and bfloat16 (`lm_full_step`), and the rows
# of the other accelerator checks. From the source tree, wandb off, no network:
#     OUT=/tmp/gpu-out bash benchmarks/gpu.sh
# Results: $OUT/gpu.jsonl (one JSON object a line), $OUT/gpu.log and $OUT/benchmarks.jsonl, the
# rows bench.py records with the card's name: append those to experiments/results/benchmarks.jsonl
# and run `python benchmarks/render.py`.
set -u
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
O=${OUT:-/tmp/gpu-out}; mkdir -p "$O"
PY=${PY:-python3}
bash benchmarks/gpu_run.sh
timeout ${ROWS_TIMEOUT:-300} $PY benchmarks/bench.py --json --record-to "$O/benchmarks.jsonl" ${GPU_ROWS:---only sweep_p113_members --only lm_full_step} 2>>"$O/gpu.log" | tee -a "$O/gpu.jsonl"
echo "suite done" | tee -a "$O/gpu.log"
