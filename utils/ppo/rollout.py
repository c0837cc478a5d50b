"""PPO's sampling side: prompts tokenised, one completion sampled per prompt and cut at its first EOS, scored by
every reward source, and the token log-probs (and critic values) of a batch. A mixin of utils/ppo_trainer.PPOTrainer,
which provides `args`, `processing_class`, `generation_config`, `eos_token_ids`, `reward_funcs`, `reward_weights`."""

from __future__ import annotations

import torch
from torch import nn
from trl.trainer.utils import selective_log_softmax

from utils.ppo.models import PolicyAndValue


class RolloutSampling:
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
            logprobs.append(selective_log_softmax(logits[:, :-1].float() / self.args.temperature, ids[:, -length:]))
        return torch.cat(logprobs), (torch.cat(values) if values else None)
