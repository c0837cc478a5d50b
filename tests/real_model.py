"""The real pretrained model of the tests, SmolLM2-135M-Instruct, from its PyPI wheel (never a model hub): see
utils/toy/smollm2.py. `gguf_file()` is the .gguf itself (for the tests of GGUF as a model source), `hf_dir()` the same
model converted once to a safetensors folder that loads quickly."""

from utils.toy.smollm2 import GGUF_NAME, gguf_file, hf_dir  # noqa: F401
