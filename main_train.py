"""One entry point for every method: parse, validate, load data, build models, pick the trainer,
train, save.

    python main_train.py --rlhf_type DPO --train_mode lora --model_name_or_path PATH \
        --train_data_path data.jsonl --output_dir out [any field of the method's TRL config]
    python main_train.py run.yaml          # the same options as a YAML mapping
    python main_train.py --rlhf_type DPO --help   # every option of one method

User mistakes (bad flag, file, field, combination) print one paragraph and exit with code 2 before
anything heavy is loaded and before `output_dir` is created.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import os
import sys

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

from common_args import TRAIN_MODES, CommonArgs  # noqa: E402
from rlhf_args import METHODS, Method, method_names  # noqa: E402
from utils.errors import UserError  # noqa: E402

log = logging.getLogger("main_train")
EXIT_USER_ERROR, EXIT_NON_FINITE = 2, 3


# ----------------------------------------------------------------------------------------- parsing
def _yaml_to_argv(path: str) -> list[str]:
    """A YAML mapping becomes the equivalent flags, so both paths share one parser and one set of checks."""
    import yaml

    try:
        with open(path) as f:
            raw = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"{path}: could not read the YAML config: {e}") from e
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of option names to values at the top level.")
    argv = []
    for key, value in raw.items():
        values = value if isinstance(value, list) else [value]
        argv.append(f"--{key}")
        for v in values:
            argv.append(json.dumps(v) if isinstance(v, dict) else str(v).lower() if isinstance(v, bool) else str(v))
    return argv


class _Parser:
    """HfArgumentParser whose argparse errors become UserErrors (one paragraph, exit 2)."""

    def __new__(cls, dataclasses_):
        from transformers import HfArgumentParser

        class Parser(HfArgumentParser):
            def error(self, message):
                raise UserError(f"{message}. Run `python main_train.py --rlhf_type TYPE --help` for every option.")

        return Parser(dataclasses_)


def parse_args(argv: list[str]) -> tuple[Method, CommonArgs, object]:
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml")):
        argv = _yaml_to_argv(argv[0])
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--rlhf_type")
    pre.add_argument("-h", "--help", action="store_true")
    known, _ = pre.parse_known_args(argv)
    if known.rlhf_type is None:
        if known.help:
            _Parser([CommonArgs]).print_help()
            print(f"\nMethods: {method_names()}.\nEvery option of one method, with its TRL config fields: "
                  "python main_train.py --rlhf_type TYPE --help")
            sys.exit(0)
        raise UserError(f"--rlhf_type is required; expected one of {method_names()}.")
    method = METHODS.get(known.rlhf_type.lower())
    if method is None:
        raise UserError(f"--rlhf_type {known.rlhf_type!r} is not a method; expected one of {method_names()} "
                        "(case-insensitive).")
    parser = _Parser([CommonArgs, method.config_class()])
    valid = {a.dest for a in parser._actions}
    try:
        common, config, rest = parser.parse_args_into_dataclasses(argv, return_remaining_strings=True)
    except ValueError as e:  # raised by a TRL / transformers config __post_init__
        raise UserError(f"The {method.name} configuration was refused: {e}") from e
    if rest:
        flags = [r for r in rest if r.startswith("--")] or rest
        hints = []
        for flag in flags:
            close = difflib.get_close_matches(flag.lstrip("-").split("=")[0], valid, n=3)
            hints.append(f"{flag}" + (f" (did you mean {', '.join('--' + c for c in close)}?)" if close else ""))
        raise UserError(f"Unknown option(s) for --rlhf_type {method.name}: {'; '.join(hints)}. Run "
                        f"`python main_train.py --rlhf_type {method.name} --help` to list every option.")
    common.rlhf_type = method.name
    check_args(method, common, config)
    return method, common, config


def check_args(method: Method, common: CommonArgs, config) -> None:
    """Combinations that cannot work, refused before anything is loaded."""
    if common.train_mode not in TRAIN_MODES:
        raise UserError(f"--train_mode {common.train_mode!r} is not a mode; expected one of {', '.join(TRAIN_MODES)}.")
    if not config.output_dir:
        raise UserError("--output_dir is required: the directory where the model, metrics and checkpoints go.")
    if not 0.0 <= common.eval_split < 1.0:
        raise UserError(f"--eval_split {common.eval_split} is out of range; expected a fraction in [0, 1).")
    if config.fp16 and not method.fp16_ok:
        raise UserError(f"--fp16 is refused for {method.name}: the CPO/SimPO/ORPO family's log-sigmoid losses "
                        "overflow in half precision and turn NaN. Use --bf16 true (GPUs since Ampere) or fp32 "
                        "(neither flag).")
    if method.name in ("SimPO", "CPOSimPO") and config.loss_type != "simpo":
        raise UserError(f"--rlhf_type {method.name} uses --loss_type simpo, got {config.loss_type!r}; for other "
                        "CPO losses use --rlhf_type CPO.")
    if method.name == "SimPO" and config.cpo_alpha != 0:
        raise UserError(f"--rlhf_type SimPO has no NLL term (cpo_alpha = 0), got --cpo_alpha {config.cpo_alpha}; "
                        "SimPO with an NLL term is --rlhf_type CPOSimPO.")
    if method.name == "CPOSimPO" and config.cpo_alpha <= 0:
        raise UserError("--rlhf_type CPOSimPO needs --cpo_alpha > 0 (the weight of the NLL term); with 0 it is "
                        "--rlhf_type SimPO.")
    if method.rewards and not (common.reward_model_path or common.reward_funcs):
        raise UserError(f"--rlhf_type {method.name} needs a reward source: --reward_model_path PATH [PATH ...] "
                        "and/or --reward_funcs module:function [...].")


# -------------------------------------------------------------------------------------- building
def load_data(method: Method, common: CommonArgs, tokenizer):
    from utils.data import load_dataset_checked

    train = load_dataset_checked(common.train_data_path, method.data, tokenizer, what="train_data_path")
    evals = None
    if common.eval_data_path:
        evals = load_dataset_checked(common.eval_data_path, method.data, tokenizer, what="eval_data_path")
    elif common.eval_split > 0:
        split = train.train_test_split(test_size=common.eval_split, seed=0)
        train, evals = split["train"], split["test"]
    return train, evals


def build_trainer(method: Method, common: CommonArgs, config, tokenizer, train, evals, callbacks):
    from utils.models import lora_config, load_model, resolve_dtype

    trust = getattr(config, "trust_remote_code", False)
    if getattr(config, "assistant_only_loss", False) is None:  # SFT: see rlhf_args/sft.py
        config.assistant_only_loss = "messages" in train.column_names
    dtype = resolve_dtype(common.model_dtype, config.bf16, config.fp16)
    model = load_model(common.model_name_or_path, tokenizer, head=method.head, train_mode=common.train_mode,
                       dtype=dtype, trust_remote_code=trust)
    from utils.distributed import shared_datasets

    train, evals = shared_datasets(config, train, evals)  # precompute_ref_log_probs with several processes
    kwargs = dict(model=model, args=config, train_dataset=train, eval_dataset=evals, processing_class=tokenizer,
                  callbacks=callbacks, peft_config=lora_config(common, method.head))
    if method.extras:  # reward sources, teacher, critic: whatever the method's trainer takes besides
        from rlhf_args import _load

        kwargs.update(_load(method.extras)(common, config, tokenizer, dtype))
    try:
        return method.trainer_class()(**kwargs)
    except ValueError as e:  # TRL validates option combinations when the trainer is built
        raise UserError(f"{method.name} trainer refused the configuration: {e}") from e


def save_outputs(trainer, tokenizer, output_dir: str) -> None:
    from utils.distributed import prepare_final_save

    prepare_final_save(trainer)  # FSDP / ZeRO-3: gather a whole model, whatever the checkpoint settings
    trainer.save_model(output_dir)  # safetensors; a PEFT adapter directory in lora / qlora mode
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(output_dir)
        trainer.state.save_to_json(os.path.join(output_dir, "trainer_state.json"))


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    try:
        method, common, config = parse_args(sys.argv[1:] if argv is None else argv)
        from utils.models import load_tokenizer

        tokenizer = load_tokenizer(common.tokenizer_name_or_path or common.model_name_or_path,
                                   getattr(config, "trust_remote_code", False))
        train, evals = load_data(method, common, tokenizer)
        from utils.callbacks import StopOnNonFinite

        guard = StopOnNonFinite()
        trainer = build_trainer(method, common, config, tokenizer, train, evals, [guard])
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    log.info("%s (%s) on %d rows -> %s", method.name, common.train_mode, len(train), config.output_dir)
    try:
        trainer.train(resume_from_checkpoint=config.resume_from_checkpoint)
    except UserError as e:  # raised mid-run by user code we call, e.g. a reward function that fails or miscounts
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    if guard.tripped:
        step, key, value = guard.tripped
        print(f"error: {key} became {value} at step {step}; training stopped there and the final model was not "
              f"saved. The last good checkpoint (if any) is in {config.output_dir}. Lower the learning rate, use "
              "bf16 or fp32 rather than fp16, or check the data for empty or very long rows.", file=sys.stderr)
        if trainer.is_world_process_zero():
            trainer.state.save_to_json(os.path.join(config.output_dir, "trainer_state.json"))
        return EXIT_NON_FINITE
    if evals is not None:
        trainer.evaluate()
    save_outputs(trainer, tokenizer, config.output_dir)
    log.info("saved to %s", config.output_dir)
    return 0


if __name__ == "__main__":
    from utils.imports import hide_unused_bitsandbytes

    hide_unused_bitsandbytes(sys.argv[1:])
    code = main()
    from utils.distributed import exit_process

    exit_process(code)
