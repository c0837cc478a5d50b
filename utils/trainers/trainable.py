"""Once the trainer is built, before it trains: there is something to train on. TRL may drop every row while it
prepares the data (each longer than --max_length where it counts), and the online trainers (GRPO, RLOO, Distillation)
sample whole batches of distinct prompts only, so a dataset smaller than one such batch gives no step at all:
transformers then refuses --max_steps -1 in words about dataloaders, or the run ends at once having trained nothing.
A vision-language model's batches are collated with their image rows first (`images_first`)."""

from __future__ import annotations

import logging

from utils.core.errors import UserError

log = logging.getLogger("main_train")


def settle(model, common, config, processor=None) -> None:
    """The loaded model before its trainer is built. A vision-language model in full mode: its vision tower and
    projector frozen unless asked otherwise (utils/model/vision.py); DDP's search for unused parameters left to TRL,
    which turns it on for them (a batch without images gives the tower no gradient)."""
    from utils.model.loading import has_experts

    if processor is not None:
        from utils.model.vision import freeze

        frozen = freeze(model, common) if common.train_mode == "full" else []
        log.info("vision-language model%s", f"; frozen: {', '.join(frozen)}" if frozen else "")
        if common.freeze_vision_tower and common.freeze_multi_modal_projector and config.ddp_find_unused_parameters \
                is None:  # only the language model trains, and every batch reaches it: nothing unused to look for
            config.ddp_find_unused_parameters = False
    elif config.ddp_find_unused_parameters is None and not has_experts(model):
        # Every trainable parameter (full or LoRA) gets a gradient each step: transformers would otherwise turn on
        # DDP's search for unused ones whenever activation checkpointing is off (an extra autograd walk per step, and
        # a warning). Mixture-of-experts models keep it: unrouted experts get none. bench/RESULTS.md, DDP.
        config.ddp_find_unused_parameters = False


def images_first(trainer) -> None:
    """A batch of a vision-language model collated with its rows that have images first (in place, so that what the
    NaN guard records stays the batch's order). transformers 5.23's Idefics3 (SmolVLM) processor fails to collate a
    batch whose first row has no image when TRL asks for assistant masks ("Unable to convert output
    'text_replacement_offsets' (type: list) to tensor"): its BatchFeature converts the offsets it returns for the
    masks. No upstream report found (searched "text_replacement_offsets Idefics3 assistant mask", 2026-12-06); drop
    when the processor leaves them unconverted. The loss of a batch does not depend on the order of its rows."""
    collator = trainer.data_collator

    def ordered(examples):
        if examples and isinstance(examples[0], dict) and "images" in examples[0]:
            examples.sort(key=lambda row: not row.get("images"))
        return collator(examples)

    trainer.data_collator = ordered


def check_trainable(trainer, method: str, config) -> None:
    if getattr(trainer.processing_class, "image_processor", None) is not None and trainer.data_collator is not None:
        images_first(trainer)
    dataset = trainer.train_dataset
    if not hasattr(dataset, "__len__"):
        return
    if len(dataset) == 0:
        raise UserError(f"{method} dropped every training row while preparing the data (each one longer than "
                        f"--max_length {getattr(config, 'max_length', None)} where it counts, or with nothing left to "
                        "train on); expected a larger --max_length or shorter rows.")
    get_sampler = getattr(trainer, "_get_train_sampler", None)  # transformers' Trainer (and TRL's subclasses)
    if get_sampler is None:
        return
    try:
        sampler = get_sampler(dataset)
    except TypeError:  # transformers' older signature
        sampler = get_sampler()
    if sampler is None or not hasattr(sampler, "__len__") or len(sampler) > 0:
        return
    per_batch = getattr(sampler, "batch_size", None) or config.per_device_train_batch_size
    generations = getattr(config, "num_generations", None)
    how = (f"--per_device_train_batch_size {config.per_device_train_batch_size} x --steps_per_generation / "
           f"--num_generations {generations}, times the processes" if generations else
           f"--per_device_train_batch_size {config.per_device_train_batch_size} x the processes x "
           "--gradient_accumulation_steps")
    raise UserError(f"{method} samples {per_batch} distinct prompts per batch ({how}), and the training data has "
                    f"{len(dataset)} rows: not one whole batch, so nothing would be trained. Expected at least "
                    f"{per_batch} rows, or a smaller --per_device_train_batch_size.")
