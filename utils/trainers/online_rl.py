"""What RLOO, GRPO and PPO share (and Distillation, for sampling in the training's precision): completions written to `output_dir/completions.jsonl`, and reward models placed
on the trainer's device (or in a DeepSpeed inference engine). The reward sources themselves come from
utils/model/rewards.py (`check_reward_sources`, then `RewardSources.build`), for every method alike: a reward model is
called as our `RewardModelScorer`, which scores the decoded text re-encoded with the reward model's own tokenizer
and chat template, where the reward model was trained to give a score (TRL's RewardTrainer appends EOS to plain
strings; TRL's RLOO / GRPO would score plain text without it). tests/test_online_rl.py checks the scores against
scoring the text directly, with two different tokenizers. The EOS mismatch in TRL 1.16: no upstream report found
(searched "GRPO reward model EOS RewardTrainer appends EOS", 2026-12-02); RewardModelScorer.texts can stop appending
EOS when RLOO / GRPO append it themselves."""

from __future__ import annotations

import json
import os

import trl
from torch import nn



# --------------------------------------------------------------------------- completions.jsonl
def write_completions(output_dir: str, step: int, prompts, completions, rewards: dict[str, list],
                      limit: int | None) -> None:
    """Append up to `limit` (None = all) rows {step, prompt, completion, rewards} to output_dir/completions.jsonl."""
    n = len(prompts) if limit is None else min(limit, len(prompts))
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "completions.jsonl"), "a") as f:
        for i in range(n):
            row = {"step": step, "prompt": prompts[i], "completion": completions[i],
                   "rewards": {name: _finite(values[i]) for name, values in rewards.items()}}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _finite(x):
    x = float(x)
    return None if x != x else x  # NaN (a reward function returned None) is not valid JSON


def place_reward_models(trainer) -> None:
    """Every RewardModelScorer's model on the trainer's device, or in a DeepSpeed inference engine (sharded under
    ZeRO-3), as TRL places the reward models it is given."""
    from trl.models import prepare_deepspeed

    for f in trainer.reward_funcs:
        if isinstance(getattr(f, "model", None), nn.Module):
            f.model = (prepare_deepspeed(f.model, trainer.accelerator) if trainer.is_deepspeed_enabled
                       else f.model.to(trainer.accelerator.device))


class CompletionsToFile:
    """Mixin over TRL's RLOO / GRPO trainers: reward models placed (`place_reward_models`); after each training
    log, the completions TRL collected for its own completion tables (`self._logs`, filled whether or not
    `log_completions` is on) are written to completions.jsonl, then dropped so that the next log only writes
    newer ones."""

    def __init__(self, *args, tool_stats=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.tool_stats = tool_stats  # utils.trainers.tools.ToolStats when the run has tools
        place_reward_models(self)

    def log(self, logs, start_time=None):
        if self.tool_stats is not None and self.model.training and "loss" in logs:
            from utils.trainers.tools import tool_metrics

            logs.update(tool_metrics(self.tool_stats, list(self._logs["completion"]), self.accelerator))
        super().log(logs, start_time)
        if not self.model.training or not self._logs["prompt"]:
            return
        if self.accelerator.is_main_process:  # with tools: every rollout, the whole transcript
            write_completions(self.args.output_dir, self.state.global_step, list(self._logs["prompt"]),
                              list(self._logs["completion"]),
                              {name: list(v) for name, v in self._logs["rewards"].items()},
                              None if self.tool_stats is not None else self.args.num_completions_to_print)
        for buffer in self._logs.values():  # deques and dicts of deques alike
            buffer.clear()


class SampleInTrainingPrecision:
    """Mixin over TRL trainers that sample in `_generate_single_turn` (RLOO, GRPO, Distillation): the sampling runs
    under the training's autocast. TRL 1.16 calls `generate` on the unwrapped model, whose own forward is outside
    accelerate's autocast wrapper when the policy is a PEFT model: its float32 adapters then sampled in float32
    (tests/test_precision.py, test_sampling_runs_in_bf16). No upstream report found (searched "GRPO generate
    autocast peft adapter float32 bf16", 2026-12-06); drop when TRL samples under `accelerator.autocast()`."""

    def _generate_single_turn(self, *args, **kwargs):
        with self.accelerator.autocast():
            return super()._generate_single_turn(*args, **kwargs)


class RLOOTrainer(CompletionsToFile, SampleInTrainingPrecision, trl.RLOOTrainer):
    """TRL's RLOOTrainer, plus completions.jsonl, sampling in the training's precision."""


class GRPOTrainer(CompletionsToFile, SampleInTrainingPrecision, trl.GRPOTrainer):
    """TRL's GRPOTrainer, plus completions.jsonl, sampling in the training's precision."""


class DistillationTrainer(SampleInTrainingPrecision, trl.DistillationTrainer):
    """TRL's DistillationTrainer, the student sampling in the training's precision."""
