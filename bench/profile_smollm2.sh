#!/bin/bash
# Profiles behind the real-model section of bench/RESULTS.md (2026-12-02): steps 2-3 of each job, one thread,
# one run at a time. Output: bench/out/profile/*.log and *.json (operator call counts, self and inclusive CPU ms).
cd "$(dirname "$0")/.." || exit 1
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 CUDA_VISIBLE_DEVICES="" TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 TRL_EXPERIMENTAL_SILENCE=1 PYTHONPATH=$PWD
mkdir -p bench/out/profile
for job in "${@:-wrapper:GRPO-LoRA bare:GRPO-LoRA wrapper:SFT trl:SFT}"; do
  for one in $job; do
    script=${one%%:*} method=${one#*:}
    .venv/bin/python bench/profile_step.py "$script" "$method" smollm2 1 3 > "bench/out/profile/$script-$method.log" 2>&1
    echo "$one rc=$? $(grep -E '^(step seconds|self CPU)' "bench/out/profile/$script-$method.log" | tr '\n' ' ')"
  done
done
