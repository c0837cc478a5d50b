"""The DeepSpeed config checked against the flags in the check phase (one rule of utils/cli/option_checks.py).

transformers fills each "auto" value of a DeepSpeed config from the TrainingArguments and compares every number
with them (`HfTrainerDeepSpeedConfig.trainer_config_process`), but reports a difference only in
`trainer_config_finalize`, once the model has loaded and training starts, in its own field names. A file that does
not exist or does not parse fails in TrainingArguments with the path alone; one without `zero_optimization` is
refused by accelerate's DeepSpeedPlugin. All of that is checked here first, naming our flags. The config is
`--deepspeed FILE`, or under `accelerate launch` with a DeepSpeed accelerate config its `deepspeed_config_file`
(or, without one, its gradient_accumulation_steps / gradient_clipping), which accelerate passes on in the
environment.
"""

from __future__ import annotations

import json
import os

from utils.core.errors import show

AUTO = '"auto" there (the value is then taken from the flags)'


def check_deepspeed(config) -> str | None:
    """What is wrong with the run's DeepSpeed config, or None (also when there is none)."""
    if config.deepspeed:
        name = f"--deepspeed {config.deepspeed}" if isinstance(config.deepspeed, str) else "--deepspeed"
        ds, problem = _read(config.deepspeed, name)
    elif os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() in ("1", "true", "yes"):
        path = os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE", "none")
        if path == "none":
            return _accelerate_fields(config)
        name = f"The accelerate config's deepspeed_config_file {path}"
        ds, problem = _read(path, name)
    else:
        return None
    return problem or _compare(ds, name, config) or _launcher(config, name)


def _launcher(config, name: str) -> str | None:
    """`--deepspeed` in a process no launcher started: DeepSpeed would look for MPI to find its peers and fail."""
    from utils.core.distributed import launched

    if not config.deepspeed or launched():
        return None
    return (f"{name} needs a launcher that starts the processes DeepSpeed joins (run as plain `python`, DeepSpeed "
            "fails looking for MPI); expected `torchrun --nproc_per_node N main_train.py ... --deepspeed FILE` on "
            "GPUs, or `accelerate launch --config_file script/zero2.yaml main_train.py ...` (zero3.yaml: ZeRO-3; "
            "their DeepSpeed settings replace --deepspeed), which also runs on CPU.")


def _read(source, name: str) -> tuple[dict | None, str | None]:
    """(the config, None) or (None, what is wrong)."""
    if isinstance(source, dict):
        ds = source
    elif not isinstance(source, str):
        return None, f"{name}: expected the path of a DeepSpeed JSON config."
    elif os.path.isfile(source):
        try:
            with open(source, encoding="utf-8") as f:
                ds = json.load(f)
        except json.JSONDecodeError as e:
            return None, (f"{source}:{e.lineno}:{e.colno}: {name} is not valid JSON ({e.msg}); expected a DeepSpeed "
                          "JSON config such as script/zero3_offload.json.")
        except (OSError, UnicodeDecodeError) as e:
            return None, f"{name} cannot be read ({e}); expected a readable DeepSpeed JSON config."
    elif source.lstrip().startswith("{"):  # transformers also takes the JSON itself
        try:
            ds = json.loads(source)
        except json.JSONDecodeError as e:
            return None, f"{name} is not valid JSON ({e.msg}, column {e.colno}); expected a DeepSpeed JSON config."
    else:
        what = "is a directory" if os.path.isdir(source) else "does not exist"
        return None, (f"{name}: the file {what}; expected the path of a DeepSpeed JSON config (e.g. "
                      "script/zero3_offload.json), or launch with `accelerate launch --config_file script/zero2.yaml` "
                      "(or zero3.yaml) instead of --deepspeed.")
    if not isinstance(ds, dict):
        return None, f"{name} holds a JSON {type(ds).__name__}; expected a JSON object (the DeepSpeed config)."
    if not isinstance(ds.get("zero_optimization"), dict):
        return None, (f"{name} has no zero_optimization block, which accelerate requires; expected e.g. "
                      '"zero_optimization": {"stage": 2} (script/zero3_offload.json has a full example).')
    return ds, None


def _value(ds: dict, key: str):
    node = ds
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _flags(config) -> list[tuple[str, object, str, str]]:
    """(DeepSpeed key, the value our flags give it, the flags as the user wrote them, the flags that would match the
    file's value `{}`): the pairs transformers' trainer_config_process compares."""
    per, steps, world = config.per_device_train_batch_size, config.gradient_accumulation_steps, world_size()
    batch = per * steps * world
    fp16, bf16 = bool(config.fp16 or config.fp16_full_eval), bool(config.bf16 or config.bf16_full_eval)
    lr = f"--learning_rate is {config.learning_rate}"
    pairs = [("gradient_accumulation_steps", steps, f"--gradient_accumulation_steps is {steps}",
              "--gradient_accumulation_steps {}"),
             ("gradient_clipping", config.max_grad_norm, f"--max_grad_norm is {config.max_grad_norm}",
              "--max_grad_norm {}"),
             ("optimizer.params.lr", config.learning_rate, lr, "--learning_rate {}"),
             ("optimizer.params.betas", [config.adam_beta1, config.adam_beta2],
              f"--adam_beta1 {config.adam_beta1} --adam_beta2 {config.adam_beta2}", "--adam_beta1 / --adam_beta2 {}"),
             ("optimizer.params.eps", config.adam_epsilon, f"--adam_epsilon is {config.adam_epsilon}",
              "--adam_epsilon {}"),
             ("optimizer.params.weight_decay", config.weight_decay, f"--weight_decay is {config.weight_decay}",
              "--weight_decay {}"),
             ("scheduler.params.warmup_max_lr", config.learning_rate, lr, "--learning_rate {}"),
             ("fp16.enabled", fp16, f"--fp16 is {show(fp16)}", "--fp16 {}"),
             ("bf16.enabled", bf16, f"--bf16 is {show(bf16)}" + ("" if bf16 else " (unset, it is on only where the "
                                                                 "GPU has bf16)"), "--bf16 {}")]
    if not config.auto_find_batch_size:  # transformers compares these two only without it
        pairs[:0] = [("train_micro_batch_size_per_gpu", per, f"--per_device_train_batch_size is {per}",
                      "--per_device_train_batch_size {}"),
                     ("train_batch_size", batch, f"--per_device_train_batch_size {per} x --gradient_accumulation_"
                      f"steps {steps} x {world} process{'es' if world > 1 else ''} = {batch}",
                      "flags whose product is {}")]
    return pairs


def _compare(ds: dict, name: str, config) -> str | None:
    for key, ours, flags, instead in _flags(config):
        theirs = _value(ds, key)
        if theirs is not None and theirs != "auto" and theirs != ours:
            return f"{name} sets {key} {show(theirs)}, but {flags}; expected {AUTO}, or {instead.format(show(theirs))}."
    steps = config.gradient_accumulation_steps
    if "gradient_accumulation_steps" not in ds and steps != 1:
        return (f"{name} has no gradient_accumulation_steps, which accelerate then sets to 1, but "
                f"--gradient_accumulation_steps is {steps}; expected \"gradient_accumulation_steps\": \"auto\" in it.")
    return None


def _accelerate_fields(config) -> str | None:
    """An accelerate DeepSpeed config without a JSON file: its own numbers, which accelerate exports."""
    for env, key, ours, flag in (
            ("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "gradient_accumulation_steps",
             config.gradient_accumulation_steps, "--gradient_accumulation_steps"),
            ("ACCELERATE_GRADIENT_CLIPPING", "gradient_clipping", config.max_grad_norm, "--max_grad_norm")):
        raw = os.environ.get(env, "auto")
        try:
            theirs = float(raw)
        except ValueError:
            continue  # "auto", or none given
        if theirs != ours:
            return (f"The accelerate config's deepspeed_config sets {key}: {raw}, but {flag} is {ours}; expected "
                    f"that line left out (or {flag} {raw}).")
    return None


def world_size() -> int:
    """Processes of this run as torchrun / accelerate launch announce them (1 for a plain process)."""
    return int(os.environ.get("WORLD_SIZE", "1"))
