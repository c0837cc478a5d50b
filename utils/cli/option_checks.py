"""Every option we hand to TRL, transformers, peft and DeepSpeed, checked in the check phase in our words: the flag,
its value and what is allowed. The libraries check some of these late (after the model has loaded, or at the first
training step) and name their own fields; the rest they take silently and misbehave.

A rule is a function `config -> message or None`. `RULES` hold for every method whose config has the field; a
method's own rules (its loss types, its beta range, ...) are `option_rules` on its config class in
`rlhf_args/<method>.py`. Both run in `OurDefaults.__post_init__` (rlhf_args/base.py) before TRL's and
transformers' own `__post_init__`, so that no library sees a bad value first. The adapter options (CommonArgs)
are checked by `check_adapter`, from `check_run` (main_train), against the model's module names read from its
config.json alone (a skeleton on the `meta` device: no weights).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from utils.cli.deepspeed_checks import check_deepspeed, world_size
from utils.core.errors import UserError, show

Rule = Callable[[object], "str | None"]


def in_range(name: str, ok: Callable[[object], bool], expected: str, problem: str = "is out of range") -> Rule:
    """`--name VALUE problem; expected EXPECTED.` unless the field is unset (None) or `ok(value)`."""
    def rule(config):
        value = getattr(config, name, None)
        if value is None:
            return None
        try:
            good = ok(value)
        except TypeError:  # a YAML value of another type (a list for a number, ...)
            good = False
        return None if good else f"--{name} {show(value)} {problem}; expected {expected}."
    return rule


def integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def at_least_one(name: str, what: str = "an integer >= 1") -> Rule:
    return in_range(name, lambda v: integer(v) and v >= 1, what)


def positive(name: str, what: str = "a number > 0") -> Rule:
    return in_range(name, lambda v: v > 0, what)


def fraction(name: str, low_open: bool = False, high_open: bool = False) -> Rule:
    """A value in [0, 1], with either end open."""
    ends = ("(" if low_open else "[") + "0, 1" + (")" if high_open else "]")
    return in_range(name, lambda v: (v > 0 if low_open else v >= 0) and (v < 1 if high_open else v <= 1),
                    f"a fraction in {ends}")


def one_of(name: str, allowed: Iterable[str], what: str) -> Rule:
    """Each value (a list field: each item) one of `allowed`; `what` names them, e.g. "a DPO loss"."""
    allowed = tuple(allowed)

    def rule(config):
        value = getattr(config, name, None)
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if item is not None and item not in allowed:
                names = ", ".join(str(a) for a in allowed if not isinstance(a, bool))  # True / False: YAML only
                return f"--{name} {show(item)} is not {what}; expected one of {names}."
        return None
    return rule


TOKENS = "a number of tokens >= 1 (leave it unset for no limit)"
RULES: tuple[Rule, ...] = (
    at_least_one("per_device_train_batch_size"),
    at_least_one("gradient_accumulation_steps"),
    in_range("learning_rate", lambda v: v >= 0, "a step size >= 0", problem="is negative"),
    in_range("max_grad_norm", lambda v: v >= 0, "a gradient norm >= 0 (0 turns clipping off)"),
    at_least_one("max_length", TOKENS),
    at_least_one("max_prompt_length", TOKENS),
    at_least_one("max_completion_length", TOKENS),
    at_least_one("max_new_tokens", "a number of tokens >= 1"),
    positive("temperature", "a number > 0 (the logits are divided by it)"),
    fraction("top_p", low_open=True),
    in_range("top_k", lambda v: integer(v) and v >= 0, "an integer >= 0 (0 turns top-k sampling off)"),
    fraction("min_p"),
    positive("repetition_penalty", "a number > 0 (1 = none)"),
)


def check_options(config, rules: Iterable[Rule] = ()) -> None:
    """The first broken rule of RULES, then of `rules` (the method's), as a UserError; the DeepSpeed config last."""
    for rule in (*RULES, *rules, check_deepspeed):
        message = rule(config)
        if message:
            raise UserError(message)


# ------------------------------------------------------------------------------ shared by some methods
def generation_batch(config) -> str | None:
    """GRPO / RLOO: each generation batch holds whole groups of --num_generations completions of one prompt (TRL's
    GRPOConfig / RLOOConfig.__post_init__, there in TRL's field names)."""
    n, per, world = config.num_generations, config.per_device_train_batch_size, world_size()
    if not (integer(n) and n >= 2):
        return None  # the method's own --num_generations rule says what is wrong
    size, steps = config.generation_batch_size, config.steps_per_generation
    procs = f"{world} process{'es' if world > 1 else ''}"
    if size is not None and steps is not None:
        return (f"--generation_batch_size {size} and --steps_per_generation {steps} are both set; expected one of "
                "them at most (generation_batch_size = per_device_train_batch_size x processes x "
                "steps_per_generation).")
    if size is None:
        flag = "--steps_per_generation" if steps else "--gradient_accumulation_steps"
        steps = steps or config.gradient_accumulation_steps
        size, how = per * world * steps, f"--per_device_train_batch_size {per} x {procs} x {flag} {steps}"
    elif size % (per * world):
        return (f"--generation_batch_size {size} is not a multiple of the batch of one step, --per_device_train_"
                f"batch_size {per} x {procs} = {per * world}; expected a multiple of {per * world}.")
    else:
        how = f"--generation_batch_size {size}"
    if size % n:
        return (f"--num_generations {n} does not divide the generation batch of {size} completions ({how}): each "
                f"batch must hold whole groups of {n} completions of one prompt; expected --num_generations a "
                f"divisor of {size} (>= 2), or a batch that is a multiple of {n}.")
    eval_on = str(getattr(config.eval_strategy, "value", config.eval_strategy)) != "no"
    m = config.num_generations_eval or n
    if eval_on and (config.per_device_eval_batch_size * world) % m:
        flag = "--num_generations_eval" if config.num_generations_eval else "--num_generations"
        return (f"{flag} {m} does not divide the evaluation batch, --per_device_eval_batch_size "
                f"{config.per_device_eval_batch_size} x {procs}; expected an evaluation batch that is a multiple "
                f"of {m}.")
    return None


def no_sync_with_precompute(config) -> str | None:
    """DPO / KTO: a reference synchronised with the policy cannot have its log-probs computed once up front."""
    if config.sync_ref_model and config.precompute_ref_log_probs:
        return ("--sync_ref_model true updates the reference during training, and --precompute_ref_log_probs true "
                "(our default) computes its log-probs once before training; expected --precompute_ref_log_probs "
                "false with --sync_ref_model true.")
    return None


def no_sync_without_reference(config) -> str | None:
    """GRPO / RLOO: with beta 0 no reference model exists to synchronise."""
    if config.sync_ref_model and not config.beta:
        return (f"--sync_ref_model true with --beta {config.beta}: with beta 0 there is no reference model to "
                "synchronise; expected --beta > 0 or --sync_ref_model false.")
    return None


# ------------------------------------------------------------------------------------------ adapters
def check_adapter(common, config, head: str = "causal") -> None:
    """--lora_rank, --lora_alpha, --lora_dropout, --lora_target_modules in lora / qlora mode (peft would refuse
    the first and the last only once the model has loaded, and takes a negative alpha silently)."""
    if common.train_mode == "full":
        return
    rules = (at_least_one("lora_rank", "an integer >= 1 (the rank of the adapter matrices)"),
             positive("lora_alpha", "a number > 0 (the adapter's output is scaled by lora_alpha / lora_rank)"),
             fraction("lora_dropout", high_open=True))
    for rule in rules:
        message = rule(common)
        if message:
            raise UserError(message)
    targets = common.lora_target_modules
    if targets == ["all-linear"]:
        return
    if "all-linear" in targets:
        raise UserError(f"--lora_target_modules {show(targets)}: all-linear stands alone (every linear layer but the "
                        "output head); expected either all-linear or a list of module names.")
    modules = skeleton_modules(common.model_name_or_path, head, config.trust_remote_code)
    if modules is None:  # no config.json to read (GGUF, ...): peft's own error, reworded, comes in the build phase
        return
    linear = sorted({name.rsplit(".", 1)[-1] for name, module in modules.items() if name and _linear(module)})
    for target in targets:
        hits = [module for name, module in modules.items() if name == target or name.endswith("." + target)]
        if not any(_adaptable(module) for module in hits):
            found = (f"names only modules peft cannot adapt ({', '.join(sorted({type(m).__name__ for m in hits}))})"
                     if hits else "matches no module of the model")
            raise UserError(f"--lora_target_modules {target} {found} at {common.model_name_or_path}; expected names "
                            f"of its linear layers (the last part of a module's name): {', '.join(linear)}; or "
                            "all-linear.")


def _linear(module) -> bool:
    import torch

    return isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D"  # transformers' GPT-2 layers


def _adaptable(module) -> bool:
    """A layer type peft's LoRA wraps (peft/tuners/lora/model.py, its dispatchers)."""
    import torch

    nn = torch.nn
    return _linear(module) or isinstance(module, (nn.Embedding, nn.Conv1d, nn.Conv2d, nn.Conv3d,
                                                  nn.MultiheadAttention))


def skeleton_modules(path: str, head: str, trust_remote_code: bool) -> dict | None:
    """{module name: module} of the model at `path`, built from its config.json on the `meta` device (no weights
    read, no memory taken); None where there is no config.json to read."""
    from utils.model import gguf

    if gguf.is_gguf(path):
        return None
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    score = head == "score"
    try:
        model_config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code,
                                                  **({"num_labels": 1} if score else {}))
    except (OSError, ValueError):  # an adapter directory (adapter_config.json), ...: the build phase says more
        return None
    auto = AutoModelForSequenceClassification if score else AutoModelForCausalLM
    with torch.device("meta"):
        try:
            model = auto.from_config(model_config, trust_remote_code=trust_remote_code)
        except ValueError:  # an architecture without this head: load_model says so in the build phase
            return None
    return dict(model.named_modules())


def check_run(method, common, config, train_modes) -> None:
    """What holds for every method beyond the ranges of the config's own options (the rules above, checked as the
    config is built); the method's own rules with the data are its `check`. `train_modes`: common_args'."""
    if common.train_mode not in train_modes:
        raise UserError(f"--train_mode {common.train_mode!r} is not a mode; expected one of {', '.join(train_modes)}.")
    if not config.output_dir:
        raise UserError("--output_dir is required: the directory where the model, metrics and checkpoints go.")
    if not 0.0 <= common.eval_split < 1.0:
        raise UserError(f"--eval_split {common.eval_split} is out of range; expected a fraction in [0, 1).")
    check_adapter(common, config, method.head)  # --lora_*: ranges, and target modules against the model's config
    from transformers.integrations import get_available_reporting_integrations

    missing = [r for r in config.report_to if r not in get_available_reporting_integrations()]
    if missing:
        raise UserError(f"--report_to {' '.join(missing)}: {', '.join(missing)} is not installed; install it (pip "
                        "install tensorboard, wandb, ...) or pass --report_to none.")
    check_tools(method, common, config)
    from utils.model.dtype import check_precision

    check_precision(common, config)
    if config.fp16 and not method.fp16_ok:
        raise UserError(f"--fp16 is refused for {method.name}: the CPO/SimPO/ORPO family's log-sigmoid losses "
                        "overflow in half precision and turn NaN. Use --bf16 true (GPUs since Ampere) or fp32 "
                        "(neither flag).")


def check_tools(method, common, config) -> None:
    """--tools, --environment, --tool_timeout and --max_tool_calling_iterations against what the method does with
    tools (`Method.tools`); the tools themselves are imported and checked where they are used."""
    given = [f for f, v in (("--tools", common.tools), ("--environment", common.environment)) if v]
    if given and method.tools is None:
        why = method.no_tools or (f"{method.name} takes no tools: SFT and DPO render tool schemas into the rows, "
                                  "GRPO calls tools while it samples")
        raise UserError(f"{' and '.join(given)} given to --rlhf_type {method.name}: {why}.")
    if common.environment and method.tools != "run":
        raise UserError(f"--environment given to --rlhf_type {method.name}: an environment runs while the model "
                        "samples, which only GRPO does; for tool-use rows give --tools (their schemas).")
    if not common.tool_timeout > 0:
        raise UserError(f"--tool_timeout {common.tool_timeout} is out of range; expected seconds > 0.")
    iterations = getattr(config, "max_tool_calling_iterations", None)
    if iterations is not None and not (integer(iterations) and iterations >= 1):
        raise UserError(f"--max_tool_calling_iterations {iterations} is out of range; expected an integer >= 1 (unset: "
                        "no limit but --max_completion_length).")
    if iterations is not None and method.tools == "run" and not given:
        raise UserError(f"--max_tool_calling_iterations {iterations} without tools: expected --tools "
                        "module:function ... or --environment module:Class.")


def check_online_reference(common, config, columns=None) -> None:
    """RLOO and GRPO (their `check`): the reference model `--beta` asks for can be built from the policy, and
    `--sync_ref_model` has a separate reference to sync (the trainer raises NotImplementedError when built)."""
    from utils.model.gguf import refuse_reference_from_file

    refuse_reference_from_file(common, f"--beta {config.beta}" if config.beta else None, "--beta 0")
    if config.sync_ref_model and common.train_mode != "full":
        raise UserError(f"--sync_ref_model true needs a separate reference model, and --train_mode {common.train_mode} "
                        "has none (the reference is the policy with its adapter switched off); expected "
                        "--train_mode full or --sync_ref_model false.")
