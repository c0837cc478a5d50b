"""Data formats as users have them (utils/data/formats.py): every format converted to hand-written rows and trained on
for a step; implicit prompts; ranked answers to pairs; KTO from pairs; ambiguous rows refused; a field that appears
or widens after the first batch; the column-wise fast path against row by row. Sources, mixtures and the length
report: tests/test_formats_sources.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import FAST, run_main, write_jsonl
from utils.data.loading import check_rows, to_dataset
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


# ------------------------------------------------------------------------------- a field added or widened
def test_a_new_field_or_a_wider_type_after_the_first_batch(tmp_path, monkeypatch):
    monkeypatch.setattr("utils.data.arrow_sink.BATCH", 2)
    rows = [{"prompt": "p", "answer": 1}, {"prompt": "q"}, {"prompt": "r", "answer": 2.5, "id": "x"}]
    assert rows_of(write_jsonl(tmp_path / "w.jsonl", rows), "prompt") == [
        {"prompt": "p", "answer": 1.0, "id": None}, {"prompt": "q", "answer": None, "id": None},
        {"prompt": "r", "answer": 2.5, "id": "x"}]
    path = write_jsonl(tmp_path / "t.jsonl", rows + [{"prompt": "s", "answer": "7"}])
    assert error(path, "prompt").startswith(f"{path}:4: `answer` is a string here but a number in line 1")


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
