"""Glue for online RL (RLOO, GRPO, PPO): reward sources from the command line (Method.extras), PPO's
critic, and a sample of completions written to `output_dir/completions.jsonl` by every method.

Reward sources, in this order (the order of `--reward_weights`): every `--reward_model_path`, then
every `--reward_funcs`. A reward model scores the *decoded text* of prompt + completion, re-encoded
with its own tokenizer and chat template, so it need not share the policy's tokenizer:
every method calls `utils.rewards.RewardModelScorer` as a reward function, so that all of them read a score
where the reward model was trained to give one (TRL's RewardTrainer appends EOS to plain-string rows; TRL's
RLOO / GRPO would score a reward model on plain text without it), and `place_reward_models` puts its model
on the device or, under DeepSpeed, in an inference engine (ZeRO-3 shards it), as TRL does for its own.
tests/test_online_rl.py checks the scores against scoring the text directly, with two different tokenizers."""

from __future__ import annotations

import copy
import json
import os

import trl
from torch import nn

from utils.errors import UserError
from utils.rewards import CheckedRewardFunction, RewardModelScorer


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

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        place_reward_models(self)

    def log(self, logs, start_time=None):
        super().log(logs, start_time)
        if not self.model.training or not self._logs["prompt"]:
            return
        if self.accelerator.is_main_process:
            write_completions(self.args.output_dir, self.state.global_step, list(self._logs["prompt"]),
                              list(self._logs["completion"]),
                              {name: list(v) for name, v in self._logs["rewards"].items()},
                              self.args.num_completions_to_print)
        for buffer in self._logs.values():  # deques and dicts of deques alike
            buffer.clear()


class RLOOTrainer(CompletionsToFile, trl.RLOOTrainer):
    """TRL's RLOOTrainer, plus completions.jsonl."""


class GRPOTrainer(CompletionsToFile, trl.GRPOTrainer):
    """TRL's GRPOTrainer, plus completions.jsonl."""


# ------------------------------------------------------------------------------ PPO's critic
class ValueModel(nn.Module):
    """The critic: a transformer backbone's last hidden state -> one scalar value per position."""

    def __init__(self, backbone: nn.Module, head: nn.Linear):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, input_ids, attention_mask, position_ids):
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                               use_cache=False).last_hidden_state
        return self.head(hidden.to(self.head.weight.dtype)).squeeze(-1).float()


def _share_weights(module: nn.Module) -> nn.Module:
    """A second module tree over the same parameter and buffer tensors: no weight is copied. A LoRA adapter
    injected into the copy leaves the original untouched, which is how the critic gets its own adapter over
    the policy's (or the reward model's) frozen weights without peft's single-active-adapter switching,
    which activation checkpointing would replay with the wrong adapter during backward."""
    memo = {id(t): t for t in [*module.parameters(), *module.buffers()]}
    return copy.deepcopy(module, memo)


def build_critic(source: nn.Module, peft_config, share: bool) -> ValueModel:
    """Backbone + value head from `source` (a causal LM or a sequence-classification model). The head is a copy
    of the source's `score` head if it has one, else a new zero-initialised one (values start at 0). With
    `peft_config` the backbone stays frozen under its own LoRA adapter; `share` (the source is also the policy
    or a reward model) puts that adapter on a second module tree over the source's own weight tensors."""
    backbone = getattr(source, source.base_model_prefix)
    head = getattr(source, "score", None)
    if head is None:
        weight = backbone.get_input_embeddings().weight
        head = nn.Linear(backbone.config.hidden_size, 1, bias=False, device=weight.device, dtype=weight.dtype)
        nn.init.zeros_(head.weight)
    elif share:
        head = copy.deepcopy(head)
    if peft_config is not None:
        from peft import get_peft_model

        critic_config = copy.deepcopy(peft_config)
        critic_config.task_type, critic_config.modules_to_save = None, None  # a bare backbone: no LM / score head
        backbone = get_peft_model(_share_weights(backbone) if share else backbone, critic_config)
    return ValueModel(backbone, head.requires_grad_(True))


# ------------------------------------------------------------------------------ Method.extras
def _functions(common) -> list:
    return [CheckedRewardFunction(spec) for spec in common.reward_funcs]


def reward_kwargs(common, config, tokenizer, dtype) -> dict:
    """Method.extras for RLOO / GRPO: `reward_funcs`, reward models (RewardModelScorer, each with its own
    tokenizer) then checked Python functions."""
    functions = _functions(common)  # imported first: a bad module fails in seconds, before any model loads
    scorers = [RewardModelScorer(path, dtype, config.trust_remote_code) for path in common.reward_model_path]
    return {"reward_funcs": scorers + functions}


def ppo_kwargs(common, config, tokenizer, dtype) -> dict:
    """Method.extras for PPO: `reward_funcs` (RewardModelScorer and checked functions, called by our
    PPOTrainer), `value_model`, the model the critic starts from (None = the policy itself), and in `full`
    mode `ref_model`, the frozen reference.

    The critic reads the policy's tokens, so it must share the policy's tokenizer. Its default is the
    first reward model that does (the usual RLHF choice: its score head already values text), else
    the policy. In `lora` / `qlora` mode the critic is a LoRA adapter over that model's frozen weights,
    shared in memory with the reward model or the policy (utils/ppo_trainer.py); in `full` mode it is a
    trainable copy. Copies are loaded from disk, not deep-copied: under DeepSpeed ZeRO-3 a loaded model
    is already sharded, and a deep copy of shards is no model.
    """
    from transformers.integrations import is_deepspeed_zero3_enabled

    from utils.models import load_model, load_tokenizer

    functions = _functions(common)
    trust = config.trust_remote_code
    scorers = [RewardModelScorer(path, dtype, trust) for path in common.reward_model_path]
    n_sources = len(scorers) + len(functions)
    if config.reward_weights is not None and len(config.reward_weights) != n_sources:
        raise UserError(f"--reward_weights has {len(config.reward_weights)} values for {n_sources} reward sources "
                        "(reward models first, then functions); give one weight per source.")
    vocab = tokenizer.get_vocab()
    path = config.value_model_path
    if path is None:
        shared = next((s for s in scorers if s.tokenizer.get_vocab() == vocab), None)
        path = shared.path if shared else None
    elif load_tokenizer(path, trust).get_vocab() != vocab:
        raise UserError(f"--value_model_path {path!r} does not use the policy's tokenizer. The critic assigns a "
                        "value to every policy token, so it must read the same token ids; pick a model of the "
                        "policy's family (a reward model may use any tokenizer, the critic may not).")
    full = common.train_mode == "full"
    out = {"reward_funcs": scorers + functions, "value_model": None}
    if full:
        out["ref_model"] = load_model(common.model_name_or_path, tokenizer, dtype=dtype, trust_remote_code=trust)
    if path is None and full:  # a trainable copy of the policy's backbone
        out["value_model"] = load_model(common.model_name_or_path, tokenizer, dtype=dtype, trust_remote_code=trust)
    elif path is not None:
        scorer = next((s for s in scorers if os.path.normpath(s.path) == os.path.normpath(path)), None)
        # Under ZeRO-3 the reward model's shards belong to its own inference engine: the critic gets its own.
        if scorer is not None and not full and not is_deepspeed_zero3_enabled():
            out["value_model"] = scorer.model  # the critic's adapter goes over the reward model's frozen weights
        else:  # never quantised: a separate critic is small or trained in full, and its score head trains
            out["value_model"] = load_model(path, load_tokenizer(path, trust), head="score", dtype=dtype,
                                            trust_remote_code=trust)
    return out
