"""PPO for language models, TRL-shaped: TRL 1.16 has no PPOTrainer (its last one was in 1.11's experimental
package), so this is ours: TRL trainers' kinds of arguments, TRL 1.11's option and metric names, the RL math in
utils/ppo/math.py, the models (critic, reference, shared weights) decided and built in utils/ppo/models.py. It
subclasses transformers.Trainer: logging, checkpoints, resume, DDP / DeepSpeed wrapping are the Trainer's own.

How one rollout batch turns into optimizer steps: the dataloader yields each rollout's prompts
`num_ppo_epochs x num_mini_batches x gradient_accumulation_steps` times (TRL's RepeatSampler). On the
first of those the batch is sampled and scored (`_rollout`); every call then hands the Trainer the
next micro-batch of a per-epoch shuffle, and the Trainer steps the optimizer after each
`gradient_accumulation_steps` of them, i.e. once per mini-batch.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections import defaultdict

import torch
from transformers import GenerationConfig, Trainer
from trl.models import prepare_deepspeed, unwrap_model_for_generation
from trl.trainer.utils import (RepeatSampler, disable_dropout_in_model, entropy_from_logits, identity,
                               selective_log_softmax)

from utils.trainers.online_rl import place_reward_models, write_completions
from utils.ppo.math import (clipped_policy_loss, clipped_value_loss, explained_variance, gae_advantages,
                            kl_penalty_rewards, masked_mean, whiten)
from utils.ppo.rollout import RolloutSampling
from utils.ppo.models import PolicyAndValue, ValueModel, clip_apart, load_checkpoint, save_critic


class PPOTrainer(RolloutSampling, Trainer):
    """PPO with a clipped surrogate, a clipped value loss, GAE and a per-token KL penalty to the reference.

    Args: `model` (causal LM), `args` (rlhf_args.ppo.PPOArgs), `train_dataset` (rows with `prompt` and any
    extra columns for reward functions), `processing_class` (the policy tokenizer), `reward_funcs`
    (callables `f(prompts=, completions=, completion_ids=, trainer_state=, **columns) -> list[float]`),
    `critic` (a ValueModel), `ref_model` (the frozen reference; required in full mode, None with `peft_config`,
    where it is the policy with the adapter off), `peft_config` (the policy's LoRA; None = full fine-tuning).
    utils/ppo_models.build_ppo_models builds `critic` and `ref_model`.
    """

    def __init__(self, model, args, train_dataset, processing_class, reward_funcs, critic: ValueModel,
                 ref_model=None, eval_dataset=None, callbacks=None, peft_config=None):
        self.reward_funcs = list(reward_funcs)
        self.reward_names = [getattr(f, "__name__", type(f).__name__) for f in self.reward_funcs]
        weights = args.reward_weights or [1.0] * len(self.reward_funcs)
        if not self.reward_funcs or len(weights) != len(self.reward_funcs):
            raise ValueError(f"{len(weights)} reward weights for {len(self.reward_funcs)} reward sources; give one "
                             "weight per source (reward models first, then functions).")
        self.reward_weights = torch.tensor(weights, dtype=torch.float32)
        if (ref_model is None) != (peft_config is not None):
            raise ValueError("PPOTrainer takes a ref_model in full fine-tuning and none with a peft_config (the "
                             "reference is then the policy with its adapter off).")
        self.ref_model = None if peft_config is not None else ref_model.eval().requires_grad_(False)
        if peft_config is not None:
            from peft import get_peft_model

            model = get_peft_model(model, peft_config)
        wrapper = PolicyAndValue(model, critic)
        if args.disable_dropout:
            for m in [wrapper, self.ref_model, *[getattr(f, "model", None) for f in self.reward_funcs]]:
                if m is not None:
                    disable_dropout_in_model(m)
        self.rollout_size = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.num_mini_batches
        need = self.rollout_size * args.world_size
        if len(train_dataset) < need:
            raise ValueError(f"the training data has {len(train_dataset)} prompts but one PPO rollout batch needs "
                             f"{need} (per_device_train_batch_size x gradient_accumulation_steps x num_mini_batches "
                             "x processes); add prompts or lower those.")
        super().__init__(model=wrapper, args=args, data_collator=identity, train_dataset=train_dataset,
                         eval_dataset=eval_dataset, processing_class=processing_class, callbacks=callbacks)
        self.model_accepts_loss_kwargs = False  # the loss is a mean per micro-batch; the Trainer divides by GA
        tok = processing_class
        eos = model.generation_config.eos_token_id
        eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        self.eos_token_ids = list(dict.fromkeys([tok.eos_token_id, *eos]))  # every end-of-turn id stops a sample
        self.generation_config = GenerationConfig(
            max_new_tokens=args.max_new_tokens, do_sample=True, temperature=args.temperature, top_p=args.top_p,
            top_k=args.top_k, eos_token_id=self.eos_token_ids, pad_token_id=tok.pad_token_id, use_cache=True)
        device = self.accelerator.device
        if self.ref_model is not None:
            self.ref_model = (prepare_deepspeed(self.ref_model, self.accelerator) if self.is_deepspeed_enabled
                              else self.ref_model.to(device))
        place_reward_models(self)
        self._metrics = defaultdict(list)
        self._buffer, self._order, self._micro = None, None, None
        self._episodes, self._start = 0, time.time()

    # ------------------------------------------------------------------------------------- data
    def _get_train_sampler(self, dataset=None):
        a = self.args
        return RepeatSampler(dataset if dataset is not None else self.train_dataset, mini_repeat_count=1,
                             batch_size=self.rollout_size * a.world_size, shuffle=True, seed=a.seed,
                             repeat_count=a.num_ppo_epochs * a.num_mini_batches * a.gradient_accumulation_steps)

    def get_train_dataloader(self):
        # Each item is one whole rollout batch of prompts (this process's share); see the module docstring.
        return self._get_dataloader(dataset=self.train_dataset, description="Training", batch_size=self.rollout_size,
                                    sampler_fn=self._get_train_sampler, is_training=True)

    def _prepare_inputs(self, rows):
        a = self.args
        per_pass = a.num_mini_batches * a.gradient_accumulation_steps
        if self._micro is None:  # first call, possibly after resume_from_checkpoint
            self._micro = self.state.global_step * a.gradient_accumulation_steps
            rollouts_done = self.state.global_step // (a.num_ppo_epochs * a.num_mini_batches)
            self._episodes = rollouts_done * self.rollout_size * a.world_size
        k = self._micro % (a.num_ppo_epochs * per_pass)
        if k == 0 or self._buffer is None:  # a new rollout (after a resume mid-rollout, a fresh one)
            self._buffer = self._rollout(rows)
        if k % per_pass == 0 or self._order is None:  # a new PPO epoch: a new shuffle
            self._order = torch.randperm(self.rollout_size, device=self.accelerator.device)
        j = k % per_pass
        idx = self._order[j * a.per_device_train_batch_size:(j + 1) * a.per_device_train_batch_size]
        self._micro += 1
        return {key: value[idx] for key, value in self._buffer.items()}

    # ---------------------------------------------------------------------------------- rollout
    @torch.no_grad()
    def _rollout(self, rows):
        a = self.args
        # The rollout (sampling, log-probs, values, the reference) computes in the training's precision (bf16 / fp16
        # autocast), as the policy's own forward in compute_loss does: the ratios start at 1 and the KL at 0.
        with unwrap_model_for_generation(self.model_wrapped, self.accelerator,
                                         gradient_checkpointing_kwargs=a.activation_checkpointing_kwargs) as unwrapped, \
                self.accelerator.autocast():
            unwrapped.eval()
            s = self._sample_and_score(rows, unwrapped.policy)
            query_responses = torch.cat([s["prompt_ids"], s["responses"]], 1)
            attention_mask = torch.cat([s["prompt_mask"], s["response_mask"].long()], 1)
            length, chunk = s["responses"].shape[1], a.local_rollout_forward_batch_size
            logprobs, values = self._token_logprobs(unwrapped, query_responses, attention_mask, length, chunk)
            ref = unwrapped.policy if self.ref_model is None else self.ref_model
            # LoRA: the reference is the policy with its adapter switched off
            with ref.disable_adapter() if self.ref_model is None else contextlib.nullcontext():
                ref_logprobs, _ = self._token_logprobs(ref, query_responses, attention_mask, length, chunk)
            unwrapped.train()
        mask = s["response_mask"].float()
        rewards, kl = kl_penalty_rewards(logprobs, ref_logprobs, mask, s["scores"], a.kl_coef, a.kl_estimator)
        if a.whiten_rewards:
            rewards = whiten(rewards, mask, shift_mean=False)
        advantages, returns = gae_advantages(values, rewards, mask, a.gamma, a.lam)
        if a.whiten_advantages:
            advantages = whiten(advantages, mask)
        self._log_rollout(s, mask, logprobs, kl, values, returns)
        return dict(query_responses=query_responses, attention_mask=attention_mask, responses=s["responses"],
                    response_mask=mask, logprobs=logprobs * mask, values=values * mask, returns=returns,
                    advantages=advantages)

    def _log_rollout(self, s, mask, logprobs, kl, values, returns):
        a, gather, m = self.args, self.accelerator.gather, self._metrics
        scores, kl_sum = gather(s["scores"]), gather(kl.sum(1))
        non_score = gather((-a.kl_coef * kl).sum(1))
        self._episodes += len(scores)
        m["eps"].append(self._episodes / max(time.time() - self._start, 1e-6))
        m["episode"].append(self._episodes)
        m["objective/kl"].append(kl_sum.mean().item())
        m["objective/entropy"].append(gather((-logprobs * mask).sum(1)).mean().item())
        m["objective/non_score_reward"].append(non_score.mean().item())
        m["objective/rlhf_reward"].append((scores + non_score).mean().item())
        m["objective/scores"].append(scores.mean().item())
        per_source = gather(s["per_source"])
        for i, name in enumerate(self.reward_names):
            col = per_source[:, i][~per_source[:, i].isnan()]
            m[f"rewards/{name}/mean"].append(col.mean().item() if len(col) else float("nan"))
            m[f"rewards/{name}/std"].append(col.std().item() if len(col) > 1 else 0.0)
        m["completions/mean_length"].append(gather(mask.sum(1)).mean().item())
        m["completions/clipped_ratio"].append(1.0 - gather(s["contains_eos"].float()).mean().item())
        m["val/num_eos_tokens"].append(gather(s["contains_eos"].float()).sum().item())
        m["val/explained_variance"].append(explained_variance(values, returns, mask).item())
        if self.accelerator.is_main_process:
            write_completions(a.output_dir, self.state.global_step, s["prompts"], s["completions"],
                              {"score": s["scores"].tolist(), **{n: s["per_source"][:, i].tolist()
                                                                 for i, n in enumerate(self.reward_names)}},
                              a.num_completions_to_print)

    # ------------------------------------------------------------------------------------- loss
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        a, m = self.args, self._metrics
        length, mask = inputs["responses"].shape[1], inputs["response_mask"]
        logits, values = model(inputs["query_responses"], inputs["attention_mask"], logits_to_keep=length + 1)
        logits = logits[:, :-1].float() / a.temperature  # fp32 log-softmax whatever the compute dtype
        logprobs = selective_log_softmax(logits, inputs["responses"])
        values = values[:, -length - 1:-1]
        pg_loss, pg_clipfrac, approxkl, ratio = clipped_policy_loss(logprobs, inputs["logprobs"],
                                                                    inputs["advantages"], mask, a.cliprange)
        vf_loss, vf_clipfrac = clipped_value_loss(values, inputs["values"], inputs["returns"], mask,
                                                  a.cliprange_value)
        loss = pg_loss + a.vf_coef * vf_loss
        with torch.no_grad():
            m["policy/entropy_avg"].append(masked_mean(entropy_from_logits(logits), mask).item())
            m["policy/approxkl_avg"].append(approxkl.item())
            m["policy/clipfrac_avg"].append(pg_clipfrac.item())
            m["loss/policy_avg"].append(pg_loss.item())
            m["loss/value_avg"].append(vf_loss.item())
            m["val/clipfrac_avg"].append(vf_clipfrac.item())
            m["val/ratio"].append(masked_mean(ratio, mask).item())
            m["val/ratio_var"].append(masked_mean((ratio - masked_mean(ratio, mask)) ** 2, mask).item())
        return (loss, None) if return_outputs else loss

    def log(self, logs, start_time=None):
        # Averages since the last log, across processes (every process records the same keys).
        if self._metrics:
            keys = sorted(self._metrics)
            local = torch.tensor([sum(self._metrics[k]) / len(self._metrics[k]) for k in keys],
                                 device=self.accelerator.device)
            means = self.accelerator.reduce(local, reduction="mean").tolist()
            logs.update({k: v for k, v in zip(keys, means) if k != "episode"})
            logs["episode"] = self._episodes
            self._metrics.clear()
        super().log(logs, start_time)

    # ------------------------------------------------------------------------------- evaluation
    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        """Sample one completion per evaluation prompt and report the mean score and rewards per source."""
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        rows, step = list(dataset), self.args.local_rollout_forward_batch_size
        parts = []
        with unwrap_model_for_generation(self.model_wrapped, self.accelerator) as unwrapped:
            was_training = unwrapped.training
            unwrapped.eval()
            for i in range(0, len(rows), step):
                parts.append(self._sample_and_score(rows[i:i + step], unwrapped.policy))
            unwrapped.train(was_training)
        scores = torch.cat([p["scores"] for p in parts])
        per_source = torch.cat([p["per_source"] for p in parts])
        lengths = torch.cat([p["response_mask"].sum(1) for p in parts]).float()
        metrics = {f"{metric_key_prefix}_objective/scores": scores.mean().item(),
                   f"{metric_key_prefix}_completions/mean_length": lengths.mean().item()}
        for i, name in enumerate(self.reward_names):
            metrics[f"{metric_key_prefix}_rewards/{name}/mean"] = per_source[:, i].nanmean().item()
        Trainer.log(self, metrics)  # not self.log: the training metrics being collected stay for the next train log
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    # ------------------------------------------------------------------------- saving / resuming
    def _save(self, output_dir=None, state_dict=None):
        """The policy is saved as every method saves its model (full weights, or the adapter), so that
        from_pretrained loads output_dir; the critic goes to output_dir/critic (needed to resume)."""
        output_dir = output_dir or self.args.output_dir
        wrapper = self.model
        parts = {}
        if state_dict is not None:  # DeepSpeed / FSDP gathered the wrapper's state dict
            for key, value in state_dict.items():
                part, _, rest = key.partition(".")
                parts.setdefault(part, {})[rest] = value
        try:
            self.model = wrapper.policy
            super()._save(output_dir, parts.get("policy"))
        finally:
            self.model = wrapper
        if self.args.should_save:
            save_critic(wrapper.critic, os.path.join(output_dir, "critic"), parts.get("critic", {}))

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        load_checkpoint(self.accelerator.unwrap_model(self.model), resume_from_checkpoint)

    def _clip_grad_norm(self, model):
        if self.is_deepspeed_enabled or self._has_mixed_mesh_grads(model):  # DeepSpeed clips in its engine
            return super()._clip_grad_norm(model)
        self.accelerator.unscale_gradients()
        norms = clip_apart(self.accelerator.unwrap_model(model), self.args.max_grad_norm)
        for name, norm in norms.items():
            self._metrics[f"{name}/grad_norm"].append(norm)
        return torch.tensor(math.sqrt(sum(n * n for n in norms.values())))  # the joint norm, as the Trainer logs
