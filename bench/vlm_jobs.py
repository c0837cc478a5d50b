"""The vision-language benchmark jobs (size "vlm", methods VLM-SFT and VLM-DPO, LoRA): the model, the data and the
flags, given identically to `main_train.py` and to `bench/bare_trl.py` as bench/jobs.py does for the text jobs.

Model: a random SmolVLM-shaped (Idefics3) model built here with the tokenizer and chat template of
utils/toy/vision.py: a Llama text model of hidden 512, 6 layers, MLP 2048, 8 heads (4 key/value heads), ~25M
parameters; a vision tower as small as the tiny one (1 layer, hidden 32) at 64 x 64 pixels, 8 x 8 patches, pixel
shuffle 2: one image = 16 tokens. Images are 64 x 64 PNGs of one colour, one per row.

Data, 64 rows each, random words of the tiny corpus: a user turn with the image and a question of 40-60 tokens, an
answer of 60-100 tokens (DPO: a chosen and a rejected one). The wrapper reads the user's form (image parts,
`images` relative to the file, string answers); the bare script reads TRL's form of the same rows (`*.trl.jsonl`:
every content a list of parts, `images` absolute paths), which is what utils/data/images.as_parts hands TRL.
"""

from __future__ import annotations

import functools
import json
import random
from pathlib import Path

from jobs import OUT

SIZE = "vlm"
MODEL = OUT / "models" / "vlm"
DATA = OUT / "data-vlm"
# method -> (data kind, rlhf_type, train_mode)
METHODS = {"VLM-SFT": ("sft", "SFT", "lora"), "VLM-DPO": ("preference", "DPO", "lora"),
           "VLM-SFT-full": ("sft", "SFT", "full"), "VLM-DPO-full": ("preference", "DPO", "full")}
TEXT = dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=6, num_attention_heads=8,
            num_key_value_heads=4)
PIXELS, PATCH, SHUFFLE = 64, 8, 2
IMAGE_TOKENS = (PIXELS // PATCH) ** 2 // SHUFFLE ** 2  # 16
COLOURS = {"red": (210, 40, 40), "green": (40, 170, 60), "blue": (40, 60, 210), "yellow": (225, 205, 40)}


def job_flags(method: str, steps: int, out_dir: Path, batch: int) -> list[str]:
    kind, rlhf_type, mode = METHODS[method]
    return ["--rlhf_type", rlhf_type, "--train_mode", mode, "--model_name_or_path", str(MODEL),
            "--train_data_path", str(DATA / f"{kind}.jsonl"), "--output_dir", str(out_dir),
            "--per_device_train_batch_size", str(batch), "--max_steps", str(steps), "--learning_rate", "1e-5",
            "--seed", "0", "--save_strategy", "no", "--disable_tqdm", "true"]


def bare_flags(method: str) -> list[str]:
    """What only the bare script is given: the same rows in TRL's form."""
    return ["--trl_data_path", str(DATA / f"{METHODS[method][0]}.trl.jsonl")]


def build_model():
    """(model, processor): utils/toy/vision.py's SmolVLM tokenizer and template, bigger text model and images."""
    import torch
    import transformers as tf
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    from utils.toy.vision import VISION, _tokenizer

    torch.manual_seed(0)
    tok, template = _tokenizer("smolvlm", 0)
    text = tf.LlamaConfig(vocab_size=len(tok), **TEXT, max_position_embeddings=1024, tie_word_embeddings=False,
                          eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None)
    vision = {**VISION, "image_size": PIXELS, "patch_size": PATCH}
    config = tf.Idefics3Config(vision_config=vision, text_config=text, scale_factor=SHUFFLE,
                               image_token_id=tok.convert_tokens_to_ids("<image>"))
    model = tf.Idefics3ForConditionalGeneration(config)
    model.generation_config.eos_token_id, model.generation_config.pad_token_id = tok.eos_token_id, tok.pad_token_id
    images = Idefics3ImageProcessorPil(size={"longest_edge": PIXELS}, max_image_size={"longest_edge": PIXELS},
                                       do_image_splitting=False)
    processor = tf.Idefics3Processor(image_processor=images, tokenizer=tok, image_seq_len=IMAGE_TOKENS,
                                     chat_template=template)
    return model, processor


def build(n_rows: int = 64) -> None:
    if not (MODEL / "config.json").exists():
        model, processor = build_model()
        model.save_pretrained(str(MODEL), safe_serialization=True)
        processor.save_pretrained(str(MODEL))
    if (DATA / "preference.trl.jsonl").exists():
        return
    from PIL import Image
    from transformers import AutoTokenizer

    from jobs import _text

    (DATA / "img").mkdir(parents=True, exist_ok=True)
    for name, rgb in COLOURS.items():
        Image.new("RGB", (PIXELS, PIXELS), rgb).save(DATA / "img" / f"{name}.png")
    tok, rng = AutoTokenizer.from_pretrained(str(MODEL)), random.Random(0)
    rows = []
    for i in range(n_rows):
        colour = list(COLOURS)[i % len(COLOURS)]
        rows.append((f"img/{colour}.png", _text(rng, tok, rng.randint(40, 60)), _text(rng, tok, rng.randint(60, 100)),
                     _text(rng, tok, rng.randint(60, 100))))
    user = lambda q: [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}]  # noqa: E731
    said = lambda a: [{"role": "assistant", "content": a}]  # noqa: E731
    files = {"sft": [{"messages": user(q) + said(c), "images": [img]} for img, q, c, _ in rows],
             "preference": [{"prompt": user(q), "chosen": said(c), "rejected": said(r), "images": [img]}
                            for img, q, c, r in rows]}
    for kind, items in files.items():
        _write(DATA / f"{kind}.jsonl", items)
        _write(DATA / f"{kind}.trl.jsonl", [trl_form(r) for r in items])


def trl_form(row: dict) -> dict:
    """The row as TRL gets it from our data layer: every content a list of parts (text parts with "text", image
    parts with "text": None), images as absolute paths."""
    parts = lambda c: c if isinstance(c, list) else [{"type": "text", "text": c}]  # noqa: E731
    out = {k: [{**m, "content": [{"type": p["type"], "text": p.get("text")} for p in parts(m["content"])]}
               for m in v] for k, v in row.items() if k != "images"}
    out["images"] = [str((DATA / i).resolve()) for i in row["images"]]
    return out


def _write(path: Path, rows: list[dict]) -> None:
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


@functools.lru_cache(None)
def n_params() -> tuple[int, int, int, int]:
    """(text-model parameters that multiply: layers and output head; layers; hidden; all parameters)."""
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(str(MODEL)).text_config
    h, kv = c.hidden_size, c.num_key_value_heads * (c.hidden_size // c.num_attention_heads)
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * c.intermediate_size + 2 * h
    matmul = c.num_hidden_layers * per_layer + c.vocab_size * h
    from safetensors.torch import load_file

    every = sum(t.numel() for t in load_file(str(MODEL / "model.safetensors")).values())
    return matmul, c.num_hidden_layers, h, every


@functools.lru_cache(None)
def seq_tokens(method: str) -> float:
    """Mean tokens one row puts through the policy per step, images included (DPO: prompt twice + both answers)."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(str(MODEL))
    kind = METHODS[method][0]
    rows = [json.loads(x) for x in open(DATA / f"{kind}.trl.jsonl")]

    def n(messages, images) -> int:
        content = [{**m, "content": [{k: v for k, v in p.items() if v is not None} for p in m["content"]]}
                   for m in messages]
        text = processor.apply_chat_template(content, tokenize=False)
        return len(processor(text=[text], images=[images] if images else None)["input_ids"][0])

    if kind == "sft":
        return sum(n(r["messages"], r["images"]) for r in rows) / len(rows)
    return sum(n(r["prompt"] + r["chosen"], r["images"]) + n(r["prompt"] + r["rejected"], r["images"])
               for r in rows) / len(rows)
