#!/usr/bin/env bash
# Distillation (--rlhf_type GKD: supervised KD, SeqKD or on-policy GKD) through script/rlhf_run.sh, i.e.
# `accelerate launch` with the same ENGINE / NPROC choices. Every argument goes to main_train.py, with
# --rlhf_type GKD added when missing; a YAML file as the only argument works too. With no argument, a
# short on-policy run: a tiny student and a larger tiny teacher (same tokenizer) built on the spot.
#
#   bash script/gkd_run.sh --train_mode lora --model_name_or_path STUDENT --teacher_model_name_or_path TEACHER \
#       --train_data_path sft.jsonl --output_dir runs/gkd --lmbda 0.5 --beta 0.5 --max_new_tokens 128
#   --lmbda 0 (supervised KD) | --lmbda 0 --seq_kd true (SeqKD) | --lmbda 0.5 or 1 (GKD)
# Engine and processes as in rlhf_run.sh: ZERO=2|3 or ENGINE=ddp|zero2|zero3|zero3_offload|fsdp2 (or CONFIG=file), NPROC=8.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}

if [ $# -eq 0 ]; then
  mkdir -p runs; [ -d runs/tiny ] || $PY -m utils.tiny_model runs/tiny
  [ -d runs/tiny_teacher ] || $PY -m utils.tiny_model runs/tiny_teacher --hidden_size 96  # seed 0: same tokenizer
  set -- --train_mode lora --model_name_or_path runs/tiny --teacher_model_name_or_path runs/tiny_teacher \
    --train_data_path examples/sft_prompt_completion.jsonl --output_dir runs/gkd_example \
    --lmbda 0.5 --beta 0.5 --max_new_tokens 16 --max_steps 10 --per_device_train_batch_size 4 --learning_rate 1e-4 --gradient_checkpointing false
fi

case " $* " in
  *" --rlhf_type "*|*" --rlhf_type="*) ;;
  *) [ $# -eq 1 ] && [[ "$1" == *.y*ml ]] || set -- --rlhf_type GKD "$@" ;;
esac
exec bash script/rlhf_run.sh "$@"
