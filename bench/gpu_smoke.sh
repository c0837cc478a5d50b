#!/usr/bin/env bash
# GPU smoke and speed check: DPO, RLOO and GKD on a random-initialised Qwen2-0.5B-shaped model (hidden 896,
# 24 layers, 14 heads, 2 KV heads, MLP 4864, 151936-row tied embedding: 494M parameters) in bf16, in
# full / LoRA / QLoRA mode, on one process, single-process DeepSpeed ZeRO-3 and FSDP2; then ZeRO-3 and
# FSDP2 checkpoint resume. For each run it prints peak GPU memory, seconds per optimizer step and MFU.
#
#   bash bench/gpu_smoke.sh                    # everything (about 15-25 minutes on one H100)
#   METHODS="DPO" MODES="qlora" ENGINES="zero3" bash bench/gpu_smoke.sh
#   NPROC=8 bash bench/gpu_smoke.sh            # ZeRO-3 / FSDP2 runs over 8 GPUs instead of 1
#
# Knobs (environment): METHODS (DPO RLOO GKD), MODES (full lora qlora), ENGINES (single zero3 fsdp2),
# NPROC (processes for zero3 / fsdp2, default 1), STEPS (optimizer steps per run, default 10; the first is
# warm-up and not measured), BATCH (per-device batch, default 8), RESUME (1: run the resume checks),
# PEAK_TFLOPS (the GPU's dense bf16 peak, for MFU; known GPUs are recognised), OUT (bench/out/gpu_smoke).
#
# Measured by a callback around main_train (the same code path as the CLI):
#   s/step   median wall time of an optimizer step (steps 2..STEPS), CUDA-synchronised; generation included.
#   peak     torch.cuda.max_memory_allocated on the first GPU, from the start of training (weights, optimizer
#            state, activations, generation), and max_memory_reserved in brackets.
#   MFU      model FLOPs / (s/step x peak): every forward counts 2 x N FLOPs per input token (N = 494M; the
#            policy, the reference, the teacher and generation alike), and forwards with gradients 6 x N
#            (forward + backward), the usual 6N convention, LoRA and QLoRA included; attention's quadratic
#            term and recomputation are not counted.
# Results: OUT/results.jsonl, one line per run, and a table at the end. Exit code 1 if any run failed.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
OUT=${OUT:-bench/out/gpu_smoke}
METHODS=${METHODS:-DPO RLOO GKD}
MODES=${MODES:-full lora qlora}
ENGINES=${ENGINES:-single zero3 fsdp2}
NPROC=${NPROC:-1}
STEPS=${STEPS:-10}
BATCH=${BATCH:-8}
RESUME=${RESUME:-1}
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TRL_EXPERIMENTAL_SILENCE=1

if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "error: no CUDA GPU visible; bench/gpu_smoke.sh is for GPU machines (the CPU checks are tests/test_distributed.py)." >&2
  exit 2
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

# ------------------------------------------------------------------ model, teacher, data, reward, meter
if [ ! -f "$OUT/model/config.json" ] || [ ! -f "$OUT/teacher/config.json" ]; then
  $PY - "$OUT" <<'PYEOF'
import json, random, sys

import torch
from transformers import AutoModelForCausalLM, Qwen2Config

from utils.toy.tiny_model import WORDS, build_tokenizer

out = sys.argv[1]
tok = build_tokenizer()  # 512 real tokens; the embedding has Qwen2-0.5B's 151936 rows, as real checkpoints pad theirs
for name, seed in (("model", 0), ("teacher", 1)):  # the teacher: same shape and tokenizer, other weights
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=4096,
                         tie_word_embeddings=True, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                         bos_token_id=None)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.generation_config.eos_token_id, model.generation_config.pad_token_id = tok.eos_token_id, tok.pad_token_id
    model.save_pretrained(f"{out}/{name}")
    tok.save_pretrained(f"{out}/{name}")
    print(f"{name}: {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters -> {out}/{name}")

rng = random.Random(0)
text = lambda n: " ".join(rng.choice(WORDS) for _ in range(n))  # ~1.5 tokens per word with this tokenizer
with open(f"{out}/pref.jsonl", "w") as f, open(f"{out}/sft.jsonl", "w") as g, open(f"{out}/prompts.jsonl", "w") as h:
    for _ in range(512):
        prompt = [{"role": "user", "content": text(100)}]
        chosen, rejected = [{"role": "assistant", "content": text(100)}], [{"role": "assistant", "content": text(100)}]
        f.write(json.dumps({"prompt": prompt, "chosen": chosen, "rejected": rejected}) + "\n")
        g.write(json.dumps({"prompt": prompt, "completion": chosen}) + "\n")
        h.write(json.dumps({"prompt": prompt}) + "\n")
PYEOF
  [ $? -eq 0 ] || { echo "error: could not build the smoke model" >&2; exit 1; }
fi

cat > "$OUT/smoke_rewards.py" <<'PYEOF'
def length_reward(completions, **kwargs):
    """Any cheap reward will do for a speed check: the completion's length in characters, scaled."""
    texts = [c if isinstance(c, str) else "".join(m["content"] for m in c) for c in completions]
    return [len(t) / 100 for t in texts]
PYEOF

cat > "$OUT/gpu_meter.py" <<'PYEOF'
"""main_train.main(argv) with a callback that measures step time, FLOPs and peak memory (see gpu_smoke.sh)."""
import json, os, statistics, sys, time

sys.path.insert(0, os.environ["SMOKE_ROOT"])
import torch
from transformers import TrainerCallback

import main_train

N = 494.03e6  # parameters of every model in these runs (the smoke shape, tied embedding counted once)
PEAKS = {"H100 PCIe": 756, "H100 NVL": 835, "H100": 989, "GH200": 989, "H200": 989, "B200": 2250, "A100": 312,
         "A800": 312, "L40S": 362, "L40": 181, "A6000": 155, "A10G": 70, "A10": 125, "L4": 121}


def peak_tflops():
    if os.environ.get("PEAK_TFLOPS"):
        return float(os.environ["PEAK_TFLOPS"])
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAKS.items() if k in name), None)


class Meter(TrainerCallback):
    def __init__(self, trainer):
        self.times, self.step_flops, self.flops, self.t0 = [], [], 0.0, None
        seen = []
        for attr in ("model", "ref_model", "teacher_model"):  # the policy (also the reference when it is the
            m = getattr(trainer, attr, None)                   # adapter switched off), a frozen copy, a teacher
            m = getattr(m, "module", m)  # DeepSpeed engines wrap the module
            if m is not None and hasattr(m, "get_input_embeddings") and all(m is not s for s in seen):
                seen.append(m)
                m.get_input_embeddings().register_forward_pre_hook(self._count)

    def _count(self, module, args):
        if args and torch.is_tensor(args[0]):
            self.flops += (6 if torch.is_grad_enabled() else 2) * N * args[0].numel()

    def on_train_begin(self, args, state, control, **kwargs):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()

    def on_step_begin(self, args, state, control, **kwargs):
        torch.cuda.synchronize()
        self.flops, self.t0 = 0.0, time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        torch.cuda.synchronize()
        self.times.append(time.perf_counter() - self.t0)
        self.step_flops.append(self.flops)

    def on_train_end(self, args, state, control, **kwargs):
        if not args.process_index == 0:
            return
        measured = list(zip(self.times, self.step_flops))[1:] or list(zip(self.times, self.step_flops))
        sec = statistics.median(t for t, _ in measured)
        achieved = statistics.median(f / t for t, f in measured)
        peak = peak_tflops()
        row = {"run": os.environ.get("SMOKE_LABEL", "?"), "gpu": torch.cuda.get_device_name(),
               "processes": args.world_size, "steps_measured": len(measured), "s_per_step": round(sec, 3),
               "peak_alloc_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
               "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2),
               "tflops_per_gpu": round(achieved / 1e12, 1),
               "mfu": None if peak is None else round(achieved / (peak * 1e12), 4)}
        with open(os.environ["SMOKE_RESULTS"], "a") as f:
            f.write(json.dumps(row) + "\n")
        print("[gpu_smoke]", json.dumps(row), flush=True)


build = main_train.build_trainer


def build_with_meter(*args, **kwargs):
    trainer = build(*args, **kwargs)
    trainer.add_callback(Meter(trainer))
    return trainer


main_train.build_trainer = build_with_meter
code = main_train.main(sys.argv[1:])
from utils.core.distributed import end_processes  # noqa: E402

end_processes()
sys.exit(code)
PYEOF

# ----------------------------------------------------------------------------------------------- runs
FAILED=()
launch() {  # launch ENGINE LABEL ARGS...: one run through gpu_meter.py; the log goes to OUT/logs/LABEL.log
  local engine=$1 label=$2; shift 2
  local log="$OUT/logs/$label.log" cmd
  mkdir -p "$OUT/logs"
  if [ "$engine" = single ]; then
    cmd=($PY "$OUT/gpu_meter.py")
  else
    cmd=($PY -m accelerate.commands.launch --config_file "script/$engine.yaml" --num_processes "$NPROC" "$OUT/gpu_meter.py")
  fi
  echo "== $label: ${cmd[*]} $*"
  SMOKE_ROOT=$ROOT SMOKE_LABEL=$label SMOKE_RESULTS=$OUT/results.jsonl PYTHONPATH=$ROOT "${cmd[@]}" "$@" > "$log" 2>&1
  local rc=$?
  if [ $rc -ne 0 ]; then
    FAILED+=("$label"); echo "   FAILED (exit $rc), last lines of $log:"; tail -n 15 "$log" | sed 's/^/   | /'
  else
    grep "^\[gpu_smoke\]" "$log" | tail -n 1 | sed 's/^/   /'
  fi
}

method_args() {  # method_args METHOD: the method's data and options
  case $1 in
    DPO)  echo "--train_data_path $OUT/pref.jsonl --max_length 512" ;;
    RLOO) echo "--train_data_path $OUT/prompts.jsonl --reward_funcs $OUT/smoke_rewards.py:length_reward --num_generations 4 --max_completion_length 128" ;;
    GKD)  echo "--train_data_path $OUT/sft.jsonl --teacher_model_name_or_path $OUT/teacher --lmbda 0.5 --beta 0.5 --max_new_tokens 128 --max_length 512" ;;
  esac
}

COMMON=(--model_name_or_path "$OUT/model" --bf16 true --per_device_train_batch_size "$BATCH" --max_steps "$STEPS"
        --learning_rate 1e-5 --gradient_checkpointing false --save_strategy no --logging_steps 1 --seed 0
        --disable_tqdm true --report_to none)
rm -f "$OUT/results.jsonl"
for engine in $ENGINES; do
  for method in $METHODS; do
    for mode in $MODES; do
      label="${method}-${mode}-${engine}$([ "$engine" != single ] && echo "x$NPROC")"
      # shellcheck disable=SC2046
      launch "$engine" "$label" --rlhf_type "$method" --train_mode "$mode" --output_dir "$OUT/runs/$label" \
        "${COMMON[@]}" $(method_args "$method")
    done
  done
done

# ------------------------------------------------------ resume: ZeRO-3 and FSDP2 reproduce the uninterrupted run
if [ "$RESUME" = 1 ]; then
  for engine in zero3 fsdp2; do
    for mode in full lora; do
      a="resume-${mode}-${engine}-a" b="resume-${mode}-${engine}-b"
      args=(--rlhf_type DPO --train_mode "$mode" "${COMMON[@]}" --max_steps 4 --save_strategy steps --save_steps 2
            $(method_args DPO))
      launch "$engine" "$a" "${args[@]}" --output_dir "$OUT/runs/$a"
      launch "$engine" "$b" "${args[@]}" --output_dir "$OUT/runs/$b" --resume_from_checkpoint "$OUT/runs/$a/checkpoint-2"
      if ! $PY - "$OUT/runs/$a" "$OUT/runs/$b" "$mode" <<'PYEOF'
import json, math, sys

import torch

a, b, mode = sys.argv[1:]
hist = lambda d: {h["step"]: h["loss"] for h in json.load(open(f"{d}/trainer_state.json"))["log_history"] if "loss" in h}
full, resumed = hist(a), hist(b)
pairs = [(full[s], resumed.get(s)) for s in (3, 4)]
# bf16 GPU kernels (flash attention's backward) are not bit-deterministic: a tolerance, not equality
ok = all(r is not None and math.isclose(f, r, rel_tol=2e-2) for f, r in pairs)
if mode == "full":
    from transformers import AutoModelForCausalLM as cls
else:
    from peft import AutoPeftModelForCausalLM as cls
model = cls.from_pretrained(b, dtype=torch.bfloat16)  # the final save reloads whole
with torch.no_grad():
    ok = ok and bool(torch.isfinite(model(input_ids=torch.tensor([[1, 5, 9, 2]])).logits).all())
print(f"   resume {b}: steps 3, 4 uninterrupted vs resumed {pairs}; reload ok -> {'OK' if ok else 'MISMATCH'}")
sys.exit(0 if ok else 1)
PYEOF
      then FAILED+=("resume-${mode}-${engine}"); fi
    done
  done
fi

# ------------------------------------------------------------------------------------------------ table
$PY - "$OUT/results.jsonl" <<'PYEOF'
import json, os, sys

rows = [json.loads(l) for l in open(sys.argv[1])] if os.path.exists(sys.argv[1]) else []
rows = [r for r in rows if not r["run"].startswith("resume-")]
if rows:
    print(f"\n{rows[0]['gpu']}, bf16, model 494M parameters")
    print(f"{'run':<22} {'peak GiB (reserved)':>20} {'s/step':>8} {'TFLOP/s':>8} {'MFU':>7}")
    for r in rows:
        mfu = "n/a" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
        print(f"{r['run']:<22} {r['peak_alloc_gib']:>9.2f} ({r['peak_reserved_gib']:>6.2f}) {r['s_per_step']:>10.3f} "
              f"{r['tflops_per_gpu']:>8.1f} {mfu:>7}")
PYEOF
if [ ${#FAILED[@]} -gt 0 ]; then
  echo "FAILED: ${FAILED[*]} (logs in $OUT/logs)"; exit 1
fi
echo "all runs passed; results in $OUT/results.jsonl"
