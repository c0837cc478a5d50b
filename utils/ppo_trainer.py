"""PPO for language models, TRL-shaped: TRL 1.16 has no PPOTrainer (its last one was in 1.11's
experimental package), so this is ours. Same kinds of arguments as TRL trainers (model, args,
datasets, processing_class, reward_funcs, peft_config), TRL 1.11's option and metric names, and the
RL math in utils/ppo_math.py. It subclasses transformers.Trainer, so logging, checkpoints,
`resume_from_checkpoint`, DDP / DeepSpeed wrapping and `save_model` are the Trainer's own.

Models held, per mode (loaded by utils.online_rl.ppo_kwargs):
  full         policy (trained), reference (frozen copy), critic (trained copy of the first reward model that
               shares the policy's tokenizer, else of the policy, with a value head), reward model(s) (frozen).
  lora/qlora   ONE copy of the policy's weights (4-bit in qlora): the policy is its LoRA adapter, the reference
               is the same model with the adapter switched off, and the critic is a second module tree over
               the same frozen tensors (of the policy, or of the reward model it starts from) with its own LoRA
               adapter and value head: no weight is duplicated. Reward model(s) are frozen. A separate critic
               is loaded only for a `--value_model_path` that is neither (a small model of the policy's
               family), or under ZeRO-3 for a reward-model critic (each model then has its own shards).

How one rollout batch turns into optimizer steps: the dataloader yields each rollout's prompts
`num_ppo_epochs x num_mini_batches x gradient_accumulation_steps` times (TRL's RepeatSampler). On the
first of those the batch is sampled and scored (`_rollout`); every call then hands the Trainer the
next micro-batch of a per-epoch shuffle, and the Trainer steps the optimizer after each
`gradient_accumulation_steps` of them, i.e. once per mini-batch.
"""

from __future__ import annotations

import contextlib
import copy
import os
import time
from collections import defaultdict

import torch
from accelerate.utils import is_peft_model
from torch import nn
from transformers import GenerationConfig, Trainer, set_seed
from trl.models import prepare_deepspeed, unwrap_model_for_generation
from trl.trainer.utils import (RepeatSampler, disable_dropout_in_model, entropy_from_logits, identity,
                               selective_log_softmax)

from utils.online_rl import ValueModel, build_critic, place_reward_models, write_completions
from utils.ppo_math import (clipped_policy_loss, clipped_value_loss, explained_variance, gae_advantages,
                            kl_penalty_rewards, masked_mean, whiten)


class PolicyAndValue(nn.Module):
    """Policy and critic as one module, so that one optimizer, one DDP / DeepSpeed engine and one
    backward pass cover both (as TRL 1.11's PolicyAndValueWrapper)."""

    def __init__(self, policy: nn.Module, critic: ValueModel):
        super().__init__()
        self.policy, self.critic = policy, critic

    def forward(self, input_ids, attention_mask, logits_to_keep: int = 0):
        # Positions count real tokens only, as generate() does for left-padded prompts.
        position_ids = (attention_mask.cumsum(1) - 1).clamp(min=0)
        logits = self.policy(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             logits_to_keep=logits_to_keep, use_cache=False).logits
        return logits, self.critic(input_ids, attention_mask, position_ids)

    # Trainer and TRL's unwrap_model_for_generation switch checkpointing through these names.
    def activation_checkpointing_enable(self, activation_checkpointing_kwargs=None, **kwargs):
        for m in (self.policy, self.critic.backbone):
            m.activation_checkpointing_enable(activation_checkpointing_kwargs=activation_checkpointing_kwargs, **kwargs)

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None, **kwargs):
        self.activation_checkpointing_enable(gradient_checkpointing_kwargs, **kwargs)

    def gradient_checkpointing_disable(self):
        for m in (self.policy, self.critic.backbone):
            m.activation_checkpointing_disable()

    @property
    def is_gradient_checkpointing(self) -> bool:
        return any(getattr(m, "gradient_checkpointing", False) for m in self.modules())


class PPOTrainer(Trainer):
    """PPO with a clipped surrogate, a clipped value loss, GAE and a per-token KL penalty to the reference.

    Args: `model` (causal LM), `args` (rlhf_args.ppo.PPOArgs), `train_dataset` (rows with `prompt` and any
    extra columns for reward functions), `processing_class` (the policy tokenizer), `reward_funcs`
    (callables `f(prompts=, completions=, completion_ids=, trainer_state=, **columns) -> list[float]`),
    `value_model` (critic initialisation; None = the policy), `ref_model` (full mode: the frozen reference;
    None = a copy of `model`), `peft_config` (LoRA for policy and critic; None = full fine-tuning).
    """

    def __init__(self, model, args, train_dataset, processing_class, reward_funcs, value_model=None, ref_model=None,
                 eval_dataset=None, callbacks=None, peft_config=None):
        set_seed(args.seed)  # before any adapter or value head is initialised, as TRL's trainers do
        self.reward_funcs = list(reward_funcs)
        self.reward_names = [getattr(f, "__name__", type(f).__name__) for f in self.reward_funcs]
        weights = args.reward_weights or [1.0] * len(self.reward_funcs)
        if not self.reward_funcs or len(weights) != len(self.reward_funcs):
            raise ValueError(f"{len(weights)} reward weights for {len(self.reward_funcs)} reward sources; give one "
                             "weight per source (reward models first, then functions).")
        self.reward_weights = torch.tensor(weights, dtype=torch.float32)
        # Full fine-tuning needs separate reference and critic models; main_train loads them (utils.online_rl), the
        # deep copies are for callers that pass none (not under ZeRO-3, where a loaded model is already sharded).
        if peft_config is None:
            ref_model = ref_model if ref_model is not None else copy.deepcopy(model)
            value_model = value_model if value_model is not None else copy.deepcopy(model)
        shared = value_model is None or any(getattr(f, "model", None) is value_model for f in self.reward_funcs)
        # Before the policy gets its adapter, so that a critic sharing the policy's weights has none of it.
        critic = build_critic(value_model if value_model is not None else model, peft_config, share=shared)
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
    def _tokenize_prompts(self, prompts):
        """Left-padded prompt ids and mask; prompts longer than max_prompt_length keep their last tokens."""
        tok = self.processing_class
        if isinstance(prompts[0], list):  # conversational: the chat template, ready for the assistant's turn
            ids = tok.apply_chat_template(prompts, add_generation_prompt=True, tokenize=True, return_dict=True)
            ids = ids["input_ids"]
        else:
            ids = tok(text=prompts)["input_ids"]
        if self.args.max_prompt_length:
            ids = [x[-self.args.max_prompt_length:] for x in ids]
        width = max(len(x) for x in ids)
        input_ids = torch.tensor([[tok.pad_token_id] * (width - len(x)) + list(x) for x in ids])
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids])
        return input_ids.to(self.accelerator.device), mask.to(self.accelerator.device)

    @torch.no_grad()
    def _sample_and_score(self, rows, policy):
        """Sample one completion per prompt (stopping at EOS), cut it after its first EOS, and score it."""
        prompts = [r["prompt"] for r in rows]
        columns = {k: [r[k] for r in rows] for k in rows[0] if k != "prompt"}
        prompt_ids, prompt_mask = self._tokenize_prompts(prompts)
        width, step = prompt_ids.shape[1], self.args.local_rollout_forward_batch_size
        chunks = [policy.generate(input_ids=prompt_ids[i:i + step], attention_mask=prompt_mask[i:i + step],
                                  generation_config=self.generation_config)[:, width:]
                  for i in range(0, len(rows), step)]
        pad = self.processing_class.pad_token_id
        length = max(c.shape[1] for c in chunks)
        responses = torch.cat([nn.functional.pad(c, (0, length - c.shape[1]), value=pad) for c in chunks])
        is_eos = torch.isin(responses, torch.tensor(self.eos_token_ids, device=responses.device))
        contains_eos = is_eos.any(1)
        first_eos = torch.where(contains_eos, is_eos.int().argmax(1), length)
        response_mask = torch.arange(length, device=responses.device)[None] <= first_eos[:, None]
        responses = responses.masked_fill(~response_mask, pad)
        texts = self.processing_class.batch_decode(responses, skip_special_tokens=True)
        completions = [[{"role": "assistant", "content": t}] for t in texts] if isinstance(prompts[0], list) else texts
        completion_ids = [r[m].tolist() for r, m in zip(responses, response_mask)]
        per_source = torch.full((len(rows), len(self.reward_funcs)), float("nan"))
        for i, f in enumerate(self.reward_funcs):
            out = f(prompts=prompts, completions=completions, completion_ids=completion_ids,
                    trainer_state=self.state, log_metric=lambda name, value: self._metrics[name].append(value),
                    log_extra=lambda column, values: None, **columns)
            per_source[:, i] = torch.tensor([float("nan") if v is None else float(v) for v in out])
        per_source = per_source.to(responses.device)
        scores = (per_source * self.reward_weights.to(per_source.device)).nansum(1)
        if self.args.missing_eos_penalty is not None:
            scores = scores - self.args.missing_eos_penalty * (~contains_eos).float()
        return dict(prompts=prompts, completions=completions, prompt_ids=prompt_ids, prompt_mask=prompt_mask,
                    responses=responses, response_mask=response_mask, contains_eos=contains_eos,
                    per_source=per_source, scores=scores)

    def _token_logprobs(self, model, input_ids, attention_mask, length, chunk):
        """Log-probs of the last `length` tokens (and the critic's values before each, when `model` is ours)."""
        logprobs, values = [], []
        for i in range(0, len(input_ids), chunk):
            ids, mask = input_ids[i:i + chunk], attention_mask[i:i + chunk]
            if isinstance(model, PolicyAndValue):
                logits, v = model(ids, mask, logits_to_keep=length + 1)
                values.append(v[:, -length - 1:-1])
            else:
                position_ids = (mask.cumsum(1) - 1).clamp(min=0)
                logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids,
                               logits_to_keep=length + 1, use_cache=False).logits
            logprobs.append(selective_log_softmax(logits[:, :-1] / self.args.temperature, ids[:, -length:]))
        return torch.cat(logprobs), (torch.cat(values) if values else None)

    @torch.no_grad()
    def _rollout(self, rows):
        a = self.args
        with unwrap_model_for_generation(self.model_wrapped, self.accelerator,
                                         gradient_checkpointing_kwargs=a.activation_checkpointing_kwargs) as unwrapped:
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
        logits = logits[:, :-1] / a.temperature
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
            critic_dir = os.path.join(output_dir, "critic")
            critic_state = parts.get("critic", {})
            backbone_state = {k.partition(".")[2]: v for k, v in critic_state.items() if k.startswith("backbone.")}
            wrapper.critic.backbone.save_pretrained(critic_dir, state_dict=backbone_state or None)
            from safetensors.torch import save_file

            head = {k.partition(".")[2]: v for k, v in critic_state.items() if k.startswith("head.")}
            head = head or wrapper.critic.head.state_dict()
            save_file({k: v.detach().cpu().contiguous() for k, v in head.items()},
                      os.path.join(critic_dir, "value_head.safetensors"))

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        from safetensors.torch import load_file

        wrapper = self.accelerator.unwrap_model(self.model)
        critic_dir = os.path.join(resume_from_checkpoint, "critic")
        for module, path in ((wrapper.policy, resume_from_checkpoint), (wrapper.critic.backbone, critic_dir)):
            if is_peft_model(module):
                module.load_adapter(path, adapter_name="default", is_trainable=True)
            else:
                from transformers.trainer_utils import load_sharded_checkpoint

                single = os.path.join(path, "model.safetensors")
                if os.path.isfile(single):
                    module.load_state_dict(load_file(single), strict=False)  # tied weights are saved once
                else:
                    load_sharded_checkpoint(module, path, strict=False)
        wrapper.critic.head.load_state_dict(load_file(os.path.join(critic_dir, "value_head.safetensors")))
