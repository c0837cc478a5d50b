"""Real model families (utils/toy/families.py): tiny Llama-3, Gemma-2, Phi-3, Qwen3 and GPT-2 models with their
own token conventions. Their conventions hold after a save / load round trip; every method trains two steps on
every family from the command-line entry point and its output reloads; a reward model of each family scores
(RewardModelScorer) exactly as the model does on the token ids TRL's RewardTrainer trains on."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import torch

from conftest import addition_pairs, log_history, run_main, to_kto_rows, to_reward_rows, to_sft_rows, write_jsonl
from utils.toy.families import FAMILIES, SPECS

CHAT = [f for f in FAMILIES if SPECS[f]["template"]]
REWARDS = '''
def length_reward(prompts, completions, **kwargs):
    # chat prompts get conversational completions, plain-string prompts plain strings
    assert all(isinstance(p, str) == isinstance(c, str) for p, c in zip(prompts, completions)), (prompts, completions)
    text = [c if isinstance(c, str) else "".join(m["content"] for m in c) for c in completions]
    return [min(len(t), 20) / 20 for t in text]
'''


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def fam(tmp_path_factory):
    """fam(name, hidden=32) -> the saved model directory, built once per (family, width); same seed, same
    tokenizer, so a wider model of the family is a teacher for the narrower one."""
    from utils.toy.families import make_family

    root, built = tmp_path_factory.mktemp("families"), {}

    def get(name, hidden=32):
        if (name, hidden) not in built:
            built[name, hidden] = Path(make_family(name, str(root / f"{name}-{hidden}"), hidden_size=hidden))
        return built[name, hidden]

    return get


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """data[conversational][kind] -> a JSONL file (8 rows; no system turns: Gemma has none)."""
    d = tmp_path_factory.mktemp("family_data")
    (d / "rewards.py").write_text(REWARDS)
    out = {"rewards": d / "rewards.py"}
    for conv in (True, False):
        pairs, tag = addition_pairs(8, seed=1, conversational=conv), "chat" if conv else "plain"
        rows = {"pref": pairs, "reward": to_reward_rows(pairs), "kto": to_kto_rows(pairs), "sft": to_sft_rows(pairs),
                "prompts": [{"prompt": r["prompt"]} for r in pairs],
                "messages": [{"messages": r["prompt"] + r["chosen"]} for r in pairs] if conv else
                [{"text": r["prompt"] + r["chosen"]} for r in pairs]}
        out[conv] = {k: write_jsonl(d / f"{k}_{tag}.jsonl", v) for k, v in rows.items()}
    return out


# --------------------------------------------------------------------------------- conventions
def test_data_helpers_have_the_shapes_used_here():
    chat, plain = addition_pairs(2, conversational=True), addition_pairs(2, conversational=False)
    assert [m["role"] for m in chat[0]["prompt"]] == ["user"] and chat[0]["chosen"][0]["role"] == "assistant"
    assert [m["role"] for m in to_reward_rows(chat)[0]["chosen"]] == ["user", "assistant"]
    assert isinstance(plain[0]["prompt"], str) and plain[0]["prompt"].endswith(" ")
    assert to_reward_rows(plain)[0]["chosen"] == plain[0]["prompt"] + plain[0]["chosen"]
    assert [r["label"] for r in to_kto_rows(chat)] == [True, False, True, False]
    assert set(to_sft_rows(chat)[0]) == {"prompt", "completion"}


@pytest.mark.parametrize("name", FAMILIES)
def test_family_conventions(name, fam):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from utils.toy.families import build_tokenizer

    path, spec = fam(name), SPECS[name]
    tok, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path)
    cls = {"llama3": "LlamaForCausalLM", "gemma2": "Gemma2ForCausalLM", "phi3": "Phi3ForCausalLM",
           "qwen3": "Qwen3ForCausalLM", "gpt2": "GPT2LMHeadModel"}[name]
    assert type(model).__name__ == cls
    ids = tok.convert_tokens_to_ids
    assert 500 <= len(tok) <= 620 and model.get_input_embeddings().weight.shape[0] == len(tok)
    # the loaded tokenizer tokenizes as the one that was built (classes that rebuild their pipeline included)
    built = build_tokenizer(name)
    for text in ["hi", "What is 12+7? The sum is 19.", "  two  spaces\nnew line, ünï ☃"]:
        assert tok(text)["input_ids"] == built(text)["input_ids"], text
        assert tok.decode(tok(text)["input_ids"], skip_special_tokens=True) == text
    first = tok("hi")["input_ids"][0]
    assert (first == tok.bos_token_id) == (name in ("llama3", "gemma2"))
    assert tok.eos_token == spec["eos"] and tok.pad_token == spec["pad"] and tok.bos_token == spec["bos"]
    eos = model.config.eos_token_id
    expected = {"llama3": [ids("<|end_of_text|>"), ids("<|eot_id|>")], "gemma2": [ids("<eos>"), ids("<end_of_turn>")],
                "phi3": ids("<|endoftext|>"), "qwen3": ids("<|im_end|>"), "gpt2": ids("<|endoftext|>")}[name]
    assert eos == expected
    assert model.config.pad_token_id == {"gemma2": ids("<pad>"), "phi3": ids("<|endoftext|>")}.get(name)
    gen_eos = model.generation_config.eos_token_id
    assert set(gen_eos if isinstance(gen_eos, list) else [gen_eos]) == {ids(t) for t in spec["stop"]}
    if name == "phi3":
        assert tok.pad_token_id == tok.eos_token_id
    if name == "gpt2":
        assert tok.chat_template is None
        return
    chat = [{"role": "user", "content": "What is 2+3?"}, {"role": "assistant", "content": "5"}]
    text = tok.apply_chat_template(chat, tokenize=False)
    turn_end = {"llama3": "<|eot_id|>", "gemma2": "<end_of_turn>", "phi3": "<|end|>", "qwen3": "<|im_end|>"}[name]
    assert text.count(turn_end) == 2
    conv_ids = tok.apply_chat_template(chat, tokenize=True, return_dict=True)["input_ids"]
    assert conv_ids.count(tok.bos_token_id) == (1 if name in ("llama3", "gemma2") else 0)  # BOS once, not twice
    if name == "qwen3":
        assert "<think>" in text and "</think>" in text and ids("<think>") in conv_ids
    system = [{"role": "system", "content": "Be brief."}] + chat
    if name == "gemma2":
        with pytest.raises(Exception, match="System role not supported"):
            tok.apply_chat_template(system, tokenize=False)
    else:
        assert "Be brief." in tok.apply_chat_template(system, tokenize=False)


@pytest.mark.parametrize("name", ["gpt2", "gemma2"])
def test_rows_the_family_cannot_render_are_refused(name, fam, data, tmp_path, capsys):
    """GPT-2 has no chat template (conversational rows refused); Gemma's template has no system role (a system
    turn refused): both in the check phase, exit 2, nothing written."""
    rows = data[True]["sft"] if name == "gpt2" else write_jsonl(tmp_path / "system.jsonl", [
        {"messages": [{"role": "system", "content": "Be brief."}] + r["prompt"] + r["chosen"]}
        for r in addition_pairs(2)])
    out = tmp_path / "out"
    assert run_main("--rlhf_type", "SFT", "--train_mode", "lora", "--model_name_or_path", fam(name),
                    "--train_data_path", rows, "--output_dir", out) == 2
    assert not out.exists()
    assert ("no chat template" if name == "gpt2" else "System role not supported") in capsys.readouterr().err


@pytest.mark.parametrize("name", FAMILIES)
def test_trained_token_ids_follow_the_family(name, fam, data, tmp_path):
    """The token ids the SFT, DPO and Reward trainers are built with: BOS exactly once and first where the family
    adds it (never twice: template + tokenizer), none elsewhere; the answer ends with the family's end token."""
    import main_train

    tok_end = {"llama3": "<|eot_id|>", "gemma2": "<end_of_turn>", "phi3": "<|endoftext|>", "qwen3": "<|im_end|>",
               "gpt2": "<|endoftext|>"}[name]
    files = data[name != "gpt2"]
    for rlhf_type, path, sequences in [("SFT", files["messages"], [["input_ids"]]),
                                       ("DPO", files["pref"], [["prompt_ids", "chosen_ids"]]),
                                       ("Reward", files["reward"], [["chosen_ids"], ["rejected_ids"]])]:
        argv = ["--rlhf_type", rlhf_type, "--train_mode", "lora", "--model_name_or_path", str(fam(name)),
                "--train_data_path", str(path), "--output_dir", str(tmp_path / "o"), "--max_length", "64"]
        method, common, config, tok, train, evals, needs = main_train.check_phase(argv)
        row = main_train.build_trainer(method, common, config, tok, train, evals, [], needs).train_dataset[0]
        end = tok.convert_tokens_to_ids(tok_end)
        for columns in sequences:
            ids = sum((row[c] for c in columns), [])
            if name in ("llama3", "gemma2"):
                assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1, (rlhf_type, columns)
            elif name != "gpt2":  # GPT-2's BOS is its EOS
                assert tok.bos_token_id is None or tok.bos_token_id not in ids
            assert end in ids[-3:], (rlhf_type, tok.convert_ids_to_tokens(ids))


# ---------------------------------------------------------------------------------- the method matrix
METHODS = ("sft_messages", "sft_prompt_completion", "dpo", "reward", "kto", "grpo", "ppo", "gkd")
FULL = {("llama3", "dpo"), ("gemma2", "grpo"), ("gemma2", "reward"), ("phi3", "sft_prompt_completion"),
        ("qwen3", "kto"), ("qwen3", "ppo"), ("gpt2", "gkd")}
COMMON = ["--max_steps", "2", "--save_strategy", "no", "--report_to", "none", "--gradient_checkpointing", "false",
          "--seed", "0", "--disable_tqdm", "true", "--learning_rate", "1e-3"]
MATRIX = [(f, m) for f in FAMILIES for m in METHODS]


def _argv(name, method, fam, data):
    conv = name != "gpt2"
    files = data[conv]
    short = ["--max_length", "64", "--per_device_train_batch_size", "2"]
    table = {
        "sft_messages": ("SFT", files["messages"], short),
        "sft_prompt_completion": ("SFT", files["sft"], short),
        "dpo": ("DPO", files["pref"], short),
        "reward": ("Reward", files["reward"], short),
        "kto": ("KTO", files["kto"], ["--max_length", "64", "--per_device_train_batch_size", "4"]),
        "grpo": ("GRPO", files["prompts"], ["--per_device_train_batch_size", "2", "--num_generations", "2",
                                            "--max_completion_length", "8", "--reward_funcs",
                                            f"{data['rewards']}:length_reward"]),
        "ppo": ("PPO", files["prompts"], ["--per_device_train_batch_size", "2", "--max_new_tokens", "8",
                                          "--num_ppo_epochs", "1", "--reward_funcs",
                                          f"{data['rewards']}:length_reward"]),
        "gkd": ("GKD", files["sft"], short + ["--teacher_model_name_or_path", fam(name, 48), "--lmbda", "0.5",
                                              "--max_new_tokens", "8"]),
    }
    rlhf_type, path, extra = table[method]
    mode = "full" if (name, method) in FULL else "lora"
    return rlhf_type, mode, ["--rlhf_type", rlhf_type, "--train_mode", mode, "--model_name_or_path", fam(name),
                             "--train_data_path", path, *COMMON, *extra]


@pytest.mark.parametrize("name,method", MATRIX, ids=[f"{f}-{m}" for f, m in MATRIX])
def test_method_on_family(name, method, fam, data, tmp_path):
    from peft import AutoPeftModelForCausalLM, AutoPeftModelForSequenceClassification
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    fam(name), fam(name, 48) if method == "gkd" else None  # built before the clock starts
    rlhf_type, mode, argv = _argv(name, method, fam, data)
    out = tmp_path / "out"
    start = time.perf_counter()
    rc = run_main(*argv, "--output_dir", out)
    print(f"\n[family-matrix] {name:7s} {method:22s} {mode:4s} rc={rc} {time.perf_counter() - start:6.1f} s")
    assert rc == 0
    losses = [h["loss"] for h in log_history(out) if "loss" in h]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    if rlhf_type == "Reward":
        model = (AutoModelForSequenceClassification.from_pretrained(out, num_labels=1) if mode == "full" else
                 AutoPeftModelForSequenceClassification.from_pretrained(out, num_labels=1))
    else:
        model = (AutoModelForCausalLM if mode == "full" else AutoPeftModelForCausalLM).from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok("What is 2+3? 5", return_tensors="pt")
    with torch.no_grad():
        assert torch.isfinite(model(**ids).logits).all()
    # the saved tokenizer keeps the family's conventions
    assert tok.chat_template == AutoTokenizer.from_pretrained(fam(name)).chat_template
    assert (ids["input_ids"][0, 0].item() == tok.bos_token_id) == (name in ("llama3", "gemma2"))
    if rlhf_type in ("GRPO", "PPO"):  # sampled completions are decoded without special tokens
        rows = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
        assert rows and all(isinstance(r["completion"], str) == (name == "gpt2") for r in rows)
        text = json.dumps([r["completion"] for r in rows])
        assert not any(t in text for t in SPECS[name]["special"]), text
    if mode == "full" and rlhf_type != "Reward":  # generation still stops at every end-of-turn token
        gen_eos = model.generation_config.eos_token_id
        stop = {tok.convert_tokens_to_ids(t) for t in SPECS[name]["stop"]}
        assert stop <= set(gen_eos if isinstance(gen_eos, list) else [gen_eos])


@pytest.mark.parametrize("name", FAMILIES)
def test_sampling_stops_at_every_end_of_turn_token(name, fam, data, tmp_path):
    """PPO (ours), GRPO and GKD (TRL's, built by main_train) stop a sample at each of the family's stop tokens
    (Llama-3 <|eot_id|>, Gemma <end_of_turn>, Phi-3 <|end|>: not the tokenizer's EOS alone)."""
    import main_train

    for method in ("ppo", "grpo", "gkd"):
        _, _, argv = _argv(name, method, fam, data)
        parsed = main_train.check_phase([str(a) for a in argv] + ["--output_dir", str(tmp_path / method)])
        trainer = main_train.build_trainer(*parsed[:6], [], parsed[6])
        tok = parsed[3]
        eos = trainer.generation_config.eos_token_id if method == "gkd" else trainer.eos_token_ids
        stop = {tok.convert_tokens_to_ids(t) for t in SPECS[name]["stop"]}
        assert stop <= set(eos if isinstance(eos, list) else [eos]), (method, eos)


# ---------------------------------------------------------------------------------------- reward scores
SCORES = [(f, c) for f in FAMILIES for c in ("plain", "chat") if c == "plain" or f in CHAT]


@pytest.mark.parametrize("name,style", SCORES, ids=[f"{f}-{c}" for f, c in SCORES])
def test_reward_scorer_matches_reward_trainer_tokens(name, style, fam, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from utils.model.rewards import RewardModelScorer

    rm = tmp_path / "rm"
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_pretrained(fam(name), num_labels=1).save_pretrained(rm)
    AutoTokenizer.from_pretrained(fam(name)).save_pretrained(rm)
    tok = AutoTokenizer.from_pretrained(rm)
    model = AutoModelForSequenceClassification.from_pretrained(rm).eval()
    # as TRL's RewardTrainer sets it up: pad = pad or EOS, and the config's pad id locates the scored token
    model.config.get_text_config().pad_token_id = tok.convert_tokens_to_ids(tok.pad_token or tok.eos_token)
    pairs = [("What is 2+3? ", "5"), ("Say hello ", "hello there, friend, the sum is 17"), ("Hi ", "yes")]
    if style == "chat":
        prompts = [[{"role": "user", "content": p.strip()}] for p, _ in pairs]
        completions = [[{"role": "assistant", "content": c}] for _, c in pairs]
        ids = [tok.apply_chat_template(p + c, tokenize=True, return_dict=True)["input_ids"]
               for p, c in zip(prompts, completions)]
    else:
        prompts, completions = [p for p, _ in pairs], [c for _, c in pairs]
        ids = [tok(p + c + tok.eos_token)["input_ids"] for p, c in zip(prompts, completions)]
    assert len({len(x) for x in ids}) > 1  # the batch below is padded
    with torch.no_grad():
        direct = [model(input_ids=torch.tensor([x])).logits[0, 0].item() for x in ids]
    scorer = RewardModelScorer(str(rm))
    alone = [scorer(prompts[i:i + 1], completions[i:i + 1])[0] for i in range(len(pairs))]
    assert scorer(prompts, completions) == pytest.approx(alone, abs=1e-5)  # padding changes nothing
    assert alone == pytest.approx(direct, abs=1e-5)
