#!/usr/bin/env bash
# The README's first command: installs into .venv if needed, then runs the demo (utils/demo.py): a tiny
# model built on the spot learns to sort digits through SFT, a reward model, DPO, GRPO and GKD, on CPU, with
# no download. Prints a before/after table and writes DIR/report.md with plots.
#
#   bash script/demo.sh [--output_dir DIR] [--quick] [--seed N]
#   bash script/demo.sh --real [--output_dir DIR] [--seed N]   # SmolLM2-135M-Instruct (utils/toy/demo_real.py)
set -euo pipefail
cd "$(dirname "$0")/.."
bash script/setup.sh
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TRL_EXPERIMENTAL_SILENCE=1
export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-}
# One thread: the models are so small that a second thread gains little, and on a busy machine two spinning
# threads per process slow every step several times over (measured: 0.09 s vs 0.5-1 s per SFT step).
# The real-model demo (--real) is matrix products on a 135M model: there, every core helps.
case " $* " in *" --real "*) export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)} ;; esac
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec .venv/bin/python -m utils.demo "$@"
