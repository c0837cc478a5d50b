#!/usr/bin/env bash
# The README's first command: installs into .venv if needed, builds a tiny model on the spot and
# runs a short DPO job on it through script/rlhf_run.sh (no download, CPU is enough).
set -euo pipefail
cd "$(dirname "$0")/.."
bash script/setup.sh
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
exec bash script/rlhf_run.sh
