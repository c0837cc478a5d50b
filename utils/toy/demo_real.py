"""The real-model demo: SmolLM2-135M-Instruct learns to answer in one sentence, on CPU, in a few minutes.

    bash script/demo.sh --real [--output_dir DIR] [--seed N]      (or: python -m utils.demo --real ...)

The model (utils/toy/smollm2.py: a PyPI wheel, no model hub) answers "What is photosynthesis?" with a paragraph that
runs past any short limit. A person can see the change this demo makes: after it, the answer is one complete
sentence. Stages, each through the real entry points with the argv a user would type:

  data   the model's own greedy answers to 48 training questions, cut after their first sentence (SFT data:
         its knowledge, in the new style)
  SFT    LoRA on those answers, merged (utils.model.merge)
  GRPO   LoRA on the SFT model with the rule below as reward (`--reward_funcs utils.toy.demo_real:one_sentence`),
         merged
  eval   utils.evaluation.run: the final model against the one it started from, on 16 held-out questions, 2 samples
         each, under the rule: win rate with its 95 % interval

The rule (`one_sentence`): 0 for an answer cut off by the token limit or shorter than 4 words, else 1 divided by
its number of sentences, scaled down for a sentence over 12 words. DIR/report.md shows held-out questions answered before and after, side by side, the win
rate, factual questions (still answered right?), every command, and the training curves; DIR/results.json has
the numbers. Exit code 0 only when the interval lies above 0.5 and every factual answer is still right.
"""

from __future__ import annotations

import json
import os
import random
import re
import shlex
import time

from utils.toy.demo_task import write_jsonl

TOPICS = ["photosynthesis", "the moon", "gravity", "a rainbow", "the internet", "a volcano", "electricity",
          "the ocean", "a computer", "music", "bread", "coffee", "the sun", "a forest", "a desert", "a river", "snow",
          "a bicycle", "a library", "a hospital", "a museum", "a garden", "a cloud", "thunder", "an airplane",
          "a train", "a bridge", "a camera", "a telescope", "a battery", "a magnet", "a whale", "an elephant",
          "a penguin", "a honeybee", "chess", "football", "a piano", "poetry", "history", "mathematics",
          "chemistry", "democracy", "a calendar", "a clock", "a map", "a compass", "a lighthouse", "a castle",
          "a pyramid", "a glacier", "an island", "a waterfall", "a mountain", "a city", "a farm", "cheese",
          "chocolate", "tea", "rice", "an apple", "a vaccine", "a dream", "friendship", "kindness", "exercise",
          "sleep", "recycling", "the wind", "a newspaper", "a hurricane", "an earthquake"]
TEMPLATES = ["What is {}?", "Tell me about {}.", "Explain {} to me.", "Why does {} matter?"]
# Answered right by the untrained model (greedy); none is trained on.
FACTS = [("What is the capital of France?", "Paris"), ("What is the capital of Japan?", "Tokyo"),
         ("What is the capital of Germany?", "Berlin"), ("What is the chemical symbol for water?", "H2O"),
         ("What is the capital of the United Kingdom?", "London")]
N_TRAIN, N_EVAL, N_SHOW = 48, 16, 6
MAX_NEW_TOKENS = 48  # the limit in every comparison: a rambling answer runs past it
SHORT = 12  # words: a one-sentence answer up to this long scores 1
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def _text(completion) -> str:
    return completion if isinstance(completion, str) else completion[-1]["content"]


def rule(text: str, finished: bool = True) -> float:
    """0 for an answer cut off by the token limit, shorter than 4 words or not ending in . ! or ?; else
    1 / its number of sentences, times min(1, 12 / its number of words) (one sentence of up to 12 words: 1)."""
    text, words = text.strip(), len(text.split())
    if not finished or words < 4 or text[-1] not in ".!?":
        return 0.0
    return min(1.0, SHORT / words) / len(SENTENCE_END.split(text))


def one_sentence(prompts, completions, **_columns) -> list[float]:
    """Reward function (`--reward_funcs utils.toy.demo_real:one_sentence`). A completion cut by the token limit ends
    mid-sentence (no final . ! ?) and scores 0."""
    return [rule(_text(c)) for c in completions]


def first_sentence(text: str) -> str | None:
    """The answer's first sentence, when it is a whole one of at least 4 words."""
    head = SENTENCE_END.split(text.strip())[0].strip()
    return head if rule(head) > 0 else None


def questions(seed: int) -> tuple[list[str], list[str]]:
    """(training questions, held-out questions): every topic once, in one template, split by topic."""
    rng = random.Random(seed)
    topics = TOPICS[:]
    rng.shuffle(topics)
    asked = [rng.choice(TEMPLATES).format(t) for t in topics]
    return asked[:N_TRAIN], asked[N_TRAIN:N_TRAIN + N_EVAL]


def greedy(model_dir: str, prompts: list[str], max_new_tokens: int = MAX_NEW_TOKENS) -> list[tuple[str, bool]]:
    """(answer, finished with the end-of-turn token) for each question, greedy, batched."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    out = []
    for i in range(0, len(prompts), 16):
        texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
                 for p in prompts[i:i + 16]]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            ids = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens,
                                 pad_token_id=tok.pad_token_id)[:, enc["input_ids"].shape[1]:].tolist()
        for row in ids:
            cut = next((j for j, t in enumerate(row) if t in eos), None)
            out.append((tok.decode(row[:cut], skip_special_tokens=True).strip(), cut is not None))
    return out


def _stage(name: str, program: str, argv: list, log: list[dict], entry) -> None:
    """Run one command in this process (`entry(argv)` returns its exit code); a non-zero exit stops the demo."""
    argv = [str(a) for a in argv]
    command = f"{program} {shlex.join(argv)}"
    print(f"\n=== {name}: {command}\n", flush=True)
    start = time.time()
    code = entry(argv)
    log.append({"stage": name, "command": command, "seconds": round(time.time() - start, 1), "exit": code})
    if code not in (0, None):
        raise RuntimeError(f"{name} exited with {code}")


def run(out: str, seed: int, train_main) -> dict:
    """The pipeline; `train_main`: main_train.main (the demo command passes it: library code never imports the
    entry point)."""
    from utils.evaluation import run as evaluate
    from utils.model import merge
    from utils.core.errors import run_command
    from utils.toy.smollm2 import hf_dir

    start, log = time.time(), []
    base = str(hf_dir())
    data, path = os.path.join(out, "data"), {k: os.path.join(out, k) for k in ("sft", "sft_merged", "grpo", "final")}
    os.makedirs(data, exist_ok=True)
    train_q, eval_q = questions(seed)
    print(f"[demo] {len(train_q)} training and {len(eval_q)} held-out questions; the base model answers them",
          flush=True)
    answers = greedy(base, train_q, 36)  # a first sentence longer than this is not used
    rows = [{"prompt": [{"role": "user", "content": q}], "completion": [{"role": "assistant", "content": s}]}
            for q, (a, _) in zip(train_q, answers) if (s := first_sentence(a))]
    sft_file = write_jsonl(os.path.join(data, "sft.jsonl"), rows)
    prompts_file = write_jsonl(os.path.join(data, "prompts.jsonl"),
                                [{"prompt": [{"role": "user", "content": q}]} for q in train_q])
    eval_file = write_jsonl(os.path.join(data, "heldout.jsonl"),
                             [{"prompt": [{"role": "user", "content": q}]} for q in eval_q])
    log.append({"stage": "data", "seconds": round(time.time() - start, 1),
                "command": f"{len(rows)} SFT rows: the base model's own first sentences"})
    before = greedy(base, eval_q[:N_SHOW] + [q for q, _ in FACTS])
    common = ["--train_mode", "lora", "--save_strategy", "no", "--seed", seed, "--logging_steps", 1,
              "--overwrite_output_dir", "true"]  # a demo run again replaces its own earlier models
    train, evaluate_cmd = "python main_train.py", "python -m utils.evaluate"
    _stage("SFT", train, ["--rlhf_type", "SFT", "--model_name_or_path", base, "--train_data_path", sft_file,
                   "--output_dir", path["sft"], "--num_train_epochs", 1, "--per_device_train_batch_size", 8,
                   "--learning_rate", 5e-4, "--max_length", 128, *common], log, train_main)
    _stage("merge SFT", "python -m utils.merge", ["--model_name_or_path", path["sft"], "--output_dir",
                                                  path["sft_merged"]], log, merge.main)
    _stage("GRPO", train, ["--rlhf_type", "GRPO", "--model_name_or_path", path["sft_merged"], "--train_data_path",
                    prompts_file, "--output_dir", path["grpo"], "--max_steps", 4, "--per_device_train_batch_size", 8,
                    "--num_generations", 4, "--max_completion_length", 32, "--temperature", 1.0,
                    "--learning_rate", 1e-4, "--reward_funcs", "utils.toy.demo_real:one_sentence", *common],
           log, train_main)
    _stage("merge GRPO", "python -m utils.merge", ["--model_name_or_path", path["grpo"], "--output_dir",
                                                   path["final"]], log, merge.main)
    ev_argv = ["--model_name_or_path", path["final"], "--baseline_model_name_or_path", base, "--eval_data_path",
               eval_file, "--reward_funcs", "utils.toy.demo_real:one_sentence", "--num_samples", 2, "--max_new_tokens",
               MAX_NEW_TOKENS, "--temperature", 0.7, "--batch_size", 8, "--seed", seed, "--output_dir",
               os.path.join(out, "eval")]
    _stage("evaluate", evaluate_cmd, ev_argv, log, lambda argv: run_command(evaluate.evaluate, argv))
    with open(os.path.join(out, "eval", "eval.json")) as f:
        result = json.load(f)["results"]
    after = greedy(path["final"], eval_q[:N_SHOW] + [q for q, _ in FACTS])
    shown = [{"question": q, "before": b[0], "before_score": rule(*b), "after": a[0], "after_score": rule(*a)}
             for q, b, a in zip(eval_q[:N_SHOW], before, after)]
    facts = [{"question": q, "expected": key, "before": b[0], "after": a[0], "right_after": key in a[0]}
             for (q, key), b, a in zip(FACTS, before[N_SHOW:], after[N_SHOW:])]
    win = result["win_rate"]
    return {"seed": seed, "seconds": round(time.time() - start, 1), "sft_rows": len(rows), "win_rate": win,
            "reward": result["reward"], "kl_per_token": result.get("kl_per_token"), "length": result.get("length"),
            "shown": shown, "facts": facts, "stages": log,
            "passed": win["ci95"][0] > 0.5 and all(f["right_after"] for f in facts)}


# ------------------------------------------------------------------------------------------------ report
def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ") or "(empty)"


def write_report(out: str, r: dict) -> str:
    from utils.evaluation.plots import plot_run

    w = r["win_rate"]
    lines = [f"# Real-model demo: SmolLM2-135M-Instruct learns to answer in one sentence ({r['seconds']:.0f} s, "
             f"seed {r['seed']})", "",
             f"**Win rate of the final model over the starting model: {w['mean']:.3f} [95 % CI {w['ci95'][0]:.3f}, "
             f"{w['ci95'][1]:.3f}]** under the rule (1 / sentences for a finished answer, 0 for one cut off at "
             f"{MAX_NEW_TOKENS} tokens, less for a sentence over {SHORT} words), {N_EVAL} held-out questions x 2 samples per side at temperature 0.7 "
             "(`eval/report.md`). Mean rule reward: start "
             f"{r['reward']['baseline']['mean']:.3f}, final {r['reward']['model']['mean']:.3f}.", "",
             "## Held-out questions, greedy, before and after (rule score in brackets)", "",
             "| question | before | after |", "|---|---|---|"]
    lines += [f"| {s['question']} | {_cell(s['before'])} [{s['before_score']:.2f}] | {_cell(s['after'])} "
              f"[{s['after_score']:.2f}] |" for s in r["shown"]]
    lines += ["", "## Factual questions (still answered right?)", "", "| question | expected | before | after | "
              "right after |", "|---|---|---|---|---|"]
    lines += [f"| {f['question']} | {f['expected']} | {_cell(f['before'])} | {_cell(f['after'])} | "
              f"{'yes' if f['right_after'] else 'NO'} |" for f in r["facts"]]
    lines += ["", "## Stages", "", "| stage | seconds | command |", "|---|---|---|"]
    lines += [f"| {s['stage']} | {s['seconds']:.0f} | `{s['command']}` |" for s in r["stages"]]
    lines += ["", "## Training curves", ""]
    for name in ("sft", "grpo"):
        if os.path.isfile(os.path.join(out, name, "trainer_state.json")):
            png = plot_run(os.path.join(out, name), os.path.join(out, f"curves_{name}.png"), f"{name.upper()} training")
            lines.append(f"![{name}]({os.path.basename(png)})")
    lines += ["", f"Result: {'PASSED' if r['passed'] else 'FAILED'} (the interval's lower end above 0.5 and every "
              "factual answer still right)."]
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(r, f, indent=1)
    return os.path.join(out, "report.md")


def main(out: str, seed: int, train_main) -> int:
    os.makedirs(out, exist_ok=True)
    result = run(out, seed, train_main)
    report = write_report(out, result)
    w = result["win_rate"]
    print(f"\nReal-model demo finished in {result['seconds']:.0f} s: win rate {w['mean']:.3f} "
          f"[{w['ci95'][0]:.3f}, {w['ci95'][1]:.3f}]; factual answers right after: "
          f"{sum(f['right_after'] for f in result['facts'])}/{len(result['facts'])}; report: {report}")
    for s in result["shown"]:
        print(f"\n  Q: {s['question']}\n  before: {s['before']}\n  after:  {s['after']}")
    return 0 if result["passed"] else 1
