"""What every method shares: `Method`, the shape of one row of the table in `rlhf_args/__init__.py`, and
`OurDefaults`, the defaults layered over each TRL config by multiple inheritance
(`class DPOArgs(OurDefaults, DPOConfig)` keeps every TRL field and its name; fields of the earlier base win)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from transformers.trainer_utils import SaveStrategy

from utils.model.dtype import bf16_supported


@dataclass(frozen=True)
class Method:
    """Everything particular to one method, declared in its args file.

    main_train reads these fields and never a method's name: it checks the data as `data` says, refuses fp16
    unless `fp16_ok`, calls `check`, checks what `rewards` / `teacher` / `critic` ask for, all before any weights
    load; then it loads the model with `head`, builds those, and hands everything to `trainer()`."""

    name: str  # as the user writes it (--rlhf_type, case-insensitive)
    config: type  # the TRL config class with our defaults
    trainer: Callable[[], type]  # returns the trainer class; its import runs only when the method runs
    data: str  # data kind, see utils.data.loading.SCHEMAS
    head: str = "causal"  # "causal" (AutoModelForCausalLM) or "score" (AutoModelForSequenceClassification)
    rewards: bool = False  # reward sources (--reward_model_path / --reward_funcs) -> trainer kwarg reward_funcs
    teacher: bool = False  # --teacher_model_name_or_path, tokenizer checked first -> trainer kwarg teacher_model
    # PPO's models built by us (utils/ppo/models.py) -> trainer kwargs critic and ref_model (the frozen reference in
    # full mode). Every other method's reference, if it has one, is kept by its TRL trainer (a frozen copy in full
    # mode, the policy with its adapter switched off in lora / qlora); its args file says which.
    critic: bool = False
    fp16_ok: bool = True  # False: the loss is known to break in fp16
    # What TRL does with a row longer than max_length, for the length report (utils/data/lengths.py): "prompt_fills"
    # (truncated; dropped when its prompt alone fills max_length), "too_long" (dropped whole).
    drops: str = "prompt_fills"
    # check(common, config, columns): the method's own combinations with the common options and the data, and
    # data-dependent defaults; raises UserError. Runs in the check phase (no weights read); `columns` are the
    # training data's fields. Ranges and choices of the config's own options are its class's `option_rules`.
    check: Callable | None = None
    # What --tools / --environment mean here (utils/cli/option_checks.check_tools): "schemas" (rendered into the rows
    # that have no `tools` field), "run" (called while sampling), None (refused; `no_tools` says why when set).
    tools: str | None = None
    no_tools: str | None = None
    # Image data (utils/cli/vision_checks.py): None, TRL 1.16's trainer takes no images (refused in the check phase);
    # else the options of ours TRL refuses for images, switched off there with a log line unless set explicitly.
    vision: tuple | None = None


@dataclass
class OurDefaults:
    # Log every step: every run leaves a curve in trainer_state.json that can be plotted.
    logging_steps: float = 1
    logging_first_step: bool = True
    # Local-first: nothing is sent anywhere unless asked for (--report_to tensorboard / wandb).
    report_to: None | str | list[str] = "none"
    # Checkpoints for resume_from_checkpoint, without filling the disk.
    save_strategy: SaveStrategy | str = "steps"
    save_steps: float = 200
    save_total_limit: int | None = 2
    output_dir: str | None = field(default=None, metadata={"help": "Where the model, metrics and checkpoints go."})
    resume_from_checkpoint: str | None = field(default=None, metadata={
        "help": "A checkpoint directory; `latest`: the newest complete checkpoint in output_dir; `auto`: the same, or "
                "a fresh start when there is none (a scheduler re-running one command). docs/reliability.md."})
    # Speed over memory: no activation recomputation (TRL turns it on everywhere). bench/RESULTS.md, 3.5M params,
    # batch 4, 150-190 tokens: DPO 1.39x tokens/s for +17 % peak RSS, KTO 1.19x, SimPO 1.45x, Reward 1.23x, GKD
    # 1.20x, RLOO/GRPO ~1.03x. Turn it on (--activation_checkpointing true) when activations do not fit.
    activation_checkpointing: bool | None = False
    # transformers 5.23 renamed it and warns whenever the old name is set, even to False: unset here (TRL's default
    # is True), and a user's --gradient_checkpointing is moved to the new name in __post_init__. No upstream report
    # found (searched "gradient_checkpointing renamed activation_checkpointing deprecation warning", 2026-12-02);
    # drop when TRL's _BaseConfig (1.16: `gradient_checkpointing: bool = True`) sets the new name instead.
    gradient_checkpointing: bool | None = None
    # The method's own ranges and choices (utils/cli/option_checks.py rules), checked with the shared ones before TRL's
    # __post_init__ sees a value. Not a field: a class attribute, set in the method's args file.
    option_rules = ()

    def __post_init__(self):
        import torch

        if self.gradient_checkpointing is not None:
            self.activation_checkpointing, self.gradient_checkpointing = self.gradient_checkpointing, None
        # TRL turns bf16 on whenever fp16 is off; on a machine without bf16 support (CPU) that either fails or
        # runs hundreds of times slower, so an unset bf16 means "bf16 where the hardware has it". TRL 1.16's
        # _BaseConfig.__post_init__; reported as huggingface/trl#3616; drop when TRL's default follows the hardware.
        if self.bf16 is None and not self.fp16:
            self.bf16 = bf16_supported()
        # transformers 5.23 refuses bf16 without a GPU unless `use_cpu` is set ("Your setup doesn't support bf16/gpu");
        # CPUs with AMX / AVX512-BF16 run it about twice as fast as fp32, and a run without a GPU is on the CPU anyway.
        if (self.bf16 or self.bf16_full_eval) and not (torch.cuda.is_available() or self.deepspeed):
            self.use_cpu = True
        from utils.cli.option_checks import check_options

        check_options(self, self.option_rules)

        # torch 2.13's DataLoader warns when pin_memory is on without an accelerator, and transformers 5.23 turns it on
        # by default. No upstream report found (searched "dataloader_pin_memory CPU warning no accelerator",
        # 2026-12-02); drop when transformers' default is off without an accelerator.
        if not torch.cuda.is_available():  # pinned memory needs an accelerator; torch warns on every dataloader
            self.dataloader_pin_memory = False
        # Under `accelerate launch` / torchrun without CUDA: the gloo backend, set before devices are set up.
        from utils.core.distributed import cpu_launch_defaults

        cpu_launch_defaults(self)
        try:
            super().__post_init__()
        except ValueError as e:  # what TRL / transformers still refuse, named by our flags
            from utils.core.errors import reword

            raise reword(e, None, self, f"The {type(self).__name__.removesuffix('Args')} configuration") from e

