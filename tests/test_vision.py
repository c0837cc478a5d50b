"""Tiny vision-language models built on the spot (utils/toy/vision.py): each family loads back with AutoProcessor +
AutoModelForImageTextToText, renders image parts where the family puts them, marks only the assistant's tokens for the
loss, sees the image, and learns from it."""

from __future__ import annotations

import pytest
import torch

from conftest import run_cli

FAMILIES = ("smolvlm", "llava", "gemma3")


@pytest.fixture(scope="module")
def vlm_dirs(tmp_path_factory):
    from utils.toy.vision import make_tiny_vlm

    root = tmp_path_factory.mktemp("vlm")
    proc = run_cli(str(root / "smolvlm"), "--family", "smolvlm", module="utils.tiny_model")  # the command line
    assert "tiny smolvlm model (0.16M parameters) and processor saved to" in proc.stdout, proc.stdout
    assert "WARNING" not in proc.stderr and "warn" not in proc.stderr.lower(), proc.stderr
    return {f: str(root / f) if f == "smolvlm" else make_tiny_vlm(str(root / f), f) for f in FAMILIES}


def _picture(colour):
    from PIL import Image

    return Image.new("RGB", (40, 30), colour)


def _rendered(processor, colour, answer):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which colour?"}]},
                {"role": "assistant", "content": [{"type": "text", "text": answer}]}]
    out = processor.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True,
                                        images=[_picture(colour)], return_tensors="pt")
    mask = torch.as_tensor(out.pop("assistant_masks")).bool()
    return out, mask


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_vlm_loads_renders_and_learns_from_the_image(family, vlm_dirs):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from utils.toy.vision import SPECS

    processor = AutoProcessor.from_pretrained(vlm_dirs[family])
    model = AutoModelForImageTextToText.from_pretrained(vlm_dirs[family])
    tok = processor.tokenizer
    end = SPECS[family][1]
    assert tok.eos_token == end and model.generation_config.eos_token_id == tok.convert_tokens_to_ids(end)
    red, mask = _rendered(processor, (255, 0, 0), "red")
    # only the answer and its end of turn are trained; the image became 4 image tokens inside the user's turn
    assert tok.decode(red["input_ids"][0][mask[0]]).strip() == f"red{end}"
    image_id = model.config.image_token_id if family != "gemma3" else model.config.image_token_index
    assert int((red["input_ids"] == image_id).sum()) == 4
    first_image = int((red["input_ids"][0] == image_id).nonzero()[0])
    assert first_image < int(mask[0].nonzero()[0])
    blue, _ = _rendered(processor, (0, 0, 255), "red")
    assert torch.equal(blue["input_ids"], red["input_ids"])
    with torch.no_grad():  # the picture reaches the language model: other pixels, other logits at the image
        a, b = model(**red).logits[0, first_image], model(**blue).logits[0, first_image]
    assert not torch.allclose(a, b)

    def loss(batch, m):
        labels = batch["input_ids"].masked_fill(~m, -100)
        return model(**batch, labels=labels).loss

    # a few steps on red -> "red" and blue -> "blue" (same prompt): the answer can come only from the image
    blue_batch, blue_mask = _rendered(processor, (0, 0, 255), "blue")
    before = (loss(red, mask) + loss(blue_batch, blue_mask)).item()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(30):
        optimizer.zero_grad()
        (loss(red, mask) + loss(blue_batch, blue_mask)).backward()
        optimizer.step()
    after = (loss(red, mask) + loss(blue_batch, blue_mask)).item()
    assert after < 0.2 * before, (before, after)
    prompt = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text",
                                                                                           "text": "Which colour?"}]}],
                                           add_generation_prompt=True)
    for colour, word in (((255, 0, 0), "red"), ((0, 0, 255), "blue")):
        batch = processor(images=[[_picture(colour)]], text=[prompt], return_tensors="pt")
        out = model.generate(**batch, max_new_tokens=4, do_sample=False)
        assert tok.decode(out[0, batch["input_ids"].shape[1]:]).strip().startswith(word)


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_vlm_tokenizer_round_trip(family, vlm_dirs):
    """The tokenizer AutoProcessor loads tokenizes as the one built (transformers may rebuild its pipeline)."""
    from transformers import AutoProcessor

    from utils.toy.vision import _tokenizer

    built, _ = _tokenizer(family, 0)
    loaded = AutoProcessor.from_pretrained(vlm_dirs[family]).tokenizer
    for text in ("hi", "What is 12+7? The sum is 19.", " two  spaces\nand ünï"):
        assert loaded(text)["input_ids"] == built(text)["input_ids"]
