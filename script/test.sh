#!/usr/bin/env bash
# The README's test command: installs into .venv if needed, then runs the test suite on CPU.
# Extra arguments go to pytest (e.g. `bash script/test.sh -m "not slow"`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash script/setup.sh
export CUDA_VISIBLE_DEVICES="" TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DS_ACCELERATOR=cpu
exec .venv/bin/python -m pytest -q "$@" tests
