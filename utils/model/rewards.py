"""Reward sources shared by RLOO, GRPO, PPO and rejection sampling, built in two steps by every one of them:
`check_reward_sources` (check phase: functions imported, reward-model directories and tokenizers read, weights
counted; no weights loaded) and `build_reward_sources` (the reward models loaded).

Every source is a callable with TRL's reward-function signature,
`f(prompts, completions, **columns) -> list[float]`, and a `__name__` (TRL logs
`rewards/<name>/mean`). Two kinds:

- a reward model (`--reward_model_path`): a sequence-classification model that scores the
  *text* of prompt + completion, re-encoded with its own tokenizer and chat template. Sharing the
  policy's tokenizer is therefore not required (scoring token ids of another vocabulary gives garbage);
- a Python function (`--reward_funcs module:function` or `path/to/file.py:function`), called with
  the prompts, the completions and every extra dataset column (e.g. a reference `answer`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from utils.core.errors import UserError
from utils.core.user_code import import_object


def _as_text(x) -> str:
    """A completion or prompt as plain text: strings stay, conversations join their contents."""
    if isinstance(x, str):
        return x
    return "".join(m["content"] for m in x)


class RewardModelScorer:
    """Scores (prompt, completion) pairs with a reward model and the reward model's own tokenizer."""

    def __init__(self, path: str, dtype=None, trust_remote_code: bool = False, batch_size: int = 16,
                 max_length: int | None = None, tokenizer=None):
        from utils.model.loading import load_model, load_tokenizer

        self.path, self.batch_size, self.max_length = path, batch_size, max_length
        self.tokenizer = tokenizer or load_tokenizer(path, trust_remote_code)
        self.tokenizer.padding_side = "right"
        self.model = load_model(path, self.tokenizer, head="score", dtype=dtype, trust_remote_code=trust_remote_code,
                                trained_head=True)
        self.model.eval().requires_grad_(False)
        self.__name__ = os.path.basename(os.path.normpath(path)) or "reward_model"

    def texts(self, prompts, completions) -> list[str]:
        """The exact strings the reward model reads."""
        out = []
        for p, c in zip(prompts, completions):
            if isinstance(p, list):  # conversational: the RM's own chat template over the whole dialogue
                messages = p + (c if isinstance(c, list) else [{"role": "assistant", "content": c}])
                if self.tokenizer.chat_template is None:
                    raise UserError(f"The reward model at {self.path!r} has no chat template, but the prompts are "
                                    "conversations; give it a tokenizer with a chat template or use plain-string data.")
                out.append(self.tokenizer.apply_chat_template(messages, tokenize=False))
            else:  # plain strings: TRL's RewardTrainer trained on text + EOS, tokenized with special tokens
                text = p + _as_text(c)
                eos = self.tokenizer.eos_token
                out.append(text if not eos or text.endswith(eos) else text + eos)
        return out

    def score_texts(self, texts: list[str], add_special_tokens: bool = False) -> list[float]:
        """Scores of `texts`; `add_special_tokens` as RewardTrainer tokenized them: a chat template's text already
        holds its special tokens, plain text gets the tokenizer's own (the BOS of Llama-3, Gemma)."""
        import torch

        with torch.no_grad():
            return self._score(texts, add_special_tokens)

    def _score(self, texts: list[str], add_special_tokens: bool) -> list[float]:
        device = next(self.model.parameters()).device
        scores = []
        for i in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(texts[i:i + self.batch_size], return_tensors="pt", padding=True,
                                 truncation=self.max_length is not None, max_length=self.max_length,
                                 add_special_tokens=add_special_tokens).to(device)
            scores += self.model(**enc).logits[:, 0].float().tolist()
        return scores

    def to(self, device):
        self.model.to(device)
        return self

    def __call__(self, prompts, completions, **_columns) -> list[float]:
        plain = not isinstance(prompts[0], list)
        return self.score_texts(self.texts(prompts, completions), add_special_tokens=plain)


class CheckedRewardFunction:
    """Calls a user's reward function and checks what comes back, naming the function on failure."""

    def __init__(self, spec: str):
        self.spec, self.fn = spec, import_object(spec, "--reward_funcs")
        self.__name__ = getattr(self.fn, "__name__", spec)

    def __call__(self, prompts, completions, **columns) -> list[float]:
        try:
            out = self.fn(prompts=prompts, completions=completions, **columns)
        except Exception as e:
            raise UserError(f"reward function {self.spec!r} raised {type(e).__name__}: {e}") from e
        try:
            values = [math.nan if v is None else float(v) for v in out]
        except (TypeError, ValueError) as e:
            raise UserError(f"reward function {self.spec!r} must return one float per completion; got {out!r:.200}") from e
        if len(values) != len(completions):
            raise UserError(f"reward function {self.spec!r} returned {len(values)} values for {len(completions)} "
                            "completions; expected one float per completion.")
        bad = next((i for i, (v, raw) in enumerate(zip(values, out)) if raw is not None and not math.isfinite(v)), None)
        if bad is not None:  # NaN would silently train on nothing; None is the way to say "not scored"
            raise UserError(f"reward function {self.spec!r} returned {values[bad]} for the prompt "
                            f"{_as_text(prompts[bad])[:200]!r}; expected a finite float (or None: not scored).")
        return values


@dataclass
class RewardSources:
    """The reward sources of one run, checked: functions imported, reward-model tokenizers read, weights counted.
    Order (that of the weights): every reward model, then every function."""

    model_paths: list[str]
    tokenizers: list
    functions: list[CheckedRewardFunction]
    weights: list[float] | None
    trust_remote_code: bool = False

    def build(self, dtype=None, max_length: int | None = None) -> list:
        """The callables, reward models loaded (weights read here, in the build phase)."""
        scorers = [RewardModelScorer(p, dtype, self.trust_remote_code, max_length=max_length, tokenizer=t)
                   for p, t in zip(self.model_paths, self.tokenizers)]
        return scorers + self.functions


def check_reward_sources(model_paths, func_specs, weights=None, trust_remote_code: bool = False,
                         environment_reward: bool = False) -> RewardSources:
    """Check phase: refuse a run without a source, a weight count that does not match, a function that does not
    import, a causal LM named as a reward model, a tokenizer that does not load. (The reward-model directories were
    checked with every other path, utils/cli.check_paths.)"""
    from utils.model.loading import load_tokenizer

    model_paths, func_specs = list(model_paths or []), list(func_specs or [])
    if not model_paths and not func_specs and not environment_reward:
        raise UserError("No reward source: give --reward_model_path PATH [PATH ...] and/or --reward_funcs "
                        "module:function [...] (or, for GRPO, an --environment with a get_reward method).")
    n_sources = len(model_paths) + len(func_specs)
    if weights is not None and len(weights) != n_sources:
        raise UserError(f"--reward_weights has {len(weights)} values for {n_sources} reward sources (reward models "
                        "first, then functions); give one weight per source.")
    for path in model_paths:
        _refuse_causal_lm(path)
    functions = [CheckedRewardFunction(spec) for spec in func_specs]
    tokenizers = [load_tokenizer(path, trust_remote_code) for path in model_paths]
    return RewardSources(model_paths, tokenizers, functions, list(weights) if weights is not None else None,
                         trust_remote_code)


def _refuse_causal_lm(path: str) -> None:
    """A causal LM named as a reward model would get a random score head; its config says so before any load."""
    import json

    config = os.path.join(os.path.expanduser(path), "config.json")
    if not os.path.isfile(config):
        return
    with open(config) as f:
        architectures = json.load(f).get("architectures") or []
    if architectures and all(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        raise UserError(f"--reward_model_path {path!r} is a causal LM ({', '.join(architectures)}), not a reward "
                        "model: loaded as one, its score head would be random. Expected a model trained with "
                        "--rlhf_type Reward (a *ForSequenceClassification checkpoint).")


# ------------------------------------------------------------------------- scoring samples offline
# (rejection sampling and evaluation; the trainers call the sources themselves)
def source_names(sources) -> list[str]:
    names = []
    for s in sources:
        name = getattr(s, "__name__", "reward")
        names.append(name if name not in names else f"{name}_{len(names)}")
    return names


def weighted_scores(sources, names, weights, prompts, completions, columns: dict) -> tuple[list, list[dict]]:
    """Weighted sum of every source (a source's None, NaN here, is skipped; NaN when no source scored), and each
    source's values."""
    per_source = {name: src(prompts=prompts, completions=completions, **columns) for name, src in zip(names, sources)}
    totals, details = [], []
    for i in range(len(completions)):
        values = {name: per_source[name][i] for name in names}
        finite = [w * v for w, v in zip(weights, values.values()) if not math.isnan(v)]
        totals.append(sum(finite) if finite else math.nan)
        details.append({k: (None if math.isnan(v) else v) for k, v in values.items()})
    return totals, details


def as_completion(text: str, prompt):
    """Conversational prompts keep conversational answers (what SFT / DPO rows and reward functions expect)."""
    return [{"role": "assistant", "content": text}] if isinstance(prompt, list) else text
