#!/usr/bin/env bash
# Creates .venv (once) and installs what requirements.txt pins; torch==2.13.0 first so that the
# CPU wheel is used instead of a multi-GB CUDA build. Re-running is cheap: a stamp file records
# the requirements that were installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
stamp=.venv/.requirements.sha
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing torch==${TORCH_VERSION:-2.13.0} and requirements.txt into .venv ..."
  .venv/bin/pip install -q "torch==${TORCH_VERSION:-2.13.0}"
  # DeepSpeed builds no C++ ops at install time (they are JIT-built when needed).
  DS_BUILD_OPS=0 .venv/bin/pip install -q -r requirements.txt
  echo "$want" > "$stamp"
fi
# The options cache (utils/options_cache.py): --help and the mistakes found before torch is imported are answered at once.
.venv/bin/python -m utils.options_cache
