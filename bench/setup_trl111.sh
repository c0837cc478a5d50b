#!/usr/bin/env bash
# A separate venv with TRL 1.11 (the last TRL with a PPOTrainer, under trl.experimental.ppo) for the
# "our PPO vs TRL's" comparison in bench/run_bench.py. Kept apart from .venv so the project's pins stay
# untouched. torch==2.13.0 goes in first: it resolves to the CPU wheel on disk, whereas a bare torch
# requirement pulled in by trl would fetch a multi-GB CUDA build.
#   bash bench/setup_trl111.sh        # creates bench/.venv-trl111 (ignored by git)
set -euo pipefail
cd "$(dirname "$0")"
V=.venv-trl111
PY=${PYTHON:-python3}
[ -x $V/bin/python ] || "$PY" -m venv $V
$V/bin/pip install -q "torch==2.13.0"
# TRL 1.11 pins transformers>=4.56; TRANSFORMERS overrides the version if the newest one breaks it.
$V/bin/pip install -q "trl==1.11.0" ${TRANSFORMERS:+"transformers==$TRANSFORMERS"} "accelerate" "datasets" "peft"
$V/bin/python -c "import trl, transformers, torch; print('trl', trl.__version__, 'transformers', transformers.__version__, 'torch', torch.__version__)"
