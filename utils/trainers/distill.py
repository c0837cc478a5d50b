"""GKD's glue: the data TRL's GKD collator expects and a thin GKDTrainer subclass that fixes what TRL 1.16's
`trl.experimental.gkd.GKDTrainer` gets wrong for us. The teacher both distillation methods share is checked and
loaded in utils/trainers/teacher.py (which imports no experimental TRL: Distillation runs on TRL's stable
DistillationTrainer, sampling in the training's precision: utils/trainers/online_rl.py).

What the subclass changes, and nothing else (generation, the lmbda / seq_kd schedule and the JSD
formula are TRL's):

1. `temperature` also divides both models' logits in the loss. TRL uses it only for sampling and
   computes the loss at temperature 1, unlike what its docs and the GKD paper describe. Upstream keeps T = 1 on
   purpose (huggingface/trl#5731 aligned its Liger path to it), so this stays as long as we want the paper's loss.
2. Teacher and student may have embedding matrices of different sizes (one family, e.g. 151936 vs
   152064 rows): TRL refuses any difference. We compare the two distributions over the tokenizer's
   real vocabulary (the first `len(tokenizer)` logits, renormalised) and never sample ids past it.
   A different tokenizer is refused before the teacher loads (`check_teacher`). TRL's check is huggingface/trl#6252;
   huggingface/trl#3028 asks for different sizes: drop this when GKD compares over a shared vocabulary itself.
3. The loss is over completion tokens only (TRL's labels mask the prompt already) and averaged over
   the tokens that are actually trained on: TRL divides by the token count of the *dataset* batch
   (counted before the student or teacher regenerates the completions) and, under DDP, by the world
   size once too often. huggingface/trl#6478 fixed the count for DistillationTrainer only; for GKD no report found
   (searched "GKDTrainer num_items_in_batch on-policy generation DDP", 2026-12-02): drop when GKD gets that fix.
4. Rows in our SFT formats (conversational or plain strings) are tokenised here into `input_ids` +
   `completion_mask`, which TRL's ChatML collator takes as is; it only knows `messages` rows (GKD tied to that
   collator: huggingface/trl#2481). Drop when GKD takes prompt + completion rows.
"""

from __future__ import annotations

import logging

import torch
from trl.experimental.gkd import GKDTrainer as TRLGKDTrainer

from utils.core.errors import UserError

log = logging.getLogger(__name__)


def generalized_jsd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float,
                    temperature: float = 1.0) -> torch.Tensor:
    """Generalised JSD per position (summed over the last, vocabulary, dimension), both logits / T.

    With P = teacher, Q = student and M = beta * P + (1 - beta) * Q (Agarwal et al. 2024, eq. 1):
    JSD(beta) = beta * KL(P || M) + (1 - beta) * KL(Q || M); beta = 0 is KL(P || Q) (forward KL) and
    beta = 1 is KL(Q || P) (reverse KL). TRL's implementation, which our tests check by hand.
    """
    per_token = TRLGKDTrainer.generalized_jsd_loss(student_logits, teacher_logits, beta=beta,
                                                   temperature=temperature, reduction="none")
    return per_token.sum(-1)


# ------------------------------------------------------------------------------------------- data
def _tokenize_row(row: dict, tokenizer, max_length: int | None) -> dict:
    if "messages" in row and row.get("messages") is not None and row.get("prompt") is None:
        messages = row["messages"]
        if not messages or messages[-1].get("role") != "assistant":
            raise UserError("GKD `messages` rows must end with an assistant turn: it is the completion the teacher "
                            "scores; the turns before it are the prompt.")
        prompt, completion = messages[:-1], messages[-1:]
    elif row.get("prompt") is not None and row.get("completion") is not None:
        prompt, completion = row["prompt"], row["completion"]
    else:
        raise UserError("GKD rows need `prompt` + `completion`, or `messages`: the teacher is compared with the "
                        "student on the completion, and on-policy generation starts from the prompt.")
    if isinstance(prompt, list):  # conversational: the chat template, as TRL's SFT does
        if isinstance(completion, str):
            completion = [{"role": "assistant", "content": completion}]
        try:
            prompt_text = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
            full_text = tokenizer.apply_chat_template(prompt + completion, tokenize=False)
        except ValueError as e:
            raise UserError(f"Could not apply the tokenizer's chat template to a conversational row: {e}") from e
        prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
        ids = tokenizer(full_text, add_special_tokens=False)["input_ids"]
    else:  # plain strings are used as they are; EOS ends the completion so the student learns to stop
        prompt_text = prompt
        prompt_ids = tokenizer(prompt)["input_ids"]
        eos = tokenizer.eos_token or ""
        ids = tokenizer(prompt + completion + ("" if completion.endswith(eos) else eos))["input_ids"]
    # The completion starts where the two tokenisations diverge (tokens can merge across the boundary).
    start = 0
    while start < min(len(prompt_ids), len(ids)) and prompt_ids[start] == ids[start]:
        start += 1
    if max_length is not None:
        ids = ids[:max_length]
    # The collator reads `prompt` (rendered text) before it looks at `input_ids`; with a completion_mask it
    # takes the prompt boundary from the mask and does not re-tokenise it.
    return {"prompt": prompt_text, "input_ids": ids,
            "completion_mask": [0] * min(start, len(ids)) + [1] * max(0, len(ids) - start)}


def prepare_dataset(dataset, tokenizer, max_length: int | None, name: str = "train"):
    """SFT rows -> rendered `prompt`, `input_ids` + `completion_mask` (truncated to `max_length`), the form TRL's ChatML
    collator uses without re-tokenising. Rows with no completion token left are dropped, as SFT does."""
    if dataset is None or "input_ids" in dataset.column_names:
        return dataset
    out = dataset.map(_tokenize_row, fn_kwargs={"tokenizer": tokenizer, "max_length": max_length},
                      remove_columns=dataset.column_names, desc=f"Tokenizing {name} dataset for GKD")
    kept = out.filter(lambda r: 1 in r["completion_mask"])
    if len(kept) < len(out):
        log.warning("%d of %d %s rows have no completion token within max_length=%s and are dropped.",
                    len(out) - len(kept), len(out), name, max_length)
    if len(kept) == 0:
        raise UserError(f"No {name} row keeps a completion token within --max_length {max_length}; raise it.")
    return kept


def _text_config(model):
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


# ---------------------------------------------------------------------------------------- trainer
class GKDTrainer(TRLGKDTrainer):
    """TRL's GKDTrainer with the four fixes listed in the module docstring."""

    def __init__(self, model=None, teacher_model=None, args=None, train_dataset=None, eval_dataset=None,
                 processing_class=None, **kwargs):
        max_length = args.max_length
        train_dataset = prepare_dataset(train_dataset, processing_class, max_length, "train")
        if isinstance(eval_dataset, dict):
            eval_dataset = {k: prepare_dataset(v, processing_class, max_length, k) for k, v in eval_dataset.items()}
        else:
            eval_dataset = prepare_dataset(eval_dataset, processing_class, max_length, "eval")

        # TRL refuses any difference in `vocab_size` (config rows); we compare over the tokenizer's real
        # vocabulary instead, so show TRL's check the student's size and put the teacher's back afterwards.
        teacher_config = _text_config(teacher_model)
        teacher_rows = teacher_config.vocab_size
        student_rows = _text_config(model).vocab_size
        teacher_config.vocab_size = student_rows
        try:
            super().__init__(model=model, teacher_model=teacher_model, args=args, train_dataset=train_dataset,
                             eval_dataset=eval_dataset, processing_class=processing_class, **kwargs)
        finally:
            teacher_config.vocab_size = teacher_rows
        self.shared_vocab = min(len(processing_class), student_rows, teacher_rows)
        beyond = max(student_rows, teacher_rows)
        if beyond > self.shared_vocab:
            # Ids past the real vocabulary are padding rows: sampling one would index past the smaller model's
            # embedding, so generation never produces them.
            self.generation_kwargs["suppress_tokens"] = list(range(self.shared_vocab, beyond))
            self.generation_config.suppress_tokens = self.generation_kwargs["suppress_tokens"]
        self._dataset_tokens, self._regenerated = None, False

    def training_step(self, model, inputs, num_items_in_batch=None):
        # Completion tokens of the batch as collated, i.e. what `num_items_in_batch` was counted from, before TRL
        # may replace the completions by the student's (lmbda) or the teacher's (seq_kd) samples.
        self._dataset_tokens = (inputs["labels"][:, 1:] != -100).sum()
        self._regenerated = False
        return super().training_step(model, inputs, num_items_in_batch)

    def generate_on_policy_outputs(self, model, inputs, generation_config):
        self._regenerated = True  # TRL calls this for both the student's (lmbda) and the teacher's (seq_kd) samples
        with self.accelerator.autocast():  # a PEFT student's own forward is outside accelerate's autocast wrapper
            return TRLGKDTrainer.generate_on_policy_outputs(model, inputs, generation_config)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        student = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        self.teacher_model.eval()
        with torch.no_grad():
            teacher = self.teacher_model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        # Position i predicts token i + 1; labels are -100 on the prompt and padding, so only completion
        # positions are selected, and only they pay for the full-vocabulary softmax (in fp32).
        mask = inputs["labels"][:, 1:] != -100
        vocab = self.shared_vocab
        student_logits = student.logits[:, :-1][mask][:, :vocab].float()
        teacher_logits = teacher.logits[:, :-1][mask][:, :vocab].float()
        total = generalized_jsd(student_logits, teacher_logits, self.beta, self.temperature).sum()
        tokens = mask.sum().clamp_min(1)
        if num_items_in_batch is None:  # evaluation, or a Trainer that does not count tokens
            loss = total / tokens
        else:
            # This micro-batch keeps the share of the step its collated batch had (what the Trainer counted),
            # averaged over the tokens it now really has; x num_processes undoes DDP's gradient averaging, as
            # transformers' own compute_loss does for token-averaged losses.
            counted = self._dataset_tokens if self._regenerated else tokens
            loss = total / tokens * (counted / num_items_in_batch)
            if self.args.average_tokens_across_devices:
                loss = loss * self.accelerator.num_processes
        return (loss, student) if return_outputs else loss
