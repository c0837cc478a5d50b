"""Tiny random vision-language models built on the spot, with their processors and family-shaped chat templates:
SmolVLM (Idefics3), LLaVA and Gemma 3. Nothing is downloaded; each builds in about a second and loads back with
`AutoProcessor` + `AutoModelForImageTextToText`, as the real ones do.

    python -m utils.tiny_model DIR --family smolvlm     # or llava, gemma3

The language model is the text families' tiny decoder (utils/toy/tiny_model.layer_sizes) over the tokenizer trained
on the spot, with the family's image tokens added; the vision tower is one layer at 32 x 32 pixels (LLaVA: 28 x 28),
16 patches, so an image costs 4 tokens (LLaVA: 4 patches + the class token). The image processors are the PIL ones
(no torchvision needed). Every template marks the assistant's turns with `{% generation %}` (assistant-only loss)
and renders `{"type": "image"}` parts where the family puts its image."""

from __future__ import annotations

VISION_FAMILIES = ("smolvlm", "llava", "gemma3")


def _template(start: str, roles: dict[str, str], end: str, image: str, prompt: str) -> str:
    """A chat template: each turn `start + role-name + content + end`; content a string or parts (text, image); the
    assistant's content inside {% generation %}; `prompt` opens the assistant's turn."""
    content = ("{%- if message['content'] is string %}{{ message['content'] }}{%- else %}"
               "{%- for part in message['content'] %}{%- if part['type'] == 'image' %}{{ '" + image + "' }}"
               "{%- elif part['type'] == 'text' %}{{ part['text'] }}{%- endif %}{%- endfor %}{%- endif %}")
    names = "".join(f"{{%- {'if' if i == 0 else 'elif'} message['role'] == '{role}' %}}{{{{ '{start}{name}' }}}}"
                    for i, (role, name) in enumerate(roles.items())) + "{%- endif %}"
    return ("{%- for message in messages %}" + names +
            "{%- if message['role'] == 'assistant' %}{% generation %}" + content + "{{ '" + end +
            "' }}{% endgeneration %}{%- else %}" + content + "{{ '" + end + "' }}{%- endif %}{{ '\\n' }}"
            "{%- endfor %}{%- if add_generation_prompt %}{{ '" + prompt + "' }}{%- endif %}")


SPECS = {  # family -> (extra special tokens, end of turn (EOS), the chat template)
    "smolvlm": (["<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>"], "<end_of_utterance>",
                _template("<|im_start|>", {"system": "System: ", "user": "User:", "assistant": "Assistant:"},
                          "<end_of_utterance>", "<image>", "<|im_start|>Assistant:")),
    "llava": (["<image>"], "<|im_end|>",
              _template("", {"system": "SYSTEM: ", "user": "USER: ", "assistant": "ASSISTANT:"}, "<|im_end|>",
                        "<image>\\n", "ASSISTANT:")),
    "gemma3": (["<start_of_image>", "<end_of_image>", "<image_soft_token>", "<start_of_turn>", "<end_of_turn>"],
               "<end_of_turn>",
               _template("<start_of_turn>", {"system": "user\\n", "user": "user\\n", "assistant": "model\\n"},
                         "<end_of_turn>", "<start_of_image>", "<start_of_turn>model\\n")),
}


def _tokenizer(family: str, seed: int):
    from utils.toy.tiny_model import build_tokenizer

    extra, eos, template = SPECS[family]
    tok = build_tokenizer(seed=seed, chat_template=False)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|endoftext|>", *extra]},
                           replace_extra_special_tokens=True)
    tok.eos_token = eos
    if family == "gemma3":  # Gemma3Processor reads these names off the tokenizer
        tok._set_model_specific_special_tokens(special_tokens={"boi_token": "<start_of_image>",
                                                               "eoi_token": "<end_of_image>",
                                                               "image_token": "<image_soft_token>"})
    return tok, template


def _text_config(config_class, tok, **extra):
    from utils.toy.tiny_model import layer_sizes

    return config_class(vocab_size=len(tok), **layer_sizes(64, 2), max_position_embeddings=1024,
                        tie_word_embeddings=False, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                        bos_token_id=None, **extra)


VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32,
              patch_size=8)


def build(family: str, seed: int = 0):
    """(model, processor) of one family, random weights, fp32."""
    import torch
    import transformers as tf

    torch.manual_seed(seed)
    tok, template = _tokenizer(family, seed)
    token = tok.convert_tokens_to_ids
    if family == "smolvlm":
        from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

        config = tf.Idefics3Config(vision_config=VISION, text_config=_text_config(tf.LlamaConfig, tok), scale_factor=2,
                                   image_token_id=token("<image>"))
        model = tf.Idefics3ForConditionalGeneration(config)
        images = Idefics3ImageProcessorPil(size={"longest_edge": 32}, max_image_size={"longest_edge": 32},
                                           do_image_splitting=False)
        processor = tf.Idefics3Processor(image_processor=images, tokenizer=tok, image_seq_len=4, chat_template=template)
    elif family == "llava":
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

        vision = tf.CLIPVisionConfig(**{**VISION, "image_size": 28, "patch_size": 14}, projection_dim=32)
        config = tf.LlavaConfig(vision_config=vision, text_config=_text_config(tf.Qwen2Config, tok),
                                image_token_id=token("<image>"), vision_feature_select_strategy="default",
                                vision_feature_layer=-1)
        model = tf.LlavaForConditionalGeneration(config)
        images = CLIPImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
        processor = tf.LlavaProcessor(image_processor=images, tokenizer=tok, patch_size=14, image_token="<image>",
                                      vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                      chat_template=template)
    elif family == "gemma3":
        from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

        config = tf.Gemma3Config(text_config=_text_config(tf.Gemma3TextConfig, tok, head_dim=32, sliding_window=64),
                                 vision_config=tf.SiglipVisionConfig(**VISION), mm_tokens_per_image=4,
                                 boi_token_index=token("<start_of_image>"), eoi_token_index=token("<end_of_image>"),
                                 image_token_index=token("<image_soft_token>"))
        model = tf.Gemma3ForConditionalGeneration(config)
        with torch.no_grad():  # Gemma 3 initialises its projector to zeros: the image would count for nothing at first
            torch.nn.init.normal_(model.model.multi_modal_projector.mm_input_projection_weight, std=0.02)
        images = Gemma3ImageProcessorPil(size={"height": 32, "width": 32})
        processor = tf.Gemma3Processor(image_processor=images, tokenizer=tok, image_seq_length=4,
                                       chat_template=template)
    else:
        raise ValueError(f"unknown vision family {family!r}; expected one of {', '.join(VISION_FAMILIES)}")
    model.generation_config.eos_token_id, model.generation_config.pad_token_id = tok.eos_token_id, tok.pad_token_id
    return model, processor


def make_tiny_vlm(output_dir: str, family: str, seed: int = 0) -> str:
    """Build one family's tiny VLM and save it with its processor (safetensors); returns the directory."""
    model, processor = build(family, seed)
    model.save_pretrained(output_dir, safe_serialization=True)
    processor.save_pretrained(output_dir)
    return output_dir
