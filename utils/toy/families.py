"""Tiny random models of five real families, with each family's own token conventions (nothing downloaded).

    make_family(name, output_dir, hidden_size=32, seed=0) -> output_dir     # name in FAMILIES

What is real: the model class (`LlamaForCausalLM`, `Gemma2ForCausalLM`, `Phi3ForCausalLM`, `Qwen3ForCausalLM`,
`GPT2LMHeadModel`), the special tokens and their roles, whether the tokenizer adds BOS when encoding, the pad token
(or its absence), the EOS ids in the config and generation config, and the chat template (the one TRL ships in
`trl/chat_templates/`). What is tiny: a BPE trained on a small corpus (512 tokens; Gemma 612, 256 of them its
byte-fallback tokens) and a 2-layer model.

| family | BOS added | EOS (tokenizer) | ends a turn | pad | config eos_token_id | chat template |
|---|---|---|---|---|---|---|
| llama3 | `<|begin_of_text|>` | `<|eot_id|>` | `<|eot_id|>` | none | [`<|end_of_text|>`, `<|eot_id|>`] | llama3 |
| gemma2 | `<bos>` | `<eos>` | `<end_of_turn>` | `<pad>` | [`<eos>`, `<end_of_turn>`] | gemma (no system) |
| phi3 | no | `<|endoftext|>` | `<|end|>` | = EOS | `<|endoftext|>` | phi3 |
| qwen3 | none | `<|im_end|>` | `<|im_end|>` | `<|endoftext|>` | `<|im_end|>`, no pad_token_id | qwen3 (<think>) |
| gpt2 | no | `<|endoftext|>` | - | none | `<|endoftext|>` | none (a base model) |

Tokenizers are byte-level BPEs (Gemma: SentencePiece-style `▁` + byte fallback, as `GemmaTokenizer` rebuilds it),
trained with the splitting rules of the class `AutoTokenizer` picks for the saved directory, so that loading the
directory tokenizes exactly like the tokenizer that was built (Qwen2Tokenizer, GPT2Tokenizer and GemmaTokenizer
rebuild their own pipelines around the saved vocabulary).
"""

from __future__ import annotations

import os

from utils.toy.tiny_model import corpus, layer_sizes, save, train_byte_level_bpe, vocab_and_merges

FAMILIES = ("llama3", "gemma2", "phi3", "qwen3", "gpt2")

# Llama-3's pre-tokenisation regex (tokenizer.json of Meta-Llama-3).
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")

# special: special tokens, in id order (ids 0, 1, ...); added: plain added tokens; bos / eos / pad: the tokenizer's;
# stop: generation_config.eos_token_id (every token that ends a turn); config_eos (list or one) / config_bos: the
# model config's; add_bos: the tokenizer adds BOS when encoding; template: trl/chat_templates/NAME.jinja;
# config_pad: the model config carries pad_token_id.
SPECS = {
    "llama3": dict(special=["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                            "<|eot_id|>"],
                   bos="<|begin_of_text|>", eos="<|eot_id|>", pad=None, stop=["<|end_of_text|>", "<|eot_id|>"],
                   config_eos=["<|end_of_text|>", "<|eot_id|>"], add_bos=True, template="llama3",
                   config_pad=False),
    "gemma2": dict(special=["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>"],
                   bos="<bos>", eos="<eos>", pad="<pad>", stop=["<eos>", "<end_of_turn>"],
                   config_eos=["<eos>", "<end_of_turn>"], add_bos=True, template="gemma", config_pad=True),
    "phi3": dict(special=["<unk>", "<s>", "</s>", "<|endoftext|>", "<|assistant|>", "<|system|>", "<|end|>",
                          "<|user|>"],
                 bos="<s>", eos="<|endoftext|>", pad="<|endoftext|>", stop=["<|endoftext|>", "<|end|>"],
                 config_eos="<|endoftext|>", add_bos=False, template="phi3", config_pad=True),
    "qwen3": dict(special=["<|endoftext|>", "<|im_start|>", "<|im_end|>"], added=["<think>", "</think>"],
                  bos=None, eos="<|im_end|>", pad="<|endoftext|>", stop=["<|im_end|>", "<|endoftext|>"],
                  config_eos="<|im_end|>", config_bos="<|endoftext|>", add_bos=False, template="qwen3",
                  config_pad=False),
    "gpt2": dict(special=["<|endoftext|>"], bos="<|endoftext|>", eos="<|endoftext|>", pad=None,
                 stop=["<|endoftext|>"], config_eos="<|endoftext|>", add_bos=False, template=None, config_pad=False),
}


def chat_template(name: str | None) -> str | None:
    """The text of `trl/chat_templates/NAME.jinja` as installed (None for None)."""
    if name is None:
        return None
    import trl

    with open(os.path.join(os.path.dirname(trl.__file__), "chat_templates", f"{name}.jinja")) as f:
        return f.read()


def _corpus(seed: int, extra=()) -> list[str]:
    return corpus(seed) + ["What is 12+7?\n19", "user\nassistant\nmodel\nsystem\n"] * 20 + list(extra)


def _train_bpe(family: str, vocab_size: int, seed: int, special: list[str], extra=()):
    """A `tokenizers.Tokenizer` trained with the splitting rules the family's loader rebuilds."""
    if family == "gemma2":
        return _train_sentencepiece_bpe(vocab_size, seed, special, extra)
    if family == "qwen3":  # exactly what Qwen2Tokenizer rebuilds (as utils/toy/tiny_model.py's tokenizer)
        from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

        return train_byte_level_bpe(_corpus(seed, extra), vocab_size, special, PRETOKENIZE_REGEX, nfc=True)
    # gpt2: what GPT2Tokenizer rebuilds, byte-level with GPT-2's own regex; llama3, phi3: Llama-3's regex
    return train_byte_level_bpe(_corpus(seed, extra), vocab_size, special, None if family == "gpt2" else LLAMA3_REGEX)


def _train_sentencepiece_bpe(vocab_size: int, seed: int, special: list[str], extra=()):
    """Gemma's kind: spaces become ▁, no pre-splitting, unknown bytes -> <0xNN> (256 more tokens)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    alphabet = sorted(set("".join(_corpus(seed, extra)).replace(" ", "▁")) | {"\n"})
    bytes_ = [f"<0x{i:02X}>" for i in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size + 100, special_tokens=special + bytes_,
                                  initial_alphabet=alphabet, show_progress=False)
    tok.train_from_iterator(_corpus(seed, extra), trainer=trainer)
    return tok


def build_tokenizer(family: str, vocab_size: int = 512, seed: int = 0, extra=()):
    """The family's tokenizer: a trained BPE (on the shared corpus and the lines `extra`), its special tokens, BOS /
    EOS / pad and chat template."""
    from tokenizers import AddedToken, processors

    spec = SPECS[family]
    tok = _train_bpe(family, vocab_size, seed, spec["special"], extra)
    kwargs = dict(bos_token=spec["bos"], eos_token=spec["eos"], pad_token=spec["pad"])
    if family in ("qwen3", "gpt2", "gemma2"):  # classes that rebuild their pipeline from vocab + merges
        from transformers import GemmaTokenizer, GPT2Tokenizer, Qwen2Tokenizer

        vocab, merges = vocab_and_merges(tok)
        cls = {"qwen3": Qwen2Tokenizer, "gpt2": GPT2Tokenizer, "gemma2": GemmaTokenizer}[family]
        if family == "gemma2":
            kwargs.update(unk_token="<unk>", mask_token="<mask>", add_bos_token=True, add_eos_token=False,
                          extra_special_tokens=["<start_of_turn>", "<end_of_turn>"])
        elif family == "qwen3":
            kwargs.update(unk_token=None, extra_special_tokens=["<|im_start|>", "<|endoftext|>"])
        else:
            kwargs.update(unk_token="<|endoftext|>")
        hf = cls(vocab=vocab, merges=merges, **kwargs)
        if spec.get("added"):
            hf.add_tokens([AddedToken(t, special=False, normalized=False) for t in spec["added"]])
    else:  # llama3, phi3: tokenizer.json as it is (PreTrainedTokenizerFast / TokenizersBackend on load)
        from transformers import PreTrainedTokenizerFast

        if spec["add_bos"]:
            bos = spec["bos"]
            tok.post_processor = processors.TemplateProcessing(
                single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
                special_tokens=[(bos, tok.token_to_id(bos))])
        extra = [t for t in spec["special"] if t not in (spec["bos"], spec["eos"], spec["pad"])]
        hf = PreTrainedTokenizerFast(tokenizer_object=tok, extra_special_tokens=extra,
                                     clean_up_tokenization_spaces=False, **kwargs)
    if spec["pad"] is None:
        hf.pad_token = None
    hf.chat_template = chat_template(spec["template"])
    return hf


def build_model(family: str, tokenizer, hidden_size: int = 32, num_layers: int = 2, seed: int = 0,
                context: int = 512):
    """A random 2-layer model of the family's class with the family's BOS / EOS / pad ids, `context` positions. fp32."""
    import torch
    from transformers import (AutoModelForCausalLM, Gemma2Config, GenerationConfig, GPT2Config, LlamaConfig,
                              Phi3Config, Qwen3Config)

    spec, ids = SPECS[family], tokenizer.convert_tokens_to_ids
    eos = [ids(t) for t in spec["config_eos"]] if isinstance(spec["config_eos"], list) else ids(spec["config_eos"])
    bos_tok = spec.get("config_bos", spec["bos"])
    special = dict(bos_token_id=ids(bos_tok) if bos_tok else None, eos_token_id=eos,
                   pad_token_id=ids(spec["pad"]) if spec["config_pad"] else None)
    sizes = layer_sizes(hidden_size, num_layers)
    heads = sizes["num_attention_heads"]
    if family == "gpt2":
        config = GPT2Config(vocab_size=len(tokenizer), n_embd=hidden_size, n_layer=num_layers, n_head=heads,
                            n_positions=context, **special)
    else:
        cls = {"llama3": LlamaConfig, "gemma2": Gemma2Config, "phi3": Phi3Config, "qwen3": Qwen3Config}[family]
        extra = {"gemma2": dict(head_dim=hidden_size // heads, query_pre_attn_scalar=hidden_size // heads,
                                sliding_window=64),
                 "qwen3": dict(head_dim=hidden_size // heads, tie_word_embeddings=True),
                 "phi3": dict(original_max_position_embeddings=context)}.get(family, {})
        config = cls(vocab_size=len(tokenizer), **sizes, max_position_embeddings=context, **special, **extra)
    if not spec["config_pad"]:
        config.pad_token_id = None
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    stop = [ids(t) for t in spec["stop"]]
    model.generation_config = GenerationConfig(
        bos_token_id=special["bos_token_id"], eos_token_id=stop if len(stop) > 1 else stop[0],
        pad_token_id=ids(spec["pad"]) if spec["pad"] else None)
    return model


def make_family(name: str, output_dir: str, hidden_size: int = 32, seed: int = 0, num_layers: int = 2,
                vocab_size: int = 512, context: int = 512, corpus_extra=()) -> str:
    """Build and save a tiny `name` model + tokenizer to `output_dir` (same seed: the same tokenizer, so a teacher of
    another width shares the student's vocabulary); returns the directory."""
    if name not in SPECS:
        raise ValueError(f"unknown family {name!r}; expected one of {', '.join(FAMILIES)}")
    tokenizer = build_tokenizer(name, vocab_size=vocab_size, seed=seed, extra=corpus_extra)
    save(build_model(name, tokenizer, hidden_size=hidden_size, num_layers=num_layers, seed=seed, context=context),
         tokenizer, output_dir)
    _check_round_trip(tokenizer, output_dir)
    return output_dir


def _check_round_trip(built, output_dir: str) -> None:
    """The directory's tokenizer, as AutoTokenizer loads it, tokenizes as the one built (BOS included): a class
    that rebuilds its own pipeline (Qwen2Tokenizer, GemmaTokenizer, GPT2Tokenizer) would otherwise differ silently."""
    from transformers import AutoTokenizer

    loaded = AutoTokenizer.from_pretrained(output_dir)
    for text in ("hi", "What is 12+7? The sum is 19.", " two  spaces\nand ünï"):
        if loaded(text)["input_ids"] != built(text)["input_ids"]:
            raise RuntimeError(f"{output_dir}: {type(loaded).__name__} loaded from the directory tokenizes {text!r} "
                               f"as {loaded(text)['input_ids']}, the tokenizer built as {built(text)['input_ids']}")
