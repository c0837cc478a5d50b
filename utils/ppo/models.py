"""PPO's models, decided once and built in one place: the critic (backbone + value head), whether it shares
frozen weights with the policy or a reward model, and the frozen reference. `utils/ppo/trainer.py` receives
them built (`critic`, `ref_model`) and decides nothing about them.

Per `--train_mode`:
  full         reference: a second load of the policy (frozen). Critic: a trainable copy, loaded from disk, of
               --value_model_path, else of the first reward model that shares the policy's tokenizer (its score
               head already values text), else of the policy (a new zero value head). Copies are loaded, not deep-
               copied: under DeepSpeed ZeRO-3 a loaded model is already sharded, and a deep copy of shards is no model.
  lora/qlora   no reference model (the policy with its adapter switched off). The critic is a second module tree
               over the frozen weight tensors of the policy or of that reward model (no weight copied), with its own
               LoRA adapter and value head. A --value_model_path that is neither, or a reward-model critic under
               ZeRO-3 (each model then has its own shards), is loaded separately.
The critic reads the policy's tokens, so it must share the policy's tokenizer (checked before anything loads).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass

from torch import nn

from utils.core.errors import UserError


@dataclass
class CriticPlan:
    path: str | None  # the model the critic starts from; None = the policy
    share: bool  # its adapter goes over that model's frozen weight tensors (lora / qlora; no copy)


def check_critic(common, config, tokenizer, rewards) -> CriticPlan:
    """Check phase: which model the critic starts from and whether it shares weights; tokenizers compared."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    from utils.model.loading import load_tokenizer

    vocab = tokenizer.get_vocab()
    same = {os.path.normpath(p): t for p, t in zip(rewards.model_paths, rewards.tokenizers)}
    path = config.value_model_path
    if path is None:
        path = next((p for p, t in zip(rewards.model_paths, rewards.tokenizers) if t.get_vocab() == vocab), None)
    else:
        critic_tokenizer = same.get(os.path.normpath(path)) or load_tokenizer(path, config.trust_remote_code)
        if critic_tokenizer.get_vocab() != vocab:
            raise UserError(f"--value_model_path {path!r} does not use the policy's tokenizer. The critic assigns a "
                            "value to every policy token, so it must read the same token ids; pick a model of the "
                            "policy's family (a reward model may use any tokenizer, the critic may not).")
    is_reward_model = path is not None and os.path.normpath(path) in same
    share = common.train_mode != "full" and (path is None or (is_reward_model and not is_deepspeed_zero3_enabled()))
    return CriticPlan(path, share)


def build_ppo_models(plan: CriticPlan, common, config, tokenizer, dtype, policy, reward_funcs, peft_config) -> dict:
    """Build phase: {"critic": ValueModel, "ref_model": frozen reference or None} for PPOTrainer. Runs before the
    policy gets its adapter, so that a critic sharing the policy's weights has none of it."""
    from transformers import set_seed

    from utils.model.loading import load_model, load_tokenizer

    trust, full = config.trust_remote_code, common.train_mode == "full"
    if full:  # the critic trains (float32 master weights, as the policy's); the reference computes as the policy does
        dtype = policy.dtype
    ref = load_model(common.model_name_or_path, tokenizer, dtype=dtype, trust_remote_code=trust) if full else None
    if plan.path is None:
        source = load_model(common.model_name_or_path, tokenizer, dtype=dtype, trust_remote_code=trust) if full \
            else policy
    elif plan.share:
        source = next(f.model for f in reward_funcs
                      if os.path.normpath(getattr(f, "path", "")) == os.path.normpath(plan.path))
    else:  # never quantised: a separate critic is small or trained in full, and its score head trains
        source = load_model(plan.path, load_tokenizer(plan.path, trust), head="score", dtype=dtype,
                            trust_remote_code=trust)
    set_seed(config.seed)  # the value head and the critic's adapter start the same in every process and run
    return {"critic": build_critic(source, peft_config, share=plan.share), "ref_model": ref}


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
    `peft_config` the backbone stays frozen under its own LoRA adapter; `share` puts that adapter on a second
    module tree over the source's own weight tensors."""
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


class PolicyAndValue(nn.Module):
    """Policy and critic as one module, so that one optimizer, one DDP / DeepSpeed engine and one backward pass
    cover both (as TRL 1.11's PolicyAndValueWrapper); their gradients are clipped apart (PPOTrainer)."""

    def __init__(self, policy: nn.Module, critic: ValueModel):
        super().__init__()
        self.policy, self.critic = policy, critic

    def forward(self, input_ids, attention_mask, logits_to_keep: int = 0):
        # Positions count real tokens only, as generate() does for left-padded prompts.
        position_ids = (attention_mask.cumsum(1) - 1).clamp(min=0)
        logits = self.policy(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             logits_to_keep=logits_to_keep, use_cache=False).logits
        return logits, self.critic(input_ids, attention_mask, position_ids)

    # Trainer and TRL's unwrap_model_for_generation switch checkpointing through these names: transformers 5.23's new
    # ones, and the old ones TRL 1.16 still calls (the same need of TRL's own PPO wrapper: huggingface/trl#4954).
    # Drop the gradient_checkpointing ones when TRL calls the activation_checkpointing names.
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


# ------------------------------------------------------------------------------------ checkpoints
def save_critic(critic: ValueModel, critic_dir: str, critic_state: dict) -> None:
    """The critic's backbone (adapter or full weights) and value head, in output_dir/critic (needed to resume).
    `critic_state`: the critic's part of a state dict DeepSpeed / FSDP gathered ({} = read the module)."""
    from safetensors.torch import save_file

    backbone_state = {k.partition(".")[2]: v for k, v in critic_state.items() if k.startswith("backbone.")}
    critic.backbone.save_pretrained(critic_dir, state_dict=backbone_state or None)
    head = {k.partition(".")[2]: v for k, v in critic_state.items() if k.startswith("head.")}
    head = head or critic.head.state_dict()
    save_file({k: v.detach().cpu().contiguous() for k, v in head.items()},
              os.path.join(critic_dir, "value_head.safetensors"))


def load_checkpoint(wrapper: PolicyAndValue, checkpoint: str) -> None:
    """Policy and critic weights (adapters or full) and the value head from a checkpoint PPOTrainer saved."""
    from accelerate.utils import is_peft_model
    from safetensors.torch import load_file

    critic_dir = os.path.join(checkpoint, "critic")
    for module, path in ((wrapper.policy, checkpoint), (wrapper.critic.backbone, critic_dir)):
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


def clip_apart(wrapper: PolicyAndValue, max_norm: float) -> dict[str, float]:
    """Clip the policy's and the critic's gradients each to `max_norm`; their pre-clip norms. One joint norm (the
    Trainer's) would let a large value-loss gradient shrink the policy's step; TRL 1.11's PPO never clipped."""
    import torch

    norms = {}
    for name, part in (("policy", wrapper.policy), ("val", wrapper.critic)):
        params = [p for p in part.parameters() if p.grad is not None]
        norms[name] = float(torch.nn.utils.clip_grad_norm_(params, max_norm)) if params else 0.0
    return norms
