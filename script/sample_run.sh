#!/usr/bin/env bash
# Rejection sampling (best-of-N): every argument goes to `python -m utils.rejection_sampling` (one process,
# the first GPU if there is one). Run the same command again to resume after an interruption. With no
# argument, a short run on a tiny model built on the spot, examples/prompts.jsonl and a toy reward
# function (written to runs/rs_demo_rewards.py).
#
#   bash script/sample_run.sh --model_name_or_path MODEL_OR_ADAPTER --train_data_path prompts.jsonl \
#       --reward_model_path RM [and/or --reward_funcs file.py:function] --num_samples 8 --max_new_tokens 256 \
#       --output_dir runs/rs [--min_score S] [--min_margin M]
# Writes runs/rs/samples.jsonl, best.jsonl (-> --rlhf_type SFT) and pairs.jsonl (-> --rlhf_type DPO).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}

if [ $# -eq 0 ]; then
  mkdir -p runs; [ -d runs/tiny ] || $PY -m utils.tiny_model runs/tiny
  cat > runs/rs_demo_rewards.py <<'PYEOF'
def short_and_right(completions, answer, **kwargs):
    """Toy reward: 1 if the reply contains the answer, minus a small penalty per character."""
    texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    return [float(a in t) - 0.01 * len(t) for t, a in zip(texts, answer)]
PYEOF
  set -- --model_name_or_path runs/tiny --train_data_path examples/prompts.jsonl \
    --reward_funcs runs/rs_demo_rewards.py:short_and_right --num_samples 4 --max_new_tokens 16 \
    --output_dir runs/rs_example
fi
exec $PY -m utils.rejection_sampling "$@"
