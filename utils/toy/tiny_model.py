"""Build a tiny random causal LM and a tokenizer trained on the spot, saved with `save_pretrained`.

For smoke tests, CI and the demo: nothing is downloaded. The tokenizer is a byte-level BPE trained
with Qwen2's own splitting rules (NFC, Qwen2's regex, byte-level), so `AutoTokenizer.from_pretrained`
on the model directory, which rebuilds Qwen2's pipeline around the saved vocabulary, tokenizes exactly
as the trained tokenizer does. It carries a ChatML chat template with `{% generation %}` markers
(assistant-only loss works).

    python -m utils.tiny_model --output_dir DIR [--hidden_size 64] [--num_layers 2] [--no_pad_token]
"""

from __future__ import annotations

import json
import random


CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}"
    "{%- else %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
WORDS = (
    "the a an is are was be to of and in that it for on with as you he she they we this at by from "
    "or not but what all were when can there use your how said each which do their time if will way "
    "about many then them would write like so these her long make thing see him two has look more day "
    "could go come did number sound no most people my over know water than call first who may down side "
    "been now find any new work part take get place made live where after back little only round man "
    "year came show every good me give our under name very through just form sentence great think say "
    "help low line differ turn cause much mean before move right boy old too same tell does set three "
    "want air well also play small end put home read hand port large spell add even land here must big "
    "high such follow act why ask men change went light kind off need house picture try us again animal "
    "point mother world near build self earth father answer question yes fine sure sorry hello thanks "
    "user assistant system sum sort list reverse plus minus equals"
).split()


def corpus(seed: int, n: int = 3000) -> list[str]:
    """The text every tiny tokenizer is trained on: `n` random lines of common words and numbers, then small sums."""
    rng, lines = random.Random(seed), []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 12))]
        nums = [str(rng.randint(0, 999)) for _ in range(rng.randint(0, 4))]
        toks = words + nums
        rng.shuffle(toks)
        line = " ".join(toks)
        if rng.random() < 0.5:
            line = line.capitalize() + rng.choice([".", "?", "!", ":", ","])
        lines.append(line)
    lines += [f"{a}+{b}={a + b}" for a in range(100) for b in range(0, 100, 7)]
    return lines


def train_byte_level_bpe(lines: list[str], vocab_size: int, special: list[str], regex: str | None,
                         nfc: bool = False):
    """A byte-level BPE (`tokenizers.Tokenizer`) trained on `lines`: NFC first with `nfc`, text split by `regex`
    (None: GPT-2's own split, inside the byte-level step), every byte in the alphabet, `special` at ids 0, 1, ..."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    if nfc:
        tok.normalizer = normalizers.NFC()
    if regex is None:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(lines, trainer=trainer)
    return tok


def vocab_and_merges(tok) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A trained BPE's vocabulary and merges, as the slow-tokenizer classes (Qwen2Tokenizer, ...) take them."""
    bpe = json.loads(tok.model.__getstate__())
    return bpe["vocab"], [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in bpe["merges"]]


def build_tokenizer(vocab_size: int = 512, seed: int = 0, pad_token: bool = True, chat_template: bool = True):
    """Train a byte-level BPE with Qwen2's pre-tokenisation and wrap it as a `Qwen2Tokenizer`."""
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    vocab, merges = vocab_and_merges(train_byte_level_bpe(corpus(seed), vocab_size, SPECIAL_TOKENS,
                                                          PRETOKENIZE_REGEX, nfc=True))
    hf_tok = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>" if pad_token else None,
        additional_special_tokens=["<|im_start|>", "<|endoftext|>"],
    )
    if not pad_token:
        hf_tok.pad_token = None
    if chat_template:
        hf_tok.chat_template = CHAT_TEMPLATE
    return hf_tok


def layer_sizes(hidden_size: int, num_layers: int) -> dict:
    """The shape of every tiny decoder: an MLP twice the width, a head per 16 dimensions (at least 2), half as
    many key/value heads (grouped-query attention)."""
    heads = max(2, hidden_size // 16)
    return dict(hidden_size=hidden_size, intermediate_size=hidden_size * 2, num_hidden_layers=num_layers,
                num_attention_heads=heads, num_key_value_heads=max(1, heads // 2))


def build_model(tokenizer, hidden_size: int = 64, num_layers: int = 2, arch: str = "qwen2", seed: int = 0,
                max_position_embeddings: int = 1024):
    """A random-initialised causal LM sized to the tokenizer. fp32, so it trains fast on CPU."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    torch.manual_seed(seed)
    cfg_cls = {"qwen2": Qwen2Config, "llama": LlamaConfig}[arch]
    config = cfg_cls(
        vocab_size=len(tokenizer),
        **layer_sizes(hidden_size, num_layers),
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def save(model, tokenizer, output_dir: str) -> str:
    """Model (safetensors) and tokenizer into `output_dir`; returns the directory."""
    model.save_pretrained(output_dir, safe_serialization=True)
    tokenizer.save_pretrained(output_dir)
    return output_dir


def make_tiny(output_dir: str, hidden_size: int = 64, num_layers: int = 2, vocab_size: int = 512,
              arch: str = "qwen2", seed: int = 0, pad_token: bool = True, chat_template: bool = True) -> str:
    """Build and save a tiny model + tokenizer to `output_dir`; returns the directory."""
    tokenizer = build_tokenizer(vocab_size=vocab_size, seed=seed, pad_token=pad_token, chat_template=chat_template)
    return save(build_model(tokenizer, hidden_size=hidden_size, num_layers=num_layers, arch=arch, seed=seed),
                tokenizer, output_dir)
