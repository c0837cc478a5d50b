"""GGUF files (llama.cpp, Ollama) as a model source, wherever a model or tokenizer path is taken.

transformers reads a GGUF file as `from_pretrained(FOLDER, gguf_file=NAME)`: the tokenizer and its chat template,
the config and the weights all come from the one file. A path is a GGUF file when it ends in `.gguf`, or when it
is a file that starts with the GGUF magic bytes (Ollama keeps its models as `blobs/sha256-...` without a suffix).

Check phase (`check`, no weights read): the `gguf` package is installed, the file exists, its header parses and
its tensors lie inside the file (a truncated download), its architecture is one transformers reads from GGUF, and
nothing asks for 4-bit loading, which transformers 5.23 refuses to combine with a GGUF file (quantizers/auto.py; no
upstream report found, searched "GGUF BitsAndBytesConfig load_in_4bit combine quantization", 2026-12-02; drop the
refusal when transformers quantizes a dequantized GGUF load).

Build phase (`model_source`): the weights are dequantized to the requested dtype as they load
(`GgufConfig(dequantize=True)`), so the model comes out as an ordinary model: transformers itself then drops its
quantizer marks (`hf_quantizer`, `is_quantized`, `quantization_method`, `config.quantization_config`). Otherwise
`save_pretrained` refuses the model ("quantized with gguf and is not serializable": merge, full fine-tuning), the
HF Trainer refuses to fine-tune it in full ("purely quantized models"), and peft sees `is_quantized`. (TRL 1.16's
bf16 cast of adapters looks at `is_loaded_in_4bit/8bit`, which a GGUF model never has.) This costs nothing over a
plain GGUF load; rebuilding the model with `from_config` + `load_state_dict` instead took 2.6 s and 380 MB more
for a 135M model.
"""

from __future__ import annotations

import functools
import os

from utils.core.errors import UserError

MAGIC = b"GGUF"
# llama.cpp's names of architectures transformers 5.23 knows by another (modeling_gguf_pytorch_utils.py renames them).
_RENAMED = {"qwen2moe": "qwen2_moe", "qwen3moe": "qwen3_moe", "gpt-oss": "gpt_oss", "minimax-m2": "minimax_m2"}
# Read from GGUF by transformers, but not causal LMs (encoder-decoders).
_NOT_CAUSAL = {"t5", "umt5", "t5encoder"}


def is_gguf(path: str | os.PathLike) -> bool:
    """A path meant as a GGUF file: a name ending in .gguf (existing or not), or a file with the GGUF magic."""
    real = os.path.expanduser(str(path))
    if os.path.isdir(real):
        return False
    if real.lower().endswith(".gguf"):
        return True
    try:
        with open(real, "rb") as f:
            return f.read(4) == MAGIC
    except OSError:
        return False


def split(path: str | os.PathLike) -> tuple[str, str]:
    """(folder, file name): what from_pretrained takes as its path and `gguf_file`."""
    real = os.path.abspath(os.path.expanduser(str(path)))
    return os.path.dirname(real), os.path.basename(real)


def supported_architectures() -> list[str]:
    """The causal-LM architectures transformers reads from GGUF, as llama.cpp names them (`general.architecture`)."""
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING
    from transformers.integrations.gguf.gguf_config_mapping import GGUF_CONFIG_ARCHS

    names = (set(GGUF_CONFIG_MAPPING) - {"general", "tokenizer"} - _NOT_CAUSAL) | set(GGUF_CONFIG_ARCHS)
    llama_cpp = {new: old for old, new in _RENAMED.items()}
    return sorted(llama_cpp.get(n, n) for n in names)


def check(path: str, what: str, four_bit: str | None = None) -> str:
    """Check phase: `path` (given with flag `what`) is a complete GGUF file of an architecture transformers reads,
    and no 4-bit loading was asked for (`four_bit`: the flag that asks, e.g. "--train_mode qlora"). Returns the
    architecture. Reads the header only (a few seconds for a large vocabulary), once per file and process."""
    real = os.path.expanduser(path)
    if not os.path.exists(real):
        raise UserError(f"{what} {path!r} does not exist: no GGUF file at that path. Check the path (a file "
                        "downloaded from a hub, or an Ollama blob under ~/.ollama/models/blobs/), or pass a model "
                        "directory written by save_pretrained.")
    try:
        import gguf  # noqa: F401  (transformers reads GGUF files with it)
    except ImportError:
        raise UserError(f"{what} {path!r} is a GGUF file, and reading GGUF files needs the `gguf` package, which is "
                        "not installed in this Python environment; install it with `pip install 'gguf>=0.19,<0.20'` "
                        "(it is in requirements.txt), or pass a model directory written by save_pretrained.") from None
    stat = os.stat(real)
    arch, problem = _architecture(os.path.realpath(real), stat.st_size, stat.st_mtime_ns)
    if problem == "magic":
        with open(real, "rb") as f:
            start = f.read(4)
        raise UserError(f"{what} {path!r} is not a GGUF file: it does not start with the bytes 'GGUF' (it starts with "
                        f"{start!r}); it is corrupt or another format. Download or copy it again, or pass a model "
                        "directory written by save_pretrained.")
    if problem:
        raise UserError(f"{what} {path!r} ({stat.st_size:,} bytes) is not a complete GGUF file: {problem}. It is "
                        "truncated (an interrupted download or copy?) or corrupt; download or copy it again and "
                        "compare its size and checksum with the source's.")
    supported = supported_architectures()
    if arch not in supported:
        from transformers import __version__

        raise UserError(f"{what} {path!r} is a GGUF file of architecture {arch!r} (its general.architecture), which "
                        f"transformers {__version__} cannot load from GGUF as a causal LM; it reads "
                        f"{', '.join(supported)}. Use a GGUF file of one of those families, or the model's original "
                        "Hugging Face checkpoint (a directory with config.json and safetensors).")
    if four_bit:
        raise UserError(f"{four_bit} cannot load the GGUF file {path!r} ({what}) in 4 bits: transformers does not "
                        "combine a GGUF file with bitsandbytes quantization (\"You cannot combine Quantization and "
                        "loading a model from a GGUF file\"); use --train_mode lora or full for a policy (the GGUF "
                        "weights are dequantized to --dtype), and leave out the 4-bit flag for a frozen model.")
    return arch


@functools.lru_cache(maxsize=None)
def _architecture(real: str, size: int, mtime_ns: int) -> tuple[str | None, str | None]:
    """(general.architecture, None) of a complete GGUF file, else (None, what is wrong; "magic": not GGUF at all).
    Read with gguf's own reader, as transformers reads the file; `size` and `mtime_ns` key the cache."""
    from gguf import GGUFReader

    with open(real, "rb") as f:
        if f.read(4) != MAGIC:
            return None, "magic"
    try:
        reader = GGUFReader(real)
        end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
        field = reader.get_field("general.architecture")
    except Exception as e:  # numpy and struct errors: the header or the tensor table runs past the end of the file
        return None, f"reading its header failed ({type(e).__name__}: {str(e).rstrip('.')})"
    if end > size:
        return None, f"its tensor table says the weights end at byte {end:,}"
    if field is None:
        return None, "its metadata has no general.architecture"
    return str(field.contents()), None


def source(path: str) -> tuple[str, dict]:
    """(what from_pretrained takes as its path, extra kwargs) for a tokenizer at `path`, GGUF or not."""
    if not is_gguf(path):
        return path, {}
    folder, name = split(path)
    return folder, {"gguf_file": name}


def model_source(path: str, what: str = "the model", load_in_4bit: bool = False) -> tuple[str, dict]:
    """(path, extra kwargs) for a model's from_pretrained: a GGUF file is dequantized as it loads, to an ordinary
    model (the module docstring). Checked again here (cached): commands load paths the check phase saw only as an
    adapter's base."""
    if not is_gguf(path):
        return path, {}
    check(path, what, "4-bit loading (--train_mode qlora, --load_in_4bit, --teacher_load_in_4bit)" if load_in_4bit
          else None)
    from transformers import GgufConfig

    folder, kwargs = source(path)
    return folder, {**kwargs, "quantization_config": GgufConfig(dequantize=True)}


def loaded(model, path: str):
    """The loaded model names the GGUF file as where it came from (`model.name_or_path`): an adapter trained on it
    records the file as its base (adapter_config.json), so merge and evaluation find it. `config._name_or_path`
    stays the file's folder, as transformers set it (see `trainer_hint`)."""
    if not is_gguf(path):
        return model
    import re
    import warnings

    model.name_or_path = path
    # peft 0.21 looks for the base's config.json beside it when saving an adapter, to see whether the vocabulary
    # grew; a GGUF file has none, and it warns on every save. The embeddings are only resized for a tokenizer
    # without EOS or UNK to pad with, which GGUF tokenizers always have. The same warning for other bases without a
    # config.json: huggingface/trl#1498 (closed). Drop when peft finds the config through `gguf_file`.
    warnings.filterwarnings("ignore", message=f"Could not find a config file in {re.escape(path)} ")
    return model


def trainer_hint(path: str, full: bool) -> str:
    """What to add when a TRL trainer refuses a GGUF policy: in full mode, TRL 1.16 trainers that keep a frozen copy
    of the start model (RLOO; GRPO with beta > 0; DPO / KTO with --precompute_ref_log_probs false) build it with
    AutoConfig.from_pretrained(model.config._name_or_path), which takes no `gguf_file` (trl/trainer/utils.py,
    create_model_from_path), so they cannot read it from the file. No upstream report found (searched "TRL reference
    model GGUF gguf_file create_model_from_path", 2026-12-02); drop when TRL passes `gguf_file` on."""
    if not (full and is_gguf(path)):
        return ""
    return (f" The policy is the GGUF file {path!r} in --train_mode full: a TRL trainer that builds its own frozen "
            "reference copy reads it from a model directory and cannot from a GGUF file; use --train_mode lora (the "
            "reference is then the policy with its adapter switched off).")


def refuse_reference_from_file(common, reason: str | None, instead: str) -> None:
    """Check phase, for a method whose TRL trainer keeps a frozen reference copy in full mode because of `reason` (a
    flag and its value; None: it keeps none): TRL 1.16 loads that copy from the policy's path with
    AutoConfig.from_pretrained, which takes no `gguf_file` (trl/trainer/utils.py, create_model_from_path). Upstream
    reference and removal: see `trainer_hint`."""
    path = common.model_name_or_path
    if reason and common.train_mode == "full" and is_gguf(path):
        raise UserError(f"--model_name_or_path {path!r} is a GGUF file, and --train_mode full with {reason} keeps a "
                        "frozen reference copy of it, which TRL 1.16 loads from a model directory by path and cannot "
                        "read from a GGUF file; expected --train_mode lora (the reference is then the policy with its "
                        f"adapter switched off) or {instead}.")
