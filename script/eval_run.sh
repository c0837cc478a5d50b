#!/usr/bin/env bash
# Evaluation of a trained model against the model it started from (utils/evaluate.py), through
# `accelerate launch`: each process samples and scores its share of the prompts, rank 0 writes the results
# (equal to a one-process run's). Every argument goes to `python -m utils.evaluate`; with none, a short run
# comparing a tiny model built on the spot with itself on examples/prompts.jsonl.
#
#   bash script/eval_run.sh --model_name_or_path runs/dpo --eval_data_path prompts.jsonl \
#       --reward_model_path RM [and/or --reward_funcs file.py:function] --num_samples 4 --output_dir runs/dpo_eval
#   NPROC=8 bash script/eval_run.sh ARGS     # 8 processes (default: the number of visible GPUs, 1 without one)
#
# --baseline_model_name_or_path defaults to the base of an adapter; a full model needs it. Writes eval.json,
# eval_samples.jsonl and report.md (with rewards.png) to --output_dir and prints the table.
# What runs: accelerate launch --config_file script/ddp.yaml --num_processes NPROC -m utils.evaluate ARGS
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
GPUS=$($PY -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
NPROC=${NPROC:-$(( GPUS > 0 ? GPUS : 1 ))}
if [ "$GPUS" -eq 0 ]; then export DS_ACCELERATOR=${DS_ACCELERATOR:-cpu}; fi

if [ $# -eq 0 ]; then
  mkdir -p runs; [ -d runs/tiny ] || $PY -m utils.tiny_model runs/tiny
  set -- --model_name_or_path runs/tiny --baseline_model_name_or_path runs/tiny \
    --eval_data_path examples/prompts.jsonl --reward_funcs examples/rewards.py:target_length --num_samples 4 \
    --max_new_tokens 16 --output_dir runs/eval_example
fi

LAUNCH=(--config_file script/ddp.yaml --num_processes "$NPROC")
if [ -n "${MAIN_PROCESS_PORT:-${MASTER_PORT:-}}" ]; then
  LAUNCH+=(--main_process_port "${MAIN_PROCESS_PORT:-$MASTER_PORT}")
fi
set -x
exec $PY -m accelerate.commands.launch "${LAUNCH[@]}" -m utils.evaluate "$@"
