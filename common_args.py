"""Options shared by every method. Method options (learning rate, beta, batch size, ...) are the
fields of the method's TRL config in `rlhf_args/`, under their TRL names.

Names here never repeat a TRL config field (the parser would refuse two flags of one name), which
is why `trust_remote_code` and `teacher_model_name_or_path` live in the method configs, where TRL
already has them; both default to off / unset.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from utils.model.dtype import DTYPE_HELP, DTYPES

TRAIN_MODES = ("full", "lora", "qlora")


@dataclass
class CommonArgs:
    rlhf_type: str = field(
        metadata={"help": "Method (case-insensitive); `python main_train.py --help` lists them."}
    )
    model_name_or_path: str = field(metadata={"help": "Policy (student) model: a local directory or hub id."})
    train_data_path: list[str] = field(
        metadata={"help": "Training data, one or more sources: a .jsonl / .json / .parquet file, a folder of such "
                          "files (shards, e.g. a dataset as downloaded from a hub), a folder saved by `datasets`, or "
                          "a hub dataset id already in the local Hugging Face cache. Formats: docs/data.md."}
    )
    train_mode: str = field(default="lora", metadata={"help": "full | lora | qlora (4-bit NF4, double quant)."})
    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "Tokenizer to use; default: the one saved with the model."}
    )
    eval_data_path: list[str] | None = field(
        default=None, metadata={"help": "Evaluation data, one or more sources as for --train_data_path."}
    )
    train_split: str | None = field(
        default=None, metadata={"help": "The split to train on when a --train_data_path folder holds several (split "
                                        "names in file names, e.g. data/train-00000-of-00002.parquet); default train."}
    )
    data_weights: list[float] | None = field(
        default=None, metadata={"help": "One weight per --train_data_path source: the mixture's shares (a source "
                                        "asked for more rows than it has repeats them); default: all rows once."}
    )
    pairs: str = field(
        default="best_vs_worst", metadata={"help": "Ranked answers (`responses` + `scores` or `ranks`) to pairs: "
                                                    "best_vs_worst | all | adjacent; tied pairs are dropped.",
                                            "choices": ["best_vs_worst", "all", "adjacent"]}
    )
    min_score_gap: float = field(
        default=0.0, metadata={"help": "Ranked answers: keep only pairs whose scores differ by at least this."}
    )
    eval_split: float = field(
        default=0.0, metadata={"help": "Fraction (0-1) of the training rows held out for evaluation when no "
                                       "eval_data_path is given; 0 = none."}
    )
    # Adapters
    lora_rank: int = field(default=16, metadata={"help": "LoRA rank r."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA path."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["all-linear"],
        metadata={"help": "Modules that get adapters; default all linear layers but the output head."},
    )
    use_dora: bool = field(default=False, metadata={"help": "Weight-decomposed LoRA (DoRA) instead of plain LoRA."})
    # Vision-language models (docs/vision.md)
    freeze_vision_tower: bool = field(
        default=True, metadata={"help": "Vision-language models: keep the vision tower frozen (false: full mode trains "
                                        "it, LoRA puts adapters on its linear layers too)."}
    )
    freeze_multi_modal_projector: bool = field(
        default=True, metadata={"help": "Vision-language models: keep the projector between vision tower and language "
                                        "model frozen (false: trained in full, also beside a LoRA adapter)."}
    )
    max_pixels: int | None = field(
        default=None, metadata={"help": "Vision-language models: resize images to at most this many pixels (the "
                                        "processor's own option where it has one); default: the processor's size."}
    )
    # Reward sources (online RL and rejection sampling)
    reward_model_path: list[str] = field(
        default_factory=list,
        metadata={"help": "Reward model(s): sequence-classification models, each scored with its own tokenizer."},
    )
    reward_funcs: list[str] = field(
        default_factory=list,
        metadata={"help": "Python reward functions as `module:function` or `path/to/file.py:function`."},
    )
    # Tools (docs/agents.md)
    tools: list[str] = field(
        default_factory=list,
        metadata={"help": "Tools as `module:function` or `path/to/file.py:function` (type hints and a docstring with "
                          "Args: give the schema the model sees). GRPO calls them while sampling; SFT and DPO render "
                          "their schemas into rows without a `tools` field (a .json file of schemas also works "
                          "there)."},
    )
    environment: str | None = field(
        default=None,
        metadata={"help": "GRPO: an environment class `module:Class`, one instance per rollout: `reset(**row)` starts "
                          "an episode, its public methods are tools, an optional `get_reward()` scores it."},
    )
    tool_timeout: float = field(
        default=30.0, metadata={"help": "Seconds a tool call may run; a call cut there goes back to the model as an "
                                        "error result and is counted (tools/timeouts)."}
    )
    dtype: str = field(default="auto", metadata={"help": DTYPE_HELP, "choices": DTYPES})
    pure_bf16: bool = field(
        default=False, metadata={"help": "Full fine-tuning with the trained weights in bfloat16 (half their memory, no "
                                         "float32 master copy); updates below bfloat16's resolution round away, and "
                                         "the run warns with the share it lost. Default: float32 master weights."}
    )
    # Evaluation after training (utils/evaluation/run.py)
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Start a new run in an output_dir that holds another run's checkpoints or final "
                                         "model: those are deleted when training starts. Without it such a run is "
                                         "refused (resume it with --resume_from_checkpoint latest / auto instead)."}
    )
    evaluate_after: bool = field(
        default=False, metadata={"help": "After training, compare the final model with --model_name_or_path on "
                                         "--eval_prompts_path (win rate, reward, KL, length; docs/evaluation.md) and "
                                         "write the results to output_dir/eval."}
    )
    eval_prompts_path: str | None = field(
        default=None, metadata={"help": "Held-out prompts for --evaluate_after (any prompt format, or preference "
                                        "rows); scored by --reward_model_path / --reward_funcs."}
    )
