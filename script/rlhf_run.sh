#!/usr/bin/env bash
# Runs main_train.py through `accelerate launch` (any method: SFT, Reward, DPO, CPO, SimPO, CPOSimPO,
# ORPO, KTO, RLOO, GRPO, PPO, GKD). Every argument goes to main_train.py; with none, a short DPO
# run on a tiny model built on the spot and examples/dpo_conversational.jsonl.
#
#   bash script/rlhf_run.sh --rlhf_type DPO --train_mode lora --model_name_or_path MODEL \
#       --train_data_path data.jsonl --output_dir runs/dpo
#   bash script/rlhf_run.sh --rlhf_type PPO --train_mode lora --model_name_or_path MODEL \
#       --train_data_path prompts.jsonl --output_dir runs/ppo --reward_model_path RM \
#       --reward_funcs examples/rewards.py:correct_answer --reward_weights 1.0 0.5 --num_ppo_epochs 4
#   ZERO=3 NPROC=8 bash script/rlhf_run.sh run.yaml
#
# Engine (the accelerate config under script/):
#   ENGINE=ddp (default) | zero2 | zero3 | zero3_offload | fsdp2, or ZERO=2 / ZERO=3 (= ENGINE=zero2 / zero3),
#   or CONFIG=path/to/any_accelerate_config.yaml.
# NPROC: processes on this machine (default: the number of visible GPUs, 1 without a GPU).
# Several machines: run the same command on every node with NNODES (machines), NODE_RANK (0 on the main
# node), MASTER_ADDR (the main node's address, reachable from all) and MASTER_PORT (default 29500).
# Without a GPU every engine but fsdp2 runs on CPU processes (gloo; DeepSpeed with DS_ACCELERATOR=cpu).
#
# What runs, e.g. for ZERO=3 NPROC=8:
#   accelerate launch --config_file script/zero3.yaml --num_processes 8 main_train.py ARGS
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
if [ -n "${ZERO:-}" ]; then ENGINE=zero${ZERO}; fi
ENGINE=${ENGINE:-ddp}
CONFIG=${CONFIG:-script/${ENGINE}.yaml}
[ -f "$CONFIG" ] || { echo "error: no accelerate config $CONFIG (ENGINE: ddp, zero2, zero3, zero3_offload, fsdp2; ZERO: 2, 3)" >&2; exit 2; }
GPUS=$($PY -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
NPROC=${NPROC:-$(( GPUS > 0 ? GPUS : 1 ))}
NNODES=${NNODES:-1}
if [ "$GPUS" -eq 0 ]; then
  export DS_ACCELERATOR=${DS_ACCELERATOR:-cpu}
  if grep -q "^distributed_type: FSDP" "$CONFIG"; then
    echo "error: FSDP ($CONFIG) needs GPUs; on CPU use ZERO=3 (DeepSpeed ZeRO-3) or ENGINE=ddp." >&2; exit 2
  fi
fi

if [ $# -eq 0 ]; then
  mkdir -p runs; [ -d runs/tiny ] || $PY -m utils.tiny_model runs/tiny
  set -- --rlhf_type DPO --train_mode lora --model_name_or_path runs/tiny \
    --train_data_path examples/dpo_conversational.jsonl --output_dir runs/dpo_example \
    --max_steps 10 --per_device_train_batch_size 2 --learning_rate 1e-4 --gradient_checkpointing false
fi

LAUNCH=(--config_file "$CONFIG" --num_processes $(( NPROC * NNODES )))
if [ "$NNODES" -gt 1 ]; then
  : "${NODE_RANK:?set NODE_RANK (0 on the main node)}" "${MASTER_ADDR:?set MASTER_ADDR (the main node address)}"
  LAUNCH+=(--num_machines "$NNODES" --machine_rank "$NODE_RANK" --main_process_ip "$MASTER_ADDR"
           --main_process_port "${MASTER_PORT:-29500}")
  # DeepSpeed: every node starts its own processes (torchrun), no pdsh / hostfile / ssh between nodes.
  if grep -q "^distributed_type: DEEPSPEED" "$CONFIG"; then LAUNCH+=(--deepspeed_multinode_launcher standard); fi
elif [ -n "${MAIN_PROCESS_PORT:-${MASTER_PORT:-}}" ]; then
  LAUNCH+=(--main_process_port "${MAIN_PROCESS_PORT:-$MASTER_PORT}")
fi
set -x
exec $PY -m accelerate.commands.launch "${LAUNCH[@]}" main_train.py "$@"
