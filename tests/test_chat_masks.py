"""Assistant-only loss on chat templates without `{% generation %}` markers (utils/data/chat_masks.py): the masked tokens
are exactly each assistant turn as the template renders it (content, end-of-turn token, and the template's newline
after it where it writes one), equal to TRL's own masks where TRL can patch the template, the same training loss
through the command line, and rows a template renders inconsistently refused at FILE:LINE before any weights load."""

from __future__ import annotations

import json

import pytest

from conftest import log_history, run_cli, write_jsonl
from utils.toy.smollm2 import hf_dir

CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>'"
          " + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
MISTRAL = ("{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + "
           "message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + "
           "eos_token }}{% endif %}{% endfor %}")
NO_STOP = ("{% for message in messages %}{{ message['role'] + ': ' + message['content'] + '\n' }}{% endfor %}"
           "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}")

ONE = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "It is 4."}]
TWO = ONE + [{"role": "user", "content": "And 3+3?"}, {"role": "assistant", "content": "It is 6."}]
THINK = [ONE[0], {"role": "assistant", "content": "<think>\nadd them\n</think>\n\nIt is 4."}]
THINK_TWO = THINK + TWO[2:]


def _tokenizer(family: str, template: str | None = None):
    if family == "smollm2":
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(hf_dir())
    elif family == "chatml":
        from utils.toy.tiny_model import build_tokenizer

        tok = build_tokenizer()
    else:
        from utils.toy.families import build_tokenizer

        tok = build_tokenizer(family)
    if template is not None:
        tok.chat_template = template
    return tok


def _masked_spans(tok, messages) -> list[str]:
    """The masked tokens, decoded run by run (one run per assistant turn)."""
    from utils.data.chat_masks import mask_row, stop_ids

    row = mask_row(messages, tok, stop_ids(tok))
    runs, cur = [], []
    for token, bit in zip(row["input_ids"], row["assistant_masks"]):
        if bit:
            cur.append(token)
        elif cur:
            runs, cur = runs + [tok.decode(cur)], []
    return runs + ([tok.decode(cur)] if cur else [])


CASES = [  # family, template (None: the family's own, as TRL ships it), conversation, expected masked runs
    ("smollm2", None, TWO, ["It is 4.<|im_end|>\n", "It is 6.<|im_end|>\n"]),
    ("chatml", CHATML, TWO, ["It is 4.<|im_end|>\n", "It is 6.<|im_end|>\n"]),
    ("phi3", MISTRAL, TWO, ["It is 4.<|endoftext|>", "It is 6.<|endoftext|>"]),
    ("llama3", None, TWO, ["It is 4.<|eot_id|>", "It is 6.<|eot_id|>"]),
    ("gemma2", None, TWO, ["It is 4.<end_of_turn>\n", "It is 6.<end_of_turn>\n"]),
    ("phi3", None, TWO, ["It is 4.<|end|>\n", "It is 6.<|end|>\n<|endoftext|>"]),
    ("qwen3", None, ONE, ["<think>\n\n</think>\n\nIt is 4.<|im_end|>\n"]),  # thinking off: the template's empty block
    ("qwen3", None, THINK, ["<think>\nadd them\n</think>\n\nIt is 4.<|im_end|>\n"]),  # thinking on
]


@pytest.mark.parametrize("family,template,messages,expected", CASES,
                         ids=[f"{c[0]}-{'own' if c[1] is None else 'mistral' if c[1] is MISTRAL else 'chatml'}-"
                              f"{len(c[2])}turns{'-think' if 'think>' in c[2][1]['content'] else ''}" for c in CASES])
def test_masked_tokens_are_the_assistant_turns(family, template, messages, expected):
    tok = _tokenizer(family, template)
    assert _masked_spans(tok, messages) == expected


@pytest.mark.parametrize("family,messages", [("llama3", TWO), ("gemma2", TWO), ("phi3", TWO), ("phi3", ONE),
                                             ("qwen3", ONE), ("qwen3", THINK)])
def test_masks_equal_trls_where_it_patches_the_template(family, messages):
    """TRL masks these templates through its patched training copies; ours, on the original template, agree token
    for token (ids and mask)."""
    from trl.chat_template_utils import get_training_chat_template

    from utils.data.chat_masks import mask_row, stop_ids, trl_masks_template

    tok = _tokenizer(family)
    assert trl_masks_template(tok)
    ours = mask_row(messages, tok, stop_ids(tok))
    theirs = tok.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True,
                                     chat_template=get_training_chat_template(tok))
    assert ours["input_ids"] == list(theirs["input_ids"])
    assert ours["assistant_masks"] == list(theirs["assistant_masks"])
    assert 0 < sum(ours["assistant_masks"]) < len(ours["input_ids"])


@pytest.mark.parametrize("messages", [TWO, THINK_TWO], ids=["no-reasoning", "reasoning"])
def test_qwen3_multi_turn_is_inconsistent(messages):
    """Qwen3's template renders an earlier turn without its think block (and its reasoning): refused, not guessed."""
    from utils.data.chat_masks import Inconsistent, mask_row, stop_ids

    tok = _tokenizer("qwen3")
    with pytest.raises(Inconsistent, match="renders turn 2 .* differently when the conversation ends there"):
        mask_row(messages, tok, stop_ids(tok))


def test_sft_loss_equals_trls(tmp_path):
    """One SFT step on a Llama-3 model: TRL's patched template (its own masks) and the same template TRL cannot
    recognise (a comment added: our masks) give the same loss."""
    from utils.toy.families import make_family

    model = make_family("llama3", str(tmp_path / "llama3"), hidden_size=32)
    data = write_jsonl(tmp_path / "msgs.jsonl", [{"messages": TWO}, {"messages": ONE}] * 2)
    losses = {}
    for variant in ("trl", "ours"):
        if variant == "ours":
            cfg = tmp_path / "llama3" / "tokenizer_config.json"
            template = tmp_path / "llama3" / "chat_template.jinja"
            if template.exists():
                template.write_text("{#- a fine-tune's copy -#}" + template.read_text())
            else:
                d = json.loads(cfg.read_text())
                d["chat_template"] = "{#- a fine-tune's copy -#}" + d["chat_template"]
                cfg.write_text(json.dumps(d))
        out = tmp_path / variant
        proc = run_cli("--rlhf_type", "SFT", "--train_mode", "full", "--model_name_or_path", model,
                       "--train_data_path", data, "--output_dir", out, "--max_steps", 1,
                       "--per_device_train_batch_size", 4, "--learning_rate", 1e-3, "--save_strategy", "no")
        assert ("Masking assistant turns" in proc.stdout + proc.stderr) == (variant == "ours")
        losses[variant] = log_history(out)[0]["loss"]
    assert losses["ours"] == pytest.approx(losses["trl"], abs=1e-6)


def _refused(tmp_path, template: str, rows, family: str = "qwen3"):
    from utils.toy.families import make_family

    model = make_family(family, str(tmp_path / family), hidden_size=32)
    tok = _tokenizer(family, template)
    tok.save_pretrained(model)
    data = write_jsonl(tmp_path / "msgs.jsonl", rows)
    out = tmp_path / "out"
    proc = run_cli("--rlhf_type", "SFT", "--train_mode", "lora", "--model_name_or_path", model,
                   "--train_data_path", data, "--output_dir", out, "--max_steps", 1, check=False)
    assert proc.returncode == 2, proc.stderr
    assert not out.exists()
    assert "Traceback" not in proc.stderr
    return proc.stderr


def test_inconsistent_row_refused_at_its_line(tmp_path):
    """A Qwen3-style template TRL does not recognise; the second row has two turns, the first with reasoning the
    template drops when more turns follow."""
    from utils.toy.families import chat_template

    err = _refused(tmp_path, "{#- fine-tuned -#}" + chat_template("qwen3"), [{"messages": THINK}, {"messages": THINK_TWO}])
    assert "msgs.jsonl:2: the chat template renders turn 2 (an assistant turn) differently" in err
    assert "split the conversation into prompt/completion rows" in err


def test_template_without_end_of_turn_refused(tmp_path):
    err = _refused(tmp_path, NO_STOP, [{"messages": ONE}])
    assert "msgs.jsonl:1: the chat template ends assistant turn 1 without an end-of-turn token" in err


def test_sharegpt_on_plain_chatml_trains(tmp_path):
    """ShareGPT conversations (converted to messages) on a model whose ChatML template has no markers: TRL alone
    refused it after loading the weights; now the masks are ours and one step trains."""
    from utils.toy.tiny_model import make_tiny

    model = make_tiny(str(tmp_path / "tiny"))
    tok = _tokenizer("chatml", CHATML)
    tok.save_pretrained(model)
    out = tmp_path / "out"
    proc = run_cli("--rlhf_type", "SFT", "--train_mode", "lora", "--model_name_or_path", model, "--train_data_path",
                   "examples/sharegpt.jsonl", "--output_dir", out, "--max_steps", 1, "--save_strategy", "no")
    assert "Masking assistant turns" in proc.stdout + proc.stderr
    losses = [h["loss"] for h in log_history(out) if "loss" in h]
    assert len(losses) == 1 and losses[0] == losses[0] and losses[0] > 0
