"""Sampling from a model over prompts, shared by rejection sampling and evaluation: where a model (or a LoRA
adapter on its base: utils/model/adapter_dirs.py) and its tokenizer are, loading it, rendering prompts, sampling
completions that stop at EOS, and the log-probabilities a model gives to the tokens of a completion.

Completions are kept as token ids (cut after the first EOS, which is kept: the model chose it) with a flag that
says whether they ended; `text_of` decodes them. A batch of prompts is always sampled with one seed set just before
its `generate`, so the same prompts in the same batch give the same completions wherever they are sampled.
"""

from __future__ import annotations

from dataclasses import dataclass

from utils.core.errors import UserError
# adapter_base and model_paths are also reached as generation.X by evaluation and rejection sampling
from utils.model.adapter_dirs import adapter_base, attach_adapter, model_paths


# ------------------------------------------------------------------------------------------ flags
def add_sampling_args(p, samples_help: str, load_help: str) -> None:
    """The flags rejection sampling and evaluation share: reward sources, sampling settings, seed, loading."""
    from utils.model.dtype import DTYPE_HELP, DTYPES

    p.add_argument("--reward_model_path", nargs="*", default=[], help="Reward model(s), each with its own tokenizer.")
    p.add_argument("--reward_funcs", nargs="*", default=[], help="module:function or path/file.py:function.")
    p.add_argument("--reward_weights", nargs="*", type=float, default=None,
                   help="One weight per reward source (models first); score = weighted sum. Default: all 1.")
    p.add_argument("--num_samples", type=int, default=4, help=samples_help)
    p.add_argument("--max_new_tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top_p", type=float, default=1.0)
    p.add_argument("--top_k", type=int, default=0, help="0 = off: sample from the whole distribution.")
    p.add_argument("--batch_size", type=int, default=8, help="Prompts per generate call (x num_samples sequences).")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="auto", choices=DTYPES, help=DTYPE_HELP)
    p.add_argument("--load_in_4bit", action="store_true", help=load_help)
    p.add_argument("--trust_remote_code", action="store_true")


def check_sampling_args(a, *counts: str) -> None:
    """Refuse what add_sampling_args' flags cannot mean: a count below 1 (`counts`: the flags to check), a
    temperature that does not sample, no reward source."""
    for name in counts:
        if getattr(a, name, 1) < 1:
            raise UserError(f"--{name} {getattr(a, name)} is out of range; expected an integer >= 1.")
    if a.temperature <= 0:
        raise UserError(f"--temperature must be > 0, got {a.temperature} (the samples are drawn at this temperature).")
    if not (a.reward_model_path or a.reward_funcs):
        raise UserError("No reward source: give --reward_model_path PATH [PATH ...] and/or --reward_funcs "
                        "module:function [...]; every sample is scored with them.")


# ------------------------------------------------------------------------------------------ paths
def check_adapter_base(path: str, base_override: str | None, flag: str, remedy: str) -> None:
    """Check phase: the base of an adapter can be loaded (a directory with config and weights, or a cached hub
    id). Without this the run would fail while loading weights, with transformers' own message. `remedy`: the
    sentence that ends the message."""
    from utils.model.checks import check_model_dir

    base = adapter_base(path, base_override)
    if base is None or base_override:  # an explicit base was checked with every other path
        return
    try:
        check_model_dir(base, "its base")
    except UserError as e:
        raise UserError(f"{flag} {path!r} is a LoRA adapter whose base model cannot be found: its adapter_config.json "
                        f"names base_model_name_or_path {base!r}, and {e} {remedy}") from None


def load_policy(path: str, tokenizer, dtype, *, base_override: str | None = None, load_in_4bit: bool = False,
                trust_remote_code: bool = False, device=None):
    """The model to sample from (full, 4-bit, or base + LoRA adapter), in eval mode, on `device` (default: the GPU
    when there is one)."""
    import torch

    from utils.model.loading import load_model

    base, _ = model_paths(path, base_override)
    model = load_model(base, tokenizer, dtype=dtype, load_in_4bit=load_in_4bit, trust_remote_code=trust_remote_code)
    if base != path:
        model = attach_adapter(model, path, base)
    device = device or ("cuda" if torch.cuda.is_available() else None)
    if device is not None and not load_in_4bit:
        model.to(device)
    return model.eval().requires_grad_(False)


# -------------------------------------------------------------------------------------- sampling
def render(prompt, tokenizer, tools: list | None = None) -> tuple[str, bool]:
    """Prompt text to generate from (with the schemas of `tools`), and whether special tokens are already in it (a
    chat template's)."""
    if isinstance(prompt, list):
        if tokenizer.chat_template is None:
            raise UserError("The prompts are conversations but the model's tokenizer has no chat template; use "
                            "plain-string prompts or a tokenizer with a chat template.")
        return tokenizer.apply_chat_template(prompt, tools=tools or None, add_generation_prompt=True,
                                             tokenize=False), True
    return prompt, False


def eos_ids(model, tokenizer) -> set[int]:
    eos = model.generation_config.eos_token_id
    return set(eos if isinstance(eos, list) else [eos] if eos is not None else [tokenizer.eos_token_id])


@dataclass
class Sample:
    prompt_ids: list[int]
    completion_ids: list[int]  # up to and with the first EOS
    finished: bool  # False: it hit max_new_tokens without EOS


def generate(model, tokenizer, prompts: list, *, num_samples: int, max_new_tokens: int, temperature: float = 1.0,
             top_p: float = 1.0, top_k: int = 0, seed: int = 0, tools: list | None = None, processor=None,
             images: list | None = None) -> list[list[Sample]]:
    """`num_samples` completions for each prompt, sampled in one `generate` call seeded with `seed`; `tools`: the
    tool schemas the chat template shows (utils/sampling/tool_loop.py calls them). A vision-language model's
    `processor` with `images` (one list of image paths per prompt, maybe empty): the prompts see their images."""
    settings = dict(num_samples=num_samples, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                    top_k=top_k, seed=seed)
    if processor is not None and images is not None and any(images):
        return _sample(model, tokenizer, vision_inputs(processor, prompts, images), **settings)
    texts = [render(p, tokenizer, tools) for p in prompts]
    ids = tokenizer([t for t, _ in texts], add_special_tokens=not texts[0][1])["input_ids"]
    return generate_ids(model, tokenizer, ids, **settings)


def vision_inputs(processor, prompts: list, images: list) -> dict:
    """The model inputs of conversational prompts with their images (left-padded), as TRL's GRPO builds them."""
    from utils.data.images import template_parts

    texts = [processor.apply_chat_template(template_parts(prompt), add_generation_prompt=True, tokenize=False)
             for prompt in prompts]
    return processor(text=texts, images=[i or [] for i in images], padding=True,
                     padding_side="left", add_special_tokens=False, return_tensors="pt")


def generate_ids(model, tokenizer, prompt_ids: list[list[int]], **settings) -> list[list[Sample]]:
    """As `generate`, from prompts already tokenized."""
    side, tokenizer.padding_side = tokenizer.padding_side, "left"  # generation continues the prompts' last tokens
    try:
        enc = tokenizer.pad({"input_ids": prompt_ids}, return_tensors="pt")
    finally:
        tokenizer.padding_side = side
    return _sample(model, tokenizer, enc, **settings)


def _sample(model, tokenizer, enc, *, num_samples: int, max_new_tokens: int, temperature: float = 1.0,
            top_p: float = 1.0, top_k: int = 0, seed: int = 0) -> list[list[Sample]]:
    """Sample from the model inputs `enc` (left-padded input ids, attention mask, pixel values, ...)."""
    import torch

    enc = enc.to(next(model.parameters()).device)
    device = enc["input_ids"].device
    # The caller's random state is left as it was: sampling here does not change what a caller samples next.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.inference_mode():
        torch.manual_seed(seed)
        out = model.generate(**enc, do_sample=True, temperature=temperature, top_p=top_p, top_k=top_k,
                             max_new_tokens=max_new_tokens, num_return_sequences=num_samples,
                             pad_token_id=tokenizer.pad_token_id)
    eos, width = eos_ids(model, tokenizer), enc["input_ids"].shape[1]
    prompt_ids = [ids[mask.bool()].tolist() for ids, mask in zip(enc["input_ids"], enc["attention_mask"])]
    groups: list[list[Sample]] = [[] for _ in prompt_ids]
    for row, ids in enumerate(out[:, width:].tolist()):
        cut = next((i for i, t in enumerate(ids) if t in eos), None)
        sample = Sample(prompt_ids[row // num_samples], ids if cut is None else ids[:cut + 1], cut is not None)
        groups[row // num_samples].append(sample)
    return groups


def text_of(sample: Sample, tokenizer) -> str:
    """The completion's text, without its EOS."""
    ids = sample.completion_ids[:-1] if sample.finished else sample.completion_ids
    return tokenizer.decode(ids, skip_special_tokens=True)


def sample(model, tokenizer, prompts: list, args, seed: int, processor=None, images=None) -> list[list[str]]:
    """`args.num_samples` completions (text, cut at the first EOS) for each prompt (rejection sampling)."""
    groups = generate(model, tokenizer, prompts, num_samples=args.num_samples, max_new_tokens=args.max_new_tokens,
                      temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, seed=seed,
                      processor=processor, images=images)
    return [[text_of(s, tokenizer) for s in group] for group in groups]


# ------------------------------------------------------------------------------------- log-probs
def completion_logprobs(model, pairs: list[tuple[list[int], list[int]]], temperature: float = 1.0,
                        batch_size: int = 16) -> list[list[float]]:
    """log p(token) of every completion token given the prompt and the tokens before it, for (prompt ids,
    completion ids) pairs; logits divided by `temperature` (the distribution that was sampled). One forward pass
    per batch, right-padded, in inference mode."""
    import torch

    device = next(model.parameters()).device
    out = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        width = max(len(p) + len(c) for p, c in chunk)
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        mask = torch.zeros(len(chunk), width, dtype=torch.long)
        for i, (p, c) in enumerate(chunk):
            ids[i, :len(p) + len(c)] = torch.tensor(p + c)
            mask[i, :len(p) + len(c)] = 1
        with torch.inference_mode():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
            logps = torch.log_softmax(logits[:, :-1] / temperature, dim=-1)
            token = logps.gather(-1, ids[:, 1:].to(device)[..., None])[..., 0].cpu()
        for i, (p, c) in enumerate(chunk):  # position t predicts token t + 1
            out.append(token[i, len(p) - 1:len(p) + len(c) - 1].tolist())
    return out
