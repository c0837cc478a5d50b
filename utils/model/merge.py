"""Merge a LoRA / DoRA adapter into its base model and save a plain model (safetensors + tokenizer)
that `from_pretrained` loads without peft:

    python -m utils.merge --model_name_or_path runs/dpo --output_dir runs/dpo_merged [--base_model_name_or_path M]

Works for causal-LM adapters and for reward-model adapters (sequence classification: the score head,
trained in full and saved with the adapter, replaces the base's). A QLoRA adapter is merged into the
base loaded in `--dtype` (default `checkpoint`: the dtype the base was saved in), never into 4-bit weights,
which could not hold the merged values. (`--adapter`, `--base` and `--output` are the old names of the flags.)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from utils.core.errors import CommandParser, UserError, run_command
from utils.model.adapter_dirs import adapter_base, adapter_config, attach_adapter, config_path, model_paths
from utils.model.dtype import DTYPE_HELP, DTYPES

log = logging.getLogger("merge")
RENAMED = {"adapter": "model_name_or_path", "base": "base_model_name_or_path", "output": "output_dir"}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = CommandParser("python -m utils.merge", __doc__, renamed=RENAMED)
    p.add_argument("--model_name_or_path", required=True, help="Adapter directory (adapter_config.json + weights).")
    p.add_argument("--base_model_name_or_path",
                   help="Base model; default: base_model_name_or_path in adapter_config.json.")
    p.add_argument("--output_dir", required=True, help="Directory for the merged model and tokenizer.")
    p.add_argument("--dtype", default="checkpoint", choices=DTYPES, help=DTYPE_HELP)
    p.add_argument("--num_labels", type=int, default=1, help="Outputs of a reward model's score head.")
    p.add_argument("--trust_remote_code", action="store_true")
    a = p.parse_args(argv)
    config, a.adapter_config = config_path(a.model_name_or_path), adapter_config(a.model_name_or_path)
    if a.adapter_config is None:
        raise UserError(f"--model_name_or_path {a.model_name_or_path!r} is not an adapter directory: {config} "
                        "does not exist. A full fine-tune (train_mode full) is already a plain model and needs no "
                        "merge.")
    given = a.base_model_name_or_path
    a.base_model_name_or_path = adapter_base(a.model_name_or_path, given)
    from utils.model.checks import check_model_dir

    check_model_dir(a.base_model_name_or_path,  # a model directory, hub id or GGUF file, checked before loading
                    "--base_model_name_or_path" if given else f"The base model named in {config}")
    same = {os.path.abspath(a.base_model_name_or_path), os.path.abspath(a.model_name_or_path)}
    if os.path.abspath(a.output_dir) in same:
        raise UserError(f"--output_dir {a.output_dir!r} is the base or the adapter directory; write the merged model "
                        "to a new directory.")
    return a


def merge(args) -> str:
    from utils.core.distributed import process_defaults
    from utils.model.dtype import resolve_dtype

    process_defaults()  # no "Setting accelerator to CPU" from DeepSpeed's detection (a warning nobody can act on)
    from utils.model.loading import load_model, load_tokenizer

    head = "score" if args.adapter_config.get("task_type") == "SEQ_CLS" else "causal"
    adapter, base = args.model_name_or_path, args.base_model_name_or_path
    tokenizer = load_tokenizer(model_paths(adapter, base)[1], args.trust_remote_code)
    dtype = resolve_dtype(args.dtype)
    model = load_model(base, tokenizer, head=head, dtype=dtype, trust_remote_code=args.trust_remote_code,
                       num_labels=args.num_labels)
    model = attach_adapter(model, adapter, base)
    merged = model.merge_and_unload()
    merged.save_pretrained(args.output_dir, safe_serialization=True)
    tokenizer.save_pretrained(args.output_dir)
    from utils.model.vision import is_vlm, load_processor

    if is_vlm(base):  # a vision-language model: its processor (image processor + template) goes with it
        load_processor(model_paths(adapter, base)[1], args.trust_remote_code).save_pretrained(args.output_dir)
    log.info("merged %s (%s) into %s -> %s", adapter, head, base, args.output_dir)
    return args.output_dir


def main(argv: list[str] | None = None) -> int:
    return run_command(lambda a: merge(parse_args(a)), sys.argv[1:] if argv is None else argv)
