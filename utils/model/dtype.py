"""`--dtype`, the compute dtype and the dtype each model's weights live in: the names every command takes, what each
means on this machine.

Mixed precision as DeepSpeed, FSDP and LLaMA-Factory do it: with --bf16 (or --fp16) the matmuls run in the half dtype
under autocast, and the weights the optimizer updates stay in float32. A full fine-tune whose weights live in
bfloat16 loses every update smaller than half a bfloat16 step (2^-9 of the weight): at DPO's learning rates, nearly
all of them (bench/RESULTS.md, "Precision"). Frozen weights (a LoRA/QLoRA base, reference, teacher, reward model)
load in the compute dtype, which halves their memory and changes nothing they compute. `--pure_bf16` is the
memory-lean exception: trained weights in bfloat16, and a warning with numbers when their updates round away.
"""

from __future__ import annotations

from utils.core.errors import UserError

# `--dtype`, the same in every command: the dtype weights are loaded (and merged, saved) in.
DTYPES = ("auto", "checkpoint", "float32", "bfloat16", "float16")
DTYPE_HELP = ("Weights dtype: auto = the compute dtype for frozen weights (bfloat16 with --bf16, which is on by "
              "default on GPUs that have it and on CPUs with AVX512-BF16 or AMX; float16 with --fp16; else float32) "
              "and float32 for the weights a full fine-tune trains | checkpoint = as saved | float32 | bfloat16 | "
              "float16.")
HALF = ("bfloat16", "float16")


def resolve_dtype(name: str, bf16: bool | None = None, fp16: bool = False):
    """The torch dtype (or "auto": transformers' "as saved") for `--dtype NAME`; `bf16` None = where the hardware has
    it. This is the dtype of frozen weights; `trained_dtype` gives the one of trained weights."""
    import torch

    if name not in DTYPES:
        raise UserError(f"--dtype {name!r} is not known; expected one of {', '.join(DTYPES)}.")
    if name == "checkpoint":
        return "auto"
    if name == "auto":
        if bf16 is None and not fp16:
            bf16 = bf16_supported()
        return torch.bfloat16 if bf16 else torch.float16 if fp16 else torch.float32
    return getattr(torch, name)


def trained_dtype(name: str, bf16: bool | None, fp16: bool, full: bool, pure_bf16: bool = False):
    """The dtype the policy loads in: `resolve_dtype`'s, except that the weights a full fine-tune updates load in
    float32 (the master weights mixed precision keeps) unless --pure_bf16 asks for bfloat16 ones. A half `--dtype`
    asked for by name in full mode is refused by `check_precision` before this runs."""
    import torch

    if pure_bf16:
        return torch.bfloat16
    dtype = resolve_dtype(name, bf16, fp16)
    return torch.float32 if full and dtype in (torch.bfloat16, torch.float16) else dtype


def cpu_bf16() -> str | None:
    """The CPU feature that makes bfloat16 fast here (AMX or AVX512-BF16), or None: without one, bf16 matmuls run
    hundreds of times slower than fp32 (seen 0.3 against 105 GFLOP/s), with one about twice as fast."""
    import torch

    cpu = getattr(torch, "cpu", None)
    for feature, probe in (("AMX", "_is_amx_tile_supported"), ("AVX512-BF16", "_is_avx512_bf16_supported")):
        try:
            if getattr(cpu, probe)():
                return feature
        except (AttributeError, RuntimeError):
            continue
    return None


def bf16_supported() -> bool:
    """bf16 runs fast here: a GPU that has it, or (no GPU) a CPU with AMX or AVX512-BF16."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return cpu_bf16() is not None


def check_precision(common, config) -> None:
    """Check phase: the weights dtype against the training mode; refused before anything loads."""
    full = common.train_mode == "full"
    if common.pure_bf16:
        if not full:
            raise UserError(f"--pure_bf16 applies to --train_mode full only; with --train_mode {common.train_mode} "
                            "the trained adapter weights stay float32 and the frozen base is already in the compute "
                            "dtype. Leave --pure_bf16 out.")
        if config.fp16 or config.bf16 is False:
            off = "--fp16 true" if config.fp16 else "bf16 off (--bf16 false, or a CPU without AMX / AVX512-BF16)"
            raise UserError(f"--pure_bf16 trains bfloat16 weights under bf16 compute; it cannot go with {off}. Drop "
                            "one of the two.")
        if common.dtype not in ("auto", "bfloat16"):
            raise UserError(f"--pure_bf16 keeps the trained weights in bfloat16; --dtype {common.dtype} asks for "
                            "another dtype. Leave --dtype out (or give bfloat16).")
        return
    if full and (config.bf16 or config.fp16) and getattr(config, "use_transformers_continuous_batching", False):
        # TRL 1.16 (GRPO / RLOO `_generate_single_turn`) casts the policy to the half dtype for continuous batching and
        # never back: the float32 master weights would be gone after the first rollout. No upstream report found
        # (searched "continuous batching unwrapped_model.to(torch.bfloat16) master weights", 2026-12-06).
        raise UserError("--use_transformers_continuous_batching true with --train_mode full and bf16 / fp16: TRL 1.16 "
                        "casts the trained weights to the half dtype for it and leaves them there, so every later "
                        "update below half a bfloat16 step would round away. Leave it off (the default), or train "
                        "with --train_mode lora.")
    if full and common.dtype in HALF:
        raise UserError(
            f"--dtype {common.dtype} with --train_mode full would keep the trained weights in {common.dtype}, where "
            "the optimizer's updates smaller than half a step of that dtype (2^-9 of a weight in bfloat16) round "
            f"away: at a learning rate of {config.learning_rate:g} nearly all of them. Leave --dtype at auto (the "
            "trained weights in float32, the matmuls in the compute dtype: mixed precision), or pass --pure_bf16 true "
            "to keep bfloat16 weights knowingly (half the weight memory; the run says how many updates it loses).")


def describe(config, weights, frozen, train_mode: str) -> str:
    """One log line: the compute dtype and why, and the dtypes of the trained and of the frozen weights."""
    import torch

    name = lambda d: str(d).removeprefix("torch.") if d != "auto" else "as saved"  # noqa: E731
    if config.bf16:
        where = "GPU" if torch.cuda.is_available() else f"CPU with {cpu_bf16() or 'no AMX / AVX512-BF16: slow'}"
        compute = f"bf16 autocast ({where})"
    elif config.fp16:
        compute = "fp16 autocast with loss scaling"
    else:
        why = "--bf16 false" if torch.cuda.is_available() or cpu_bf16() else "no bf16 on this CPU"
        compute = f"fp32 ({why})"
    trained = "the LoRA adapters float32" if train_mode != "full" else f"trained weights {name(weights)}"
    return f"precision: {compute}; {trained}; frozen weights {name(frozen)}"
