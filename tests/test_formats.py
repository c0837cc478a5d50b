"""Data as users have it (utils/data/formats.py, utils/data/sources.py, utils/data/mixture.py, utils/data/lengths.py): every format
converted to hand-written rows and trained on for a step; implicit prompts; ranked answers to pairs; KTO from
pairs; shard folders, splits and the hub cache; mixtures; the length report against a hand-counted file."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import FAST, run_main, write_jsonl
from utils.data.loading import check_rows, load_dataset_checked, to_dataset
from utils.core.errors import UserError
from utils.data.formats import DataOptions

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
U = (lambda text: {"role": "user", "content": text})
A = (lambda text: {"role": "assistant", "content": text})


def rows_of(path, kind, **options) -> list[dict]:
    return to_dataset(check_rows(str(path), kind, options=DataOptions(**options))).to_list()


def error(path, kind, **options) -> str:
    with pytest.raises(UserError) as e:
        rows_of(path, kind, **options)
    return str(e.value)


# ------------------------------------------------------------------------------- formats, row by row
def test_sharegpt_to_messages_and_prompts():
    rows = rows_of(EXAMPLES / "sharegpt.jsonl", "sft")
    assert rows[0] == {"messages": [U("What is the capital of France?"), A("Paris.")]}
    assert rows[1]["messages"] == [{"role": "system", "content": "You answer in one word."},
                                   U("What colour is the sky on a clear day?"), A("Blue.")]
    assert rows[2]["messages"] == [U("Name a prime number."), A("Seven."), U("Another one?"), A("Eleven.")]
    prompts = rows_of(EXAMPLES / "sharegpt.jsonl", "prompt")
    assert prompts[2] == {"prompt": [U("Name a prime number."), A("Seven."), U("Another one?")]}


def test_sharegpt_and_alpaca_preference():
    assert rows_of(EXAMPLES / "sharegpt_preference.jsonl", "preference")[0] == {
        "prompt": [U("What is 2+2?")], "chosen": [A("4")], "rejected": [A("5")]}
    assert rows_of(EXAMPLES / "alpaca_preference.jsonl", "preference")[1] == {
        "prompt": [U("Give the opposite of the word.\nhot")], "chosen": [A("cold")], "rejected": [A("warm")]}


def test_alpaca_with_system_and_history():
    rows = rows_of(EXAMPLES / "alpaca.jsonl", "sft")
    assert rows[0] == {"prompt": [U("Add the two numbers.\n3 and 4")], "completion": [A("7")]}
    assert rows[1]["prompt"] == [{"role": "system", "content": "You answer in one word."},
                                 U("Give the opposite of the word.\nhot")]
    assert rows[2]["prompt"] == [U("Give the opposite of: hot"), A("cold"), U("And of this one?\nup")]
    assert rows_of(EXAMPLES / "alpaca.jsonl", "prompt")[0] == {"prompt": [U("Add the two numbers.\n3 and 4")],
                                                                "output": "7"}


def test_messages_as_prompts_keep_other_columns():
    rows = rows_of(EXAMPLES / "messages_prompts.jsonl", "prompt")
    assert rows == [{"prompt": [U("What is 3+4?")], "answer": "7"}, {"prompt": [U("What is 10-6?")], "answer": "4"}]


def test_implicit_prompt_plain_and_conversational(tmp_path):
    assert rows_of(EXAMPLES / "hh_implicit.jsonl", "preference")[0] == {
        "prompt": "\n\nHuman: What is 6 times 7?\n\nAssistant:", "chosen": " 42", "rejected": " 36"}
    assert rows_of(EXAMPLES / "ultrafeedback_implicit.jsonl", "preference")[1] == {
        "prompt": [U("Is the sun a star?")], "chosen": [A("Yes, the nearest one.")], "rejected": [A("No, it is a planet.")]}
    chat = [{"chosen": [U("Hi"), A("Hello")], "rejected": [U("Hi"), A("Go away")]}]
    assert rows_of(write_jsonl(tmp_path / "c.jsonl", chat), "preference") == [
        {"prompt": [U("Hi")], "chosen": [A("Hello")], "rejected": [A("Go away")]}]
    # a reward model takes whole conversations as they are: no extraction
    assert rows_of(write_jsonl(tmp_path / "c.jsonl", chat), "reward") == chat


def test_implicit_prompt_refusals_name_the_line(tmp_path):
    good = {"chosen": "Q: hi A: yes", "rejected": "Q: hi A: no"}
    path = write_jsonl(tmp_path / "p.jsonl", [good, {"chosen": "Yes indeed", "rejected": "No way"}])
    assert error(path, "preference").startswith(f"{path}:2: `chosen` and `rejected` share no prompt")
    path = write_jsonl(tmp_path / "p.jsonl", [good, {"chosen": "same", "rejected": "same"}])
    assert f"{path}:2: `chosen` and `rejected` are identical" in error(path, "preference")
    diverge = {"chosen": [U("Hi"), A("Hello"), U("Bye"), A("See you")], "rejected": [U("Hi"), A("Hello"), U("Later"),
                                                                                   A("Ok")]}
    path = write_jsonl(tmp_path / "p.jsonl", [diverge])
    assert f"{path}:1: `chosen` and `rejected` first differ at message 3, after a 'assistant' turn" in error(
        path, "preference")
    wrong = {"prompt": "Something else?", "chosen": [U("Hi"), A("Hello")], "rejected": [U("Hi"), A("Go")]}
    path = write_jsonl(tmp_path / "p.jsonl", [wrong])
    assert f"{path}:1: the `prompt` string is not the last user turn" in error(path, "preference")


def test_ranked_pairs_modes_ties_and_gap(tmp_path):
    row = {"prompt": "P", "responses": ["a", "b", "c", "d"], "scores": [3, 1, 3, 2], "id": 7}
    path = write_jsonl(tmp_path / "r.jsonl", [row, {"prompt": "Q", "responses": ["x", "y"], "scores": [1, 1]}])
    pairs = lambda **o: [(r["chosen"], r["rejected"]) for r in rows_of(path, "preference", **o)]  # noqa: E731
    # order by score, ties kept in file order: a(3) c(3) d(2) b(1); the all-tied row gives nothing
    assert pairs() == [("a", "b")]
    assert pairs(pairs="adjacent") == [("c", "d"), ("d", "b")]  # a-c is a tie
    assert pairs(pairs="all") == [("a", "d"), ("a", "b"), ("c", "d"), ("c", "b"), ("d", "b")]
    assert pairs(pairs="all", min_score_gap=2) == [("a", "b"), ("c", "b")]
    assert rows_of(path, "preference")[0] == {"prompt": "P", "chosen": "a", "rejected": "b", "id": 7}
    ranks = write_jsonl(tmp_path / "k.jsonl", [{"prompt": "P", "responses": ["w", "x", "y"], "ranks": [2, 3, 1]}])
    assert [(r["chosen"], r["rejected"]) for r in rows_of(ranks, "preference", pairs="all")] == [
        ("y", "w"), ("y", "x"), ("w", "x")]
    assert "the settings drop every row" in error(path, "preference", min_score_gap=5)
    bad = write_jsonl(tmp_path / "b.jsonl", [{"prompt": "P", "responses": ["a", "b"], "scores": [1]}])
    assert f"{bad}:1: `scores` is not a list of 2 numbers" in error(bad, "preference")


def test_kto_from_pairs_and_ranked():
    rows = rows_of(EXAMPLES / "hh_implicit.jsonl", "kto")
    prompt = "\n\nHuman: What is 6 times 7?\n\nAssistant:"
    assert {"prompt": prompt, "completion": " 42", "label": True} in rows
    assert {"prompt": prompt, "completion": " 36", "label": False} in rows
    assert len(rows) == 4 and sum(r["label"] for r in rows) == 2
    ranked = rows_of(EXAMPLES / "ranked.jsonl", "kto")
    assert len(ranked) == 6 and {"prompt": "Is ice cold?", "completion": "no", "label": False} in ranked


def test_ambiguous_rows_are_refused_with_both_readings(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"messages": [U("a"), A("b")], "conversations": [
        {"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]}])
    msg = error(path, "sft")
    assert f"{path}:1: the row can be read two ways" in msg and "ShareGPT" in msg and "our fields" in msg
    path = write_jsonl(tmp_path / "b.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b", "responses": ["a", "b"],
                                                "scores": [1, 0]}])
    assert "ranked answers" in error(path, "preference") and "prompt/chosen/rejected" in error(path, "preference")
    path = write_jsonl(tmp_path / "c.jsonl", [{"conversations": [{"from": "human", "value": "a"}, {"from": "gpt",
                                                                                                   "value": "b"}]},
                                               {"instruction": "x", "output": "y"}])
    assert f"{path}:2: this row reads as Alpaca" in error(path, "sft")
    path = write_jsonl(tmp_path / "d.jsonl", [{"conversations": [{"from": "robot", "value": "a"}]}])
    assert f"{path}:1: `conversations` message 1 is from 'robot'" in error(path, "sft")


# ------------------------------------------------------------------------------------------- sources
def test_shard_folders_and_splits(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pair = lambda i: {"prompt": f"p{i}", "chosen": "a", "rejected": "b"}  # noqa: E731
    hub = tmp_path / "hub" / "data"
    hub.mkdir(parents=True)
    for k in range(3):
        pq.write_table(pa.Table.from_pylist([pair(10 * k + i) for i in range(4)]), hub / f"train-0000{k}-of-00003.parquet")
    pq.write_table(pa.Table.from_pylist([pair(99), {"prompt": "p", "chosen": "a"}]), hub / "test-00000-of-00001.parquet")
    assert len(rows_of(tmp_path / "hub", "preference")) == 12
    msg = error(tmp_path / "hub", "preference", split="test")  # the test split has a bad second row
    assert msg.startswith(f"{hub / 'test-00000-of-00001.parquet'}:row 2: `rejected` is null")
    assert "has no split 'dev'" in error(tmp_path / "hub", "preference", split="dev")
    shards = tmp_path / "shards"
    shards.mkdir()
    for k in range(2):
        write_jsonl(shards / f"part-{k}.jsonl", [pair(k), pair(k + 10)])
    assert [r["prompt"] for r in rows_of(shards, "preference")] == ["p0", "p10", "p1", "p11"]
    write_jsonl(shards / "part-2.jsonl", [pair(0), {"prompt": "x"}])
    assert error(shards, "preference").startswith(f"{shards / 'part-2.jsonl'}:2: missing field")
    (tmp_path / "only").mkdir()
    write_jsonl(tmp_path / "only" / "validation.jsonl", [pair(1)])
    assert "none is named train" in error(tmp_path / "only", "preference")


def test_hub_id_from_the_local_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    repo = tmp_path / "cache" / "datasets--someone--tiny-prefs"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123" / "data").mkdir(parents=True)
    write_jsonl(repo / "snapshots" / "abc123" / "data" / "train.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}])
    rows = check_rows("someone/tiny-prefs", "preference")
    assert len(rows) == 1 and "from the Hugging Face cache" in rows.summary[0]
    with pytest.raises(UserError, match="someone/missing: --train_data_path is neither a local path nor a dataset in"):
        check_rows("someone/missing", "preference")


def test_mixture_proportions_and_repetition(tmp_path, capsys):
    a = write_jsonl(tmp_path / "a.jsonl", [{"prompt": f"a{i}", "chosen": "x", "rejected": "y"} for i in range(2000)])
    b = write_jsonl(tmp_path / "b.jsonl", [{"prompt": f"b{i}", "chosen": "x", "rejected": "y"} for i in range(8000)])
    options = DataOptions(weights=[0.7, 0.3])
    ds = load_dataset_checked([str(a), str(b)], "preference", options=options, seed=1)
    prompts = ds["prompt"]
    share_a = sum(p.startswith("a") for p in prompts) / len(prompts)
    assert len(prompts) == 10_000 and abs(share_a - 0.7) < 0.01
    assert len(set(p for p in prompts if p.startswith("b"))) == sum(p.startswith("b") for p in prompts)  # no repeat
    out = capsys.readouterr().out
    assert f"{a}: weight 0.7 = 70% of the 10,000-row mixture: 7,000 rows from its 2,000, so its rows repeat" in out
    again = load_dataset_checked([str(a), str(b)], "preference", options=options, seed=1)["prompt"]
    other = load_dataset_checked([str(a), str(b)], "preference", options=options, seed=2)["prompt"]
    assert again == prompts and other != prompts
    with pytest.raises(UserError, match="--data_weights has 1 values for 2"):
        check_rows([str(a), str(b)], "preference", options=DataOptions(weights=[1.0]))


def test_a_new_field_or_a_wider_type_after_the_first_batch(tmp_path, monkeypatch):
    monkeypatch.setattr("utils.data.arrow_sink.BATCH", 2)
    rows = [{"prompt": "p", "answer": 1}, {"prompt": "q"}, {"prompt": "r", "answer": 2.5, "id": "x"}]
    assert rows_of(write_jsonl(tmp_path / "w.jsonl", rows), "prompt") == [
        {"prompt": "p", "answer": 1.0, "id": None}, {"prompt": "q", "answer": None, "id": None},
        {"prompt": "r", "answer": 2.5, "id": "x"}]
    path = write_jsonl(tmp_path / "t.jsonl", rows + [{"prompt": "s", "answer": "7"}])
    assert error(path, "prompt").startswith(f"{path}:4: `answer` is a string here but a number in line 1")


# ------------------------------------------------------------------------------------- length report
@pytest.fixture(scope="module")
def word_tokenizer():
    """One token per word, BOS added when encoding: lengths can be counted by hand."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = ["<unk>", "<s>", "</s>", "<pad>"] + [f"w{i}" for i in range(20)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>")


def test_length_report_matches_a_hand_count(tmp_path, word_tokenizer):
    from utils.data.lengths import check_and_report, measure, report

    w = lambda n: " ".join(["w1"] * n)  # noqa: E731
    # prompt words / chosen words / rejected words -> tokens: prompt +1 (BOS), answers +1 (EOS)
    spec = [(3, 2, 1), (5, 4, 6), (1, 1, 1), (9, 2, 3)]
    rows = check_rows(str(write_jsonl(tmp_path / "l.jsonl", [{"prompt": w(p), "chosen": w(c), "rejected": w(r)}
                                                              for p, c, r in spec])), "preference")
    measure(rows, word_tokenizer)
    assert rows.lengths.prompt.tolist() == [4, 6, 2, 10] and rows.lengths.second.tolist() == [2, 7, 2, 4]
    rep = report(rows.lengths, None, SimpleNamespace(max_length=8), "prompt_fills")
    # whole = prompt + longest answer = 7, 13, 4, 14; row 4's prompt (10) fills 8: dropped; row 2 truncated
    assert rep["tokens"]["prompt"] == {"median": 4, "p95": 10, "max": 10}
    assert rep["tokens"]["chosen"] == {"median": 3, "p95": 5, "max": 5}
    assert rep["tokens"]["prompt + answer"] == {"median": 7, "p95": 14, "max": 14}
    assert rep["limits"]["max_length"] == {"value": 8, "truncated": 1, "dropped": 1}
    assert rep["suggested_max_length"] == 14
    reward = report(rows.lengths, None, SimpleNamespace(max_length=8), "too_long")  # RewardTrainer drops whole rows
    assert reward["limits"]["max_length"] == {"value": 8, "truncated": 0, "dropped": 2}
    with pytest.raises(UserError) as e:
        check_and_report(rows, SimpleNamespace(max_length=2), "prompt_fills")
    assert "--max_length 2 leaves no training row" in str(e.value) and "drops 4" in str(e.value)


def test_data_report_written_and_every_row_dropped_refused(tiny_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_main("--rlhf_type", "DPO", "--model_name_or_path", tiny_dir, "--train_data_path",
                    EXAMPLES / "hh_implicit.jsonl", "--output_dir", out, *FAST, "--max_steps", "1") == 0
    report = json.loads((out / "data_report.json").read_text())
    assert report["rows"] == 2 and report["limits"]["max_length"]["value"] == 64
    assert "suggested --max_length" in capsys.readouterr().out
    refused = tmp_path / "refused"
    assert run_main("--rlhf_type", "DPO", "--model_name_or_path", tiny_dir, "--train_data_path",
                    EXAMPLES / "hh_implicit.jsonl", "--output_dir", refused, *FAST, "--max_length", "3") == 2
    assert "leaves no training row" in capsys.readouterr().err and not refused.exists()


# ----------------------------------------------------------------------------- a step on every format
RUNS = {
    "sharegpt SFT": ("SFT", "sharegpt.jsonl", []),
    "alpaca SFT": ("SFT", "alpaca.jsonl", []),
    "sharegpt preference DPO": ("DPO", "sharegpt_preference.jsonl", []),
    "alpaca preference DPO": ("DPO", "alpaca_preference.jsonl", []),
    "ultrafeedback DPO": ("DPO", "ultrafeedback_implicit.jsonl", []),
    "ranked Reward": ("Reward", "ranked.jsonl", []),
    "pairs KTO": ("KTO", "hh_implicit.jsonl", []),
    "sharegpt GRPO": ("GRPO", "sharegpt.jsonl", ["--reward_funcs", "examples/rewards.py:target_length",
                                                 "--num_generations", "2", "--max_completion_length", "4"]),
    "messages GRPO": ("GRPO", "messages_prompts.jsonl", ["--reward_funcs", "examples/rewards.py:correct_answer",
                                                         "--num_generations", "2", "--max_completion_length", "4"]),
}


@pytest.mark.parametrize("case", RUNS)
def test_one_step_on_each_format(case, tiny_dir, tmp_path):
    method, name, extra = RUNS[case]
    out = tmp_path / "out"
    fast = FAST if method != "GRPO" else [a for a in FAST if a not in ("--max_length", "64")]  # GRPO has no max_length
    argv = ["--rlhf_type", method, "--model_name_or_path", tiny_dir, "--train_data_path", EXAMPLES / name,
            "--output_dir", out, *fast, "--max_steps", "1", "--per_device_train_batch_size", "2", *extra]
    assert run_main(*argv) == 0
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert any("loss" in h for h in history)


# ------------------------------------------------------------------------------ the column-wise fast path
def test_fast_path_equals_row_by_row_and_defers_to_it(tmp_path, monkeypatch):
    import utils.data.fast_json

    monkeypatch.setattr(utils.data.fast_json, "MIN_BYTES", 0)  # small files go row by row otherwise
    pairs = [{"prompt": f"p{i}", "chosen": "a", "rejected": "b", "id": i} for i in range(3000)]
    path = write_jsonl(tmp_path / "f.jsonl", pairs)
    calls = []
    read = utils.data.fast_json.read
    monkeypatch.setattr(utils.data.fast_json, "read", lambda *a: calls.append(read(*a)) or calls[-1])
    fast = check_rows(str(path), "preference")
    assert calls == [3000] and fast.where(2999) == f"{path}:3000"
    monkeypatch.setattr(utils.data.fast_json, "eligible", lambda real: False)
    assert to_dataset(fast).to_list() == to_dataset(check_rows(str(path), "preference")).to_list() == pairs
    monkeypatch.setattr(utils.data.fast_json, "eligible", lambda real: True)
    # each doubt sends the file row by row, which names the line
    for n, bad in ((2500, {"prompt": "p", "chosen": "  ", "rejected": "b"}), (1800, {"prompt": "p", "chosen": "a"}),
                   (2999, {"prompt": "p", "chosen": 3, "rejected": "b"})):
        write_jsonl(path, pairs[:n - 1] + [bad] + pairs[n:])
        assert error(path, "preference").startswith(f"{path}:{n}: ")
    write_jsonl(path, pairs[:5] + [{**pairs[5], "id": "six"}] + pairs[6:])
    assert error(path, "preference").startswith(f"{path}:6: `id` is a string here but a number in line 1")
    write_jsonl(tmp_path / "g.jsonl", pairs)
    text = (tmp_path / "g.jsonl").read_text().split("\n")
    (tmp_path / "g.jsonl").write_text("\n".join(text[:2] + [""] + text[2:]))
    rows = check_rows(str(tmp_path / "g.jsonl"), "preference")
    assert len(rows) == 3000 and rows.where(2) == f"{tmp_path / 'g.jsonl'}:4"
