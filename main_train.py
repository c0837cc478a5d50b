"""One entry point for every method, in two phases.

    python main_train.py --rlhf_type DPO --train_mode lora --model_name_or_path PATH \
        --train_data_path data.jsonl --output_dir out [any field of the method's TRL config]
    python main_train.py --config run.yaml [--flag value ...]   # the file's options; flags win over it
    python main_train.py --rlhf_type DPO --help                  # every option of one method

1. Check, reading nothing but configs and tokenizers: flags, paths, every data row, the method's own rules,
   reward functions imported and counted, teacher / critic / reward-model tokenizers. A mistake is one
   paragraph and exit code 2, before any weights load and before output_dir is created.
2. Build and train: the models loaded, the method's trainer built and run, the result saved.
Nothing here names a method: what is particular to one is declared in its `rlhf_args/<method>.py`.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from dataclasses import dataclass

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
# TRL 1.16 and peft 0.21 read transformers 5.23's deprecated `is_gradient_checkpointing`; nothing a user can act on.
# No upstream report found (searched "is_gradient_checkpointing deprecated peft TRL", 2026-12-02); drop when both stop.
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)

from utils.cli import args as cli  # noqa: E402
from utils.core.errors import UserError, rename  # noqa: E402
from utils.runtime.resume import Finished  # noqa: E402
from utils.runtime.saving import SaveFailed, finish  # noqa: E402
from utils.runtime.outputs import EXIT_SAVE_FAILED, EXIT_USER_ERROR, undo_output_dir  # noqa: E402
from utils.cli.options import answer_front, make_parser, option_strings, write_options_cache  # noqa: E402

log = logging.getLogger("main_train")
RENAMED = {"model_dtype": "dtype"}  # old flag -> new; the old name works for one more release


# ------------------------------------------------------------------------------------------ parsing
def _read(argv: list[str]):
    """(flags, the YAML config's mapping, its path, the raw values of the flags the early checks read)."""
    config_path, argv = cli.split_config(argv)
    argv, yaml_config = rename(argv, cli.read_config(config_path), RENAMED, "main_train.py")
    return argv, yaml_config, config_path, cli.raw_values(argv, yaml_config)


def parse_args(argv: list[str], cache_is_current: bool = True):
    """argv (with or without a YAML config) -> (method, CommonArgs, the method's config), checked."""
    return _parse(*_read(argv), cli.load_cache() if cache_is_current else None)


def _parse(argv, yaml_config, config_path, values, table: dict | None):
    """`table`: the options table (the cache); None: built from the parsers, and the cache written."""
    from common_args import CommonArgs
    from rlhf_args import METHODS

    from utils.core.distributed import process_defaults

    table = table or write_options_cache(METHODS, CommonArgs)
    process_defaults()
    method = METHODS[answer_front(table, argv, yaml_config, values, config_path)]
    parser = make_parser([CommonArgs, method.config])
    options = option_strings(parser)
    lists = {a.dest for a in parser._actions if a.nargs in ("+", "*")}
    parser.set_defaults_with_config(**{k: [v] if k in lists and not isinstance(v, list) else v
                                       for k, v in yaml_config.items()})
    try:
        common, config, rest = parser.parse_args_into_dataclasses(argv, return_remaining_strings=True)
    except ValueError as e:  # raised by a TRL / transformers config __post_init__
        raise UserError(f"The {method.name} configuration was refused: {e}") from e
    cli.refuse_unknown(rest, [], options, method.name, config_path)
    common.rlhf_type = method.name
    from common_args import TRAIN_MODES
    from utils.cli.option_checks import check_run

    check_run(method, common, config, TRAIN_MODES)
    return method, common, config


# ------------------------------------------------------------------------------------- check phase
@dataclass
class Needs:
    """What a trainer takes besides model, data and tokenizer, checked; build_trainer builds it."""

    rewards: object = None  # utils.model.rewards.RewardSources
    teacher_tokenizer: object = None  # utils.trainers.teacher.check_teacher
    critic: object = None  # utils.ppo.models.CriticPlan
    evaluation: object = None  # utils.evaluation.run.Plan: --evaluate_after, run once the final model is saved
    data_report: dict | None = None  # utils.data.lengths.report, written to output_dir/data_report.json
    origin: object = None  # i -> FILE:LINE of training row i (utils.runtime.row_trace.row_origin), for the NaN guard
    tools: object = None  # utils.trainers.tools.ToolPlan: what GRPO calls while it samples
    processor: object = None  # a vision-language model's processor: TRL's processing_class (utils/model/vision.py)


def check_needs(method, common, config, tokenizer, train, rows=None, processor=None) -> Needs:
    if method.check:
        method.check(common, config, train.column_names)
    from utils.data.lengths import check_and_report
    from utils.runtime.row_trace import row_origin
    from utils.trainers.tools import check_tools

    needs = Needs(data_report=check_and_report(rows, config, method.drops), tools=check_tools(method, common, tokenizer),
                  origin=row_origin(train, rows), processor=processor)
    if method.rewards:
        from utils.model.rewards import check_reward_sources

        needs.rewards = check_reward_sources(common.reward_model_path, common.reward_funcs, config.reward_weights,
                                             config.trust_remote_code, getattr(needs.tools, "owns_reward", False))
    if method.teacher:
        from utils.trainers.teacher import check_teacher

        needs.teacher_tokenizer = check_teacher(config, tokenizer)
    if method.critic:
        from utils.ppo.models import check_critic

        needs.critic = check_critic(common, config, tokenizer, needs.rewards)
    if common.evaluate_after or common.eval_prompts_path:
        from utils.evaluation.run import check_after_training

        needs.evaluation = check_after_training(method, common, config, tokenizer, needs.rewards)
    return needs


def load_data(method, common, tokenizer, rows: dict | None = None, config=None, processor=None):
    """Train (and eval) datasets; `rows`: the data as the early checks read it (filled in here when empty)."""
    from utils.data.loading import train_and_eval

    return train_and_eval(common, method, tokenizer, {} if rows is None else rows, config, processor)


def check_phase(argv: list[str]):
    """Everything that can be checked without weights, cheapest first. Returns what the build phase needs."""
    argv, yaml_config, config_path, values = _read(argv)
    cache, rows = cli.load_cache(), {}
    if cache is not None:  # before any heavy import: help, method, option names
        entry = cache["methods"][answer_front(cache, argv, yaml_config, values, config_path)]
    cli.check_paths(values)
    from utils.data.formats import DataOptions

    options = DataOptions.of(values)
    if cache is not None and options is not None:
        from utils.data.loading import check_rows

        for what in ("train_data_path", "eval_data_path"):
            if values.get(what):
                rows[what] = check_rows(values[what], entry["data"], what, options)
    method, common, config = _parse(argv, yaml_config, config_path, values, cache)
    from rlhf_args import METHODS
    from utils.cli.vision_checks import check_vision, processor_for
    from utils.model.loading import load_tokenizer
    tokenizer = load_tokenizer(common.tokenizer_name_or_path or common.model_name_or_path, config.trust_remote_code)
    processor = processor_for(common, config)  # a vision-language model's (docs/vision.md), else None
    train, evals = load_data(method, common, tokenizer, rows, config, processor)
    check_vision(method, common, config, rows, processor, cli.explicit(argv, yaml_config), METHODS)
    needs = check_needs(method, common, config, tokenizer, train, rows.get("train_data_path"), processor)
    return method, common, config, tokenizer, train, evals, needs


# ------------------------------------------------------------------------------------- build phase
def build_trainer(method, common, config, tokenizer, train, evals, callbacks, needs: Needs | None = None):
    from utils.model import gguf
    from utils.core.distributed import shared_datasets
    from utils.core.errors import reword
    from utils.model.adapters import lora_config
    from utils.model.dtype import describe, resolve_dtype, trained_dtype
    from utils.model.loading import load_model
    from utils.runtime.precision import keep_master_weights
    from utils.trainers.trainable import check_trainable, settle

    needs = needs or check_needs(method, common, config, tokenizer, train)
    dtype = resolve_dtype(common.dtype, config.bf16, config.fp16)  # frozen weights: reference, teacher, reward, base
    weights = trained_dtype(common.dtype, config.bf16, config.fp16, common.train_mode == "full", common.pure_bf16)
    log.info(describe(config, weights, dtype, common.train_mode))
    model = load_model(common.model_name_or_path, tokenizer, head=method.head, dtype=weights,
                       load_in_4bit=common.train_mode == "qlora", trust_remote_code=config.trust_remote_code)
    train, evals = shared_datasets(config, train, evals)  # precompute_ref_log_probs with several processes
    settle(model, common, config, needs.processor)  # frozen parts, DDP's search for unused parameters
    try:  # what peft, TRL or DeepSpeed still refuse once the model is there, named by our flags (utils/core/errors.py)
        peft_config = lora_config(common, method.head, model)
        kwargs = dict(model=model, args=config, train_dataset=train, eval_dataset=evals, callbacks=callbacks,
                      processing_class=needs.processor or tokenizer, peft_config=peft_config)
        if needs.rewards is not None:
            kwargs["reward_funcs"] = needs.rewards.build(dtype)
        kwargs.update(needs.tools.trainer_kwargs() if needs.tools is not None else {})  # GRPO's tools
        if needs.teacher_tokenizer is not None:
            from utils.trainers.teacher import load_teacher

            kwargs["teacher_model"] = load_teacher(config, needs.teacher_tokenizer, dtype)
        if needs.critic is not None:
            from utils.ppo.models import build_ppo_models

            kwargs.update(build_ppo_models(needs.critic, common, config, tokenizer, dtype, model,
                                           kwargs["reward_funcs"], peft_config))
        trainer = method.trainer()(**kwargs)
    except (ValueError, TypeError, NotImplementedError) as e:
        user = reword(e, common, config, f"The {method.name} trainer",
                      gguf.trainer_hint(common.model_name_or_path, common.train_mode == "full"))
        if user is None:  # a TypeError that names no option: a bug of ours, with its traceback
            raise
        raise user from e
    check_trainable(trainer, method.name, config)  # rows left, and at least one whole batch of them
    keep_master_weights(trainer, common.pure_bf16)  # float32 master weights (--pure_bf16: a watch on what is lost)
    return trainer


def main(argv: list[str] | None = None) -> int:
    import signal
    import threading
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    # Until training starts, SIGTERM ends the run through the exit handlers (the scratch copy of the data removed).
    main_thread = threading.current_thread() is threading.main_thread()
    terminate = signal.signal(signal.SIGTERM, _terminated) if main_thread else None
    try:
        return _main(argv)
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (_terminated), before training started
        print("Interrupted before training started; nothing was written.", file=sys.stderr)
        return 128 + getattr(e, "signum", signal.SIGINT)
    finally:
        from utils.runtime.run_dir import release

        release()  # output_dir's lock (utils/runtime/run_dir.py), on every exit path
        if main_thread:
            signal.signal(signal.SIGTERM, terminate)


def _terminated(signum, frame):
    interrupt = KeyboardInterrupt()
    interrupt.signum = signum
    raise interrupt


def _main(argv: list[str]) -> int:
    out = before = None
    try:
        method, common, config, tokenizer, train, evals, needs = check_phase(argv)
        out = config.output_dir
        before = set(os.listdir(out)) if os.path.isdir(out) else None
        from utils.runtime.run_dir import claim, start

        record = claim(method, common, config)  # output_dir held; the checkpoint to resume picked and compared
        from utils.runtime.callbacks import StopOnSignal
        from utils.runtime.non_finite import StopOnNonFinite

        guard = StopOnNonFinite()
        trainer = build_trainer(method, common, config, tokenizer, train, evals, [guard], needs)
        guard.attach(trainer, needs.origin)
        from utils.data.lengths import write

        write(needs.data_report, out)
    except UserError as e:
        undo_output_dir(out, before)
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Finished as e:  # --resume_from_checkpoint latest / auto, and the run already reached its end
        undo_output_dir(out, before)
        print(e, file=sys.stderr)
        return 0
    except KeyboardInterrupt:
        undo_output_dir(out, before)
        raise
    log.info("%s (%s) on %d rows -> %s", method.name, common.train_mode, len(train), config.output_dir)
    stop = StopOnSignal()  # from here on, Ctrl-C saves a checkpoint first
    trainer.add_callback(stop)
    try:
        start(trainer, argv, record, common.overwrite_output_dir)  # whole-or-absent checkpoints; old run cleared
        trainer.train(resume_from_checkpoint=config.resume_from_checkpoint)
    except (SaveFailed, UserError) as e:  # a full disk (the half-written checkpoint gone); user code we call that fails
        print(f"error: {e}", file=sys.stderr)
        return EXIT_SAVE_FAILED if isinstance(e, SaveFailed) else EXIT_USER_ERROR
    except RuntimeError as e:  # sampling on non-finite probabilities (online methods): the NaN guard's verdict
        if not guard.sampling_failed(trainer, e):
            raise
    except (ValueError, NotImplementedError) as e:  # a library's late refusal of a flag's value (utils/core/errors.py)
        from utils.core.errors import reword

        user = reword(e, common, config, f"{method.name} training", named_only=True)
        if user is None:
            raise
        print(f"error: {user}", file=sys.stderr)
        return EXIT_USER_ERROR
    finally:
        stop.restore()
    return finish(trainer, guard, stop, argv, tokenizer, evals, needs.evaluation and (lambda: _evaluate(needs)))


def _evaluate(needs: Needs) -> int:  # --evaluate_after: the final model against the starting model, into output_dir/eval
    from utils.evaluation.run import run_after_training

    return run_after_training(needs.evaluation)


if __name__ == "__main__":
    from utils.core.imports import hide_unused_bitsandbytes

    hide_unused_bitsandbytes(sys.argv[1:])
    code = main()
    from utils.core.distributed import exit_process

    exit_process(code)
