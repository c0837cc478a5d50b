"""Loading models and tokenizers: full / LoRA / QLoRA / DoRA, pad-token repair, score heads (the dtype names are in
utils/model/dtype.py, the check-phase probes in checks.py, the LoRA config in adapters.py).

Trainers get an instantiated model plus a `peft_config`; TRL wraps the adapter itself, so its own
handling of ZeRO-3, gradient checkpointing and quantized adapters applies unchanged. With an
adapter, TRL computes reference log-probs with the adapter switched off: no second copy.
"""

from __future__ import annotations

import logging
import os

from utils.core.errors import UserError
from utils.model.checks import TOKENIZER_FILES
from utils.model.dtype import resolve_dtype

log = logging.getLogger(__name__)


def load_tokenizer(path: str, trust_remote_code: bool = False):
    """Load a tokenizer and make sure it has a pad token (the Qwen2 'no padding token' failure).

    The pad token becomes the EOS token when there is one (no new embedding row needed); the model
    side of the repair is `repair_pad_token`, which every loaded model goes through. A directory without
    tokenizer files, or a tokenizer without a real vocabulary, is refused: transformers would build an empty one.
    """
    from transformers import AutoTokenizer

    from utils.model import gguf

    if gguf.is_gguf(path):  # the tokenizer and its chat template come from the file
        gguf.check(path, "The tokenizer")
    source, extra = gguf.source(path)
    real = os.path.expanduser(path)
    if os.path.isdir(real) and not any(os.path.isfile(os.path.join(real, f)) for f in TOKENIZER_FILES):
        raise UserError(f"{path!r} holds no tokenizer (none of {', '.join(TOKENIZER_FILES)}); expected the tokenizer "
                        "saved beside the model (tokenizer.save_pretrained(DIR)), or pass --tokenizer_name_or_path.")
    try:
        tok = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code, **extra)
    except Exception as e:  # OSError, ValueError, and whatever a broken tokenizer file raises in the fast tokenizer
        raise UserError(f"Could not load a tokenizer from {path!r}: {type(e).__name__}: {e}") from e
    if len(tok.get_vocab()) - len(set(tok.all_special_tokens)) < 2:
        raise UserError(f"The tokenizer at {path!r} has no real vocabulary ({len(tok)} tokens, all special); expected "
                        "the tokenizer the model was trained with.")
    if tok.pad_token is None:
        if tok.eos_token is not None:
            tok.pad_token = tok.eos_token
        elif tok.unk_token is not None:
            tok.pad_token = tok.unk_token
        else:
            tok.add_special_tokens({"pad_token": "<|pad|>"})
        log.info("tokenizer at %s had no pad token; using %r", path, tok.pad_token)
    return tok


def repair_pad_token(model, tokenizer) -> None:
    """Mirror the tokenizer's pad token onto the model config and generation config: models that
    pad with `config.pad_token_id` (sequence classification picks the last non-pad token) fail or
    score the wrong token when only the tokenizer knows it."""
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    pad = tokenizer.pad_token_id
    text_config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    if text_config is model.config or "pad_token_id" in vars(model.config):  # a VLM's own: deprecated, text's used
        model.config.pad_token_id = pad
    text_config.pad_token_id = pad
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = pad


def quantization_config(dtype):
    """4-bit NF4 with double quantisation (QLoRA). Storage dtype = compute dtype, so that DeepSpeed
    ZeRO-3 and FSDP can shard the packed weights like any other tensor of that dtype."""
    try:
        from transformers import BitsAndBytesConfig
        import bitsandbytes  # noqa: F401
    except ImportError as e:
        raise UserError("4-bit loading (--train_mode qlora, --load_in_4bit, --teacher_load_in_4bit) needs "
                        "bitsandbytes: pip install 'bitsandbytes>=0.50'.") from e
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype,
        bnb_4bit_quant_storage=dtype,
    )


def load_model(path: str, tokenizer, *, head: str = "causal", dtype=None, load_in_4bit: bool = False,
               trust_remote_code: bool = False, num_labels: int = 1, trained_head: bool = False):
    """Load a causal LM (`head="causal"`) or a sequence-classification model with `num_labels` outputs
    (`head="score"`) in `dtype` (None = float32, "auto" = as saved), 4-bit NF4 with `load_in_4bit` (the QLoRA base,
    or a frozen teacher / sampled model), with the pad token repaired. `trained_head`: refuse a score head that
    was not in the checkpoint (a reward model must not score with a random head)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoModelForSequenceClassification

    from utils.model import gguf
    from utils.model.checks import is_vlm

    source, extra = gguf.model_source(path, load_in_4bit=load_in_4bit)  # a GGUF file: dequantized as it loads
    dtype = torch.float32 if dtype is None else dtype
    if load_in_4bit and dtype == "auto":  # 4-bit needs a compute dtype; "as saved" has none to give
        dtype = resolve_dtype("auto")
    kwargs = {"dtype": dtype, "trust_remote_code": trust_remote_code, **extra}
    if load_in_4bit:
        kwargs["quantization_config"] = quantization_config(dtype)
    try:
        if head == "score":
            model, info = AutoModelForSequenceClassification.from_pretrained(source, num_labels=num_labels,
                                                                             output_loading_info=True, **kwargs)
            missing = [k for k in info["missing_keys"] if k.split(".")[0] in ("score", "classifier")]
            if trained_head and missing:
                raise UserError(f"The reward model at {path!r} has no trained score head: {', '.join(missing)} "
                                "is not in its checkpoint, so its scores would be random. Expected a model trained "
                                "with --rlhf_type Reward (a sequence-classification checkpoint), not a causal LM.")
        else:
            auto = AutoModelForImageTextToText if is_vlm(path) else AutoModelForCausalLM
            model = auto.from_pretrained(source, **kwargs)
    except ValueError as e:
        if head == "score" and "Unrecognized configuration class" in str(e):
            raise UserError(
                f"The model at {path!r} has an architecture that transformers cannot load as "
                "AutoModelForSequenceClassification (needed for reward models and critics). Use a checkpoint of "
                "an architecture that has a *ForSequenceClassification class (Llama, Qwen2, Mistral, Gemma, ...), "
                "or, for a custom architecture, pass --trust_remote_code true if its repository maps "
                "AutoModelForSequenceClassification in config.json `auto_map`."
            ) from e
        raise UserError(f"Could not load the model at {path!r}: {e}") from e
    except UserError:
        raise
    except Exception as e:  # OSError, and what truncated or corrupt weights raise (safetensors' own error type)
        raise UserError(f"Could not load the model at {path!r}: {type(e).__name__}: {e}; expected a complete "
                        "checkpoint (a truncated or corrupt weights file? save it again).") from e
    gguf.loaded(model, path)
    if load_in_4bit:
        guard_bnb_cpu_inference(model)
        if head == "score":
            follow_weight_dtype(model.score)
    repair_pad_token(model, tokenizer)
    return model


def has_experts(model) -> bool:
    """A mixture-of-experts model (only some experts get a gradient in a step)."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return any((getattr(config, k, None) or 0) > 1 for k in ("num_experts", "num_local_experts", "n_routed_experts"))


def follow_weight_dtype(module) -> None:
    """The module computes in its weights' dtype and returns the caller's. TRL 1.16 casts every trainable parameter
    of a quantized model to bf16 (the QLoRA paper's adapters); a reward model's score head, trained in full beside
    the adapter, then met hidden states in the compute dtype (fp32 on CPU) and failed with "expected m1 and m2 to
    have the same dtype". The hooks go with the head into peft's trainable copy (modules_to_save). TRL's cast stands in
    for huggingface/peft#2889 (fixed by huggingface/peft#2893); the head's failure: no upstream report found (searched
    "QLoRA score head bf16 cast dtype RewardTrainer", 2026-12-02). Drop when TRL leaves the dtype to peft."""

    def cast_in(mod, args):
        mod._caller_dtype = args[0].dtype
        return (args[0].to(mod.weight.dtype), *args[1:])

    def cast_out(mod, args, output):
        return output.to(mod._caller_dtype)

    module.register_forward_pre_hook(cast_in)
    module.register_forward_hook(cast_out)


def guard_bnb_cpu_inference(model) -> None:
    """bitsandbytes 0.50 repacks 4-bit weights for a faster CPU kernel the first time a layer runs in eval mode
    without gradients (frozen teachers, references, reward models, sampling). The repacking assumes
    `in_features` is a multiple of the quantisation block (64) and `out_features` of 32; other shapes fail with
    "shape '[96, 1]' is invalid for input of size 144". Those layers keep the generic kernel. So does every layer
    of a model that is trained after such a pass (a QLoRA policy whose reference log-probs are precomputed, the DPO
    and KTO default): a repacked layer fails the next forward with gradients ("a view of a leaf Variable that
    requires grad is being used in an in-place operation"); the repack is the ABI of bitsandbytes' inference kernel
    only. Frozen 4-bit models therefore also use the generic kernel on CPU (correct, somewhat slower). No upstream
    report found (searched "bitsandbytes CPU 4bit repack avx512bf16 shape invalid", 2026-12-02); drop when
    bitsandbytes repacks only shapes its kernel takes and undoes the repack for training."""
    try:
        from bitsandbytes.nn import Linear4bit
    except ImportError:
        return
    for module in model.modules():
        if isinstance(module, Linear4bit):
            module.support_avx512bf16_for_cpu = False
