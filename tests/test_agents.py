"""Agents on CPU (utils/toy/tool_task.py): a tiny Qwen3-family model is first trained (SFT) on transcripts that call a
calculator tool, then GRPO calls the tool while it samples (--tools), with a correctness reward. What is shown: tools
are called and their results reach the model (its answers quote them), the reward rises, a tool that raises or hangs
goes back to the model as an error and is counted, an environment class works as a tool source and owns the reward,
every rollout's transcript lands in completions.jsonl, and `utils.evaluate --tools` measures it all on held-out
prompts. Mistakes are refused before any weights load."""

from __future__ import annotations

import json
import re

import pytest

from conftest import log_history, run_cli, run_main

GRPO = ["--rlhf_type", "GRPO", "--train_mode", "full", "--num_generations", "8", "--max_completion_length", "128",
        "--max_tool_calling_iterations", "2", "--save_strategy", "no", "--disable_tqdm", "true", "--seed", "0"]

BROKEN_TOOLS = '''
import time

CALLS = []


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: The first integer.
        b: The second integer.
    """
    CALLS.append(1)
    if len(CALLS) % 2:
        time.sleep(30)  # every other call hangs
    raise ValueError("the adder is out of order")
'''

ENVIRONMENT = '''
class Adder:
    """One episode: the question's numbers; `add` is the tool; the reward says whether it was called with them."""

    def reset(self, prompt, answer, **_):
        self.answer, self.called_right = int(answer), False

    def add(self, a: int, b: int) -> int:
        """Add two integers.

        Args:
            a: The first integer.
            b: The second integer.
        """
        self.called_right = self.called_right or int(a) + int(b) == self.answer
        return int(a) + int(b)

    def get_reward(self) -> float:
        return 1.0 if self.called_right else 0.0
'''


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    """The task's files and a tiny model trained on 400 transcripts, 70 % of which call the tool."""
    from utils.toy import tool_task

    root = tmp_path_factory.mktemp("agents")
    files = tool_task.write(str(root / "data"), call_share=0.7)
    base = tool_task.make_model(str(root / "base"))
    sft = root / "sft"
    run_cli("--rlhf_type", "SFT", "--train_mode", "full", "--model_name_or_path", base, "--train_data_path",
            files["sft"], "--tools", "utils.toy.tool_task:add", "--output_dir", sft, "--num_train_epochs", "16",
            "--learning_rate", "1e-2", "--per_device_train_batch_size", "8", "--save_strategy", "no",
            "--disable_tqdm", "true")
    return {"root": root, "model": sft, "sft_data": files["sft"], "prompts": files["prompts"],
            "heldout": files["heldout"]}


def _evaluate(task, model, out, *extra):
    run_cli("--model_name_or_path", model, "--baseline_model_name_or_path", task["model"], "--eval_data_path",
            task["heldout"], "--reward_funcs", "utils.toy.tool_task:correct", "--tools", "utils.toy.tool_task:add",
            "--num_samples", "4", "--max_new_tokens", "64", "--output_dir", out, *extra, module="utils.evaluate")
    return json.loads((out / "eval.json").read_text())["results"]


def test_grpo_with_a_tool_learns_to_call_it(task):
    out = task["root"] / "grpo"
    run_cli("--model_name_or_path", task["model"], "--train_data_path", task["prompts"], "--tools",
            "utils.toy.tool_task:add", "--reward_funcs", "utils.toy.tool_task:correct", "--output_dir", out,
            "--max_steps", "48", "--learning_rate", "4e-4", "--per_device_train_batch_size", "32", *GRPO,
            "--evaluate_after", "true", "--eval_prompts_path", task["heldout"])
    logs = [h for h in log_history(out) if "reward" in h]
    rewards = [h["reward"] for h in logs]
    calls = [h["tools/call_frequency"] for h in logs]
    first, last = sum(rewards[:8]) / 8, sum(rewards[-8:]) / 8
    assert last > first + 0.1, rewards  # the reward rises
    assert sum(calls[-8:]) / 8 > sum(calls[:8]) / 8, calls  # by calling the tool more often
    assert all(h["tools/timeouts"] == 0 for h in logs)  # (a call with malformed arguments raises: an error)
    assert sum(h["tools/errors"] for h in logs) < 0.05 * sum(h["tools/call_frequency"] * 32 for h in logs)
    assert max(h["tools/turns"] for h in logs) > 1.5  # assistant turns per completion: call, then answer

    # Every rollout's transcript: the call, the tool's result, an answer that quotes it, the reward.
    rows = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    assert len(rows) == 48 * 32
    called = [r for r in rows if len(r["completion"]) > 1 and r["completion"][0].get("tool_calls")]
    assert len(called) > len(rows) / 2
    quoted = 0
    for r in called:
        call, result, answer = r["completion"][0]["tool_calls"][0]["function"], r["completion"][1], r["completion"][-1]
        assert result["role"] == "tool"
        args = call["arguments"]
        if "error" in result["content"]:  # arguments the tool refused: the model reads why
            assert not ({"a", "b"} <= set(args) and all(str(v).isdigit() for v in args.values())), r
            continue
        assert result["content"] == str(int(args["a"]) + int(args["b"]))  # the tool's own result, as returned
        quoted += result["content"] in re.findall(r"\d+", answer["content"])
        assert set(r["rewards"]) == {"correct"}
    assert quoted > 0.8 * len(called)  # the results reach the model: it answers with them

    # The same on held-out prompts, through the evaluation: the trained model beats where it started, measured
    # with the tools by `utils.evaluate --tools` and by `--evaluate_after` (which passes --tools on).
    for results in (_evaluate(task, out, task["root"] / "eval"),
                    json.loads((out / "eval" / "eval.json").read_text())["results"]):
        assert results["reward"]["difference"]["mean"] > 0.1, results["reward"]
        assert results["tools"]["model"]["call_rate"] > results["tools"]["baseline"]["call_rate"] + 0.2
        assert results["tools"]["model"]["failure_rate"] < 0.05


def test_a_tool_that_raises_or_hangs_goes_back_to_the_model(task, tmp_path):
    tools = tmp_path / "broken.py"
    tools.write_text(BROKEN_TOOLS)
    out = tmp_path / "grpo"
    run_cli("--model_name_or_path", task["model"], "--train_data_path", task["prompts"], "--tools", f"{tools}:add",
            "--reward_funcs", "utils.toy.tool_task:correct", "--tool_timeout", "0.5", "--output_dir", out,
            "--max_steps", "2", "--learning_rate", "1e-5", "--per_device_train_batch_size", "16", *GRPO, timeout=300)
    logs = [h for h in log_history(out) if "reward" in h]
    assert sum(h["tools/errors"] for h in logs) > 0 and sum(h["tools/timeouts"] for h in logs) > 0
    assert all(h["tools/failure_frequency"] == 1.0 for h in logs if h["tools/call_frequency"] > 0)
    results = [m["content"] for line in (out / "completions.jsonl").read_text().splitlines()
               for m in json.loads(line)["completion"] if m["role"] == "tool"]
    assert any("the adder is out of order" in c for c in results)
    assert any("did not return within 0.5 s" in c for c in results)


def test_environment_owns_tools_and_reward(task, tmp_path):
    env = tmp_path / "adder_env.py"
    env.write_text(ENVIRONMENT)
    out = tmp_path / "grpo_env"
    run_cli("--model_name_or_path", task["model"], "--train_data_path", task["prompts"], "--environment",
            f"{env}:Adder", "--output_dir", out, "--max_steps", "2", "--learning_rate", "1e-5",
            "--per_device_train_batch_size", "16", *GRPO)
    logs = [h for h in log_history(out) if "reward" in h]
    assert all("rewards/Adder/mean" in h for h in logs)
    assert sum(h["rewards/Adder/mean"] for h in logs) > 0  # called with the question's numbers, per the episode
    assert sum(h["tools/call_frequency"] for h in logs) > 0


def test_tool_mistakes_refused_before_any_weights_load(task, tmp_path, capsys):
    def refused(*args):  # in this process (main_train.main), as test_option_checks does
        out = tmp_path / "never"
        capsys.readouterr()
        assert run_main(*args, "--output_dir", out) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and not out.exists()
        return err

    common = ["--model_name_or_path", task["model"], "--train_data_path", task["prompts"], "--reward_funcs",
              "utils.toy.tool_task:correct"]
    assert "TRL's RLOOTrainer (1.16) has no tool-calling loop" in refused(
        "--rlhf_type", "RLOO", *common, "--tools", "utils.toy.tool_task:add")
    assert "--environment given to --rlhf_type SFT" in refused(
        "--rlhf_type", "SFT", "--model_name_or_path", task["model"], "--train_data_path", task["sft_data"],
        "--environment", "utils.toy.tool_task:add")
    assert "without tools" in refused("--rlhf_type", "GRPO", *common, "--max_tool_calling_iterations", "2")
    assert "--max_tool_calling_iterations 0 is out of range" in refused(
        "--rlhf_type", "GRPO", *common, "--tools", "utils.toy.tool_task:add", "--max_tool_calling_iterations", "0")
    assert "--tool_timeout 0.0 is out of range" in refused(
        "--rlhf_type", "GRPO", *common, "--tools", "utils.toy.tool_task:add", "--tool_timeout", "0")
    nodoc = tmp_path / "nodoc.py"
    nodoc.write_text("def add(a, b):\n    return a + b\n\n\nclass NoReset:\n    def add(self, a: int) -> int:\n"
                     "        return a\n")
    assert "no tool schema can be made from 'add'" in refused("--rlhf_type", "GRPO", *common, "--tools",
                                                               f"{nodoc}:add")
    assert "has no `reset` method" in refused("--rlhf_type", "GRPO", *common, "--environment", f"{nodoc}:NoReset")
    assert "has no class 'nothing'" in refused("--rlhf_type", "GRPO", *common, "--environment",
                                               "utils.toy.tool_task:nothing")
    from utils.toy.families import make_family

    plain = make_family("llama3", str(tmp_path / "llama3"))  # Llama-3's template renders no tool calls
    assert "cannot render a tool-calling exchange" in refused(
        "--rlhf_type", "GRPO", "--model_name_or_path", plain, "--train_data_path", task["prompts"], "--reward_funcs",
        "utils.toy.tool_task:correct", "--tools", "utils.toy.tool_task:add")


def test_fewer_prompts_than_one_batch_refused(task, tmp_path, capsys):
    """GRPO samples whole batches of distinct prompts: 5 rows and 8 prompts per batch would train nothing (TRL's
    sampler yields no batch); refused with the numbers, exit 2, no output_dir."""
    five = tmp_path / "five.jsonl"
    five.write_text("".join(open(task["prompts"]).readlines()[:5]))
    out = tmp_path / "never"
    assert run_main("--rlhf_type", "GRPO", "--model_name_or_path", task["model"], "--train_data_path", five,
                    "--reward_funcs", "utils.toy.tool_task:correct", "--per_device_train_batch_size", "16",
                    "--num_generations", "2", "--output_dir", out) == 2
    err = capsys.readouterr().err
    assert "GRPO samples 8 distinct prompts per batch" in err and "has 5 rows" in err, err
    assert not out.exists()
