"""utils.data.loading: every bad input gets one `FILE:LINE: what; expected ...` paragraph; every good format loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from utils.data.loading import load_dataset_checked
from utils.data.schemas import DATA_KIND_HELP, SCHEMAS, is_conversational_row
from utils.core.errors import UserError

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
U = lambda c: {"role": "user", "content": c}  # noqa: E731
A = lambda c: {"role": "assistant", "content": c}  # noqa: E731
S = lambda c: {"role": "system", "content": c}  # noqa: E731
GOOD_DPO = {"prompt": [U("Hi?")], "chosen": [A("Hello!")], "rejected": [A("Go away.")]}


@pytest.fixture(scope="module")
def tok():
    from utils.toy.tiny_model import build_tokenizer

    return build_tokenizer()


@pytest.fixture(scope="module")
def tok_no_template():
    from utils.toy.tiny_model import build_tokenizer

    return build_tokenizer(chat_template=False)


def write(path: Path, lines) -> Path:
    """Write rows (dicts become JSON, strings are written verbatim) one per line."""
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def error(path: Path, kind: str, tokenizer=None, what: str = "train_data_path") -> str:
    with pytest.raises(UserError) as e:
        load_dataset_checked(str(path), kind, tokenizer, what=what)
    msg = str(e.value)
    assert "\n" not in msg, msg  # one paragraph
    assert msg.startswith(str(path)), msg
    return msg


def bad(tmp_path, kind, rows, *needles, name="data.jsonl", **kw) -> str:
    msg = error(write(tmp_path / name, rows), kind, **kw)
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"
    return msg


# ------------------------------------------------------------------------------------ good inputs
@pytest.mark.parametrize("name,kind,conversational", [
    ("dpo_conversational.jsonl", "preference", True),
    ("dpo_plain.jsonl", "preference", False),
    ("kto.jsonl", "kto", True),
    ("reward_conversational.jsonl", "reward", True),
    ("reward_plain.jsonl", "reward", False),
    ("sft_prompt_completion.jsonl", "sft", True),
    ("sft_messages.jsonl", "sft", True),
    ("prompts.jsonl", "prompt", True),
])
def test_examples_load(name, kind, conversational, tok):
    ds = load_dataset_checked(str(EXAMPLES / name), kind, tok)
    assert 3 <= len(ds) <= 6
    assert is_conversational_row(ds[0]) == conversational
    assert any(set(v) <= set(ds.column_names) for v in SCHEMAS[kind])


def test_examples_readme_lists_every_file():
    readme = (EXAMPLES / "README.md").read_text()
    for f in EXAMPLES.glob("*.jsonl"):
        assert f.name in readme


def test_blank_lines_skipped_and_counted(tmp_path):
    path = write(tmp_path / "d.jsonl", ["", GOOD_DPO, "   ", GOOD_DPO, ""])
    assert len(load_dataset_checked(str(path), "preference")) == 2
    write(path, [GOOD_DPO, "", "", {"prompt": "x", "chosen": "y"}])
    assert error(path, "preference").startswith(f"{path}:4: missing field `rejected`")


def test_json_list_loads(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([GOOD_DPO, GOOD_DPO, GOOD_DPO], indent=2))
    assert len(load_dataset_checked(str(path), "preference")) == 3


def test_json_extension_with_json_lines(tmp_path):
    path = write(tmp_path / "d.json", [GOOD_DPO, GOOD_DPO])
    assert len(load_dataset_checked(str(path), "preference")) == 2


def test_parquet_loads(tmp_path):
    from datasets import Dataset

    path = tmp_path / "d.parquet"
    Dataset.from_list([{"prompt": "What is 3+4?", "answer": "7"}] * 3).to_parquet(str(path))
    ds = load_dataset_checked(str(path), "prompt")
    assert len(ds) == 3 and ds[0]["answer"] == "7"


def test_save_to_disk_dir_and_dataset_dict_load(tmp_path):
    from datasets import Dataset, DatasetDict

    ds = Dataset.from_list([GOOD_DPO] * 4)
    ds.save_to_disk(str(tmp_path / "plain_ds"))
    assert len(load_dataset_checked(str(tmp_path / "plain_ds"), "preference")) == 4
    DatasetDict(train=ds, test=ds.select([0])).save_to_disk(str(tmp_path / "dict_ds"))
    assert len(load_dataset_checked(str(tmp_path / "dict_ds"), "preference")) == 4


def test_extra_columns_kept_even_if_only_in_later_rows(tmp_path):
    path = write(tmp_path / "d.jsonl", [{"prompt": "What is 3+4?", "answer": "7"},
                                        {"prompt": "What is 1+1?", "answer": "2", "source": "quiz"}])
    ds = load_dataset_checked(str(path), "prompt")
    assert ds.column_names == ["prompt", "answer", "source"]
    assert ds["answer"] == ["7", "2"] and ds["source"] == [None, "quiz"]


def test_other_variants_load(tmp_path, tok):
    cases = [("reward", {"prompt": [U("Hi?")], "chosen": [A("Hello!")], "rejected": [A("No.")]}),
             ("sft", {"text": "Once upon a time there was a cat."}), ("sft", {"prompt": "2+2=", "completion": "4"}),
             ("prompt", {"prompt": [S("Be brief."), U("Hi"), A("Hello"), U("Bye?")]})]
    for i, (kind, row) in enumerate(cases):
        assert len(load_dataset_checked(str(write(tmp_path / f"{i}.jsonl", [row])), kind, tok)) == 1
    # a tool call (empty content) on a ChatML template that renders content only: refused, not silently dropped
    tool = {"prompt": [U("Weather in Paris?"), {"role": "assistant", "content": "", "tool_calls": [{"name": "w"}]},
                       {"role": "tool", "content": "sunny"}], "completion": [A("It is sunny in Paris.")]}
    with pytest.raises(UserError, match=r"tool\.jsonl:1: the chat template of .* drops the tool call of message 2"):
        load_dataset_checked(str(write(tmp_path / "tool.jsonl", [tool])), "sft", tok)


def test_is_conversational_row_and_help():
    assert is_conversational_row(GOOD_DPO)
    assert not is_conversational_row({"prompt": "a", "chosen": "b", "rejected": "c"})
    assert set(DATA_KIND_HELP) == set(SCHEMAS) == {"preference", "reward", "kto", "sft", "prompt"}


# ------------------------------------------------------------------------------- file-level errors
def test_nonexistent_path(tmp_path):
    msg = error(tmp_path / "nope.jsonl", "preference")
    assert "nope.jsonl" in msg and "--train_data_path" in msg and "does not exist" in msg


def test_unknown_extension(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("prompt,chosen,rejected\n")
    msg = error(path, "preference", what="eval_data_path")
    assert "--eval_data_path" in msg and "'.csv'" in msg and ".jsonl" in msg


@pytest.mark.parametrize("content,name", [("", "e.jsonl"), ("\n\n  \n", "e.jsonl"), ("[]", "e.json"), ("", "e.json")])
def test_empty_file(tmp_path, content, name):
    path = tmp_path / name
    path.write_text(content)
    msg = error(path, "sft")
    assert "--train_data_path" in msg and ("empty" in msg or "no rows" in msg)


def test_directory_not_a_saved_dataset(tmp_path):
    (tmp_path / "d").mkdir()
    assert "save_to_disk" in error(tmp_path / "d", "sft")


# -------------------------------------------------------------------------------- row-level errors
def test_malformed_json_line(tmp_path):
    bad(tmp_path, "preference", [GOOD_DPO, "", '{"prompt": "a", "chosen": "b" "rejected": "c"}'],
              ":3: malformed JSON", "column")


def test_malformed_json_list(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('[\n {"prompt": "a"},\n {"prompt": "b",}\n]')
    assert error(path, "prompt").startswith(f"{path}:3: malformed JSON")


def test_row_not_an_object(tmp_path):
    bad(tmp_path, "prompt", [{"prompt": "a"}, '["a", "b"]'], ":2: the row is a list, not a JSON object")


def test_missing_field(tmp_path):
    msg = bad(tmp_path, "preference", [GOOD_DPO, {"prompt": "a", "chosen": "b"}], ":2: missing field `rejected`")
    assert "did you mean" not in msg and "expected" in msg


def test_misspelled_field(tmp_path):
    bad(tmp_path, "preference", [{"prompt": "a", "choosen": "b", "rejected": "c"}],
        ":1: missing field `chosen`", "found `choosen`: did you mean `chosen`?")


def test_misspelled_field_no_overlap(tmp_path):
    bad(tmp_path, "sft", [{"message": [U("hi"), A("hello")]}], ":1:", "did you mean `messages`?")


def test_misspelled_message_key(tmp_path):
    bad(tmp_path, "prompt", [{"prompt": [{"role": "user", "contents": "hi"}]}],
        ":1: `prompt` message 1 has no `content`", "did you mean `content`?")


def test_null_field(tmp_path):
    bad(tmp_path, "kto", [{"prompt": "a", "completion": None, "label": True}], ":1: `completion` is null")


def test_wrong_role_order(tmp_path):
    bad(tmp_path, "prompt", [{"prompt": [U("a")]}, {"prompt": [U("a"), U("b")]}],
        ":2: `prompt` message 2 has role 'user' after a 'user' message", "alternates")


def test_system_not_first(tmp_path):
    bad(tmp_path, "sft", [{"messages": [U("a"), S("be nice"), A("b")]}], ":1: `messages` message 2 is a system")


def test_unknown_role(tmp_path):
    bad(tmp_path, "prompt", [{"prompt": [{"role": "human", "content": "a"}]}], ":1:", "'human'", "user")


def test_prompt_not_ending_in_user(tmp_path):
    bad(tmp_path, "preference", [GOOD_DPO, GOOD_DPO, dict(GOOD_DPO, prompt=[U("a"), A("b")])],
        ":3: `prompt` ends with an assistant message", "ends with a user")


def test_completion_not_assistant(tmp_path):
    bad(tmp_path, "preference", [dict(GOOD_DPO, chosen=[U("a")])], ":1: `chosen` message 1 has role 'user'")


def test_reward_whole_conversation_must_end_with_assistant(tmp_path):
    bad(tmp_path, "reward", [{"chosen": [U("a"), A("b")], "rejected": [U("a")]}],
        ":1: `rejected` ends with a user message")


def test_empty_completion_string(tmp_path):
    bad(tmp_path, "sft", [{"prompt": "a", "completion": "x"}, {"prompt": "a", "completion": ""}],
        ":2: `completion` is an empty string")


def test_empty_completion_conversational(tmp_path):
    bad(tmp_path, "kto", [{"prompt": [U("a")], "completion": [A("  ")], "label": False}],
        ":1: `completion` message 1 is an assistant message with empty content")


@pytest.mark.parametrize("label", [1, "true"])
def test_label_not_boolean(tmp_path, label):
    bad(tmp_path, "kto", [{"prompt": "a", "completion": "b", "label": True},
                          {"prompt": "a", "completion": "b", "label": label}],
        f":2: `label` is a {'number' if label == 1 else 'string'} {json.dumps(label)}", "JSON boolean")


def test_mixed_styles_within_row(tmp_path):
    bad(tmp_path, "preference", [dict(GOOD_DPO, rejected="no")],
        ":1: `prompt`, `chosen` are conversations but `rejected` is a plain string")


def test_mixed_styles_across_rows(tmp_path):
    bad(tmp_path, "preference", [GOOD_DPO, "", {"prompt": "a", "chosen": "b", "rejected": "c"}],
        ":3: this row is plain strings but line 1 is conversational")


def test_mixed_sft_variants_across_rows(tmp_path):
    bad(tmp_path, "sft", [{"messages": [U("a"), A("b")]}, {"prompt": [U("a")], "completion": [A("b")]}],
        ":2: this row has `prompt`, `completion` but line 1 has `messages`")


def test_sft_two_variants_in_one_row(tmp_path):
    bad(tmp_path, "sft", [{"messages": [U("a"), A("b")], "text": "a b"}], ":1: the row has both `messages` and `text`")


def test_extra_column_changes_type(tmp_path):
    bad(tmp_path, "prompt", [{"prompt": "a", "answer": "7"}, {"prompt": "b", "answer": 7}],
        ":2: `answer` is a number here but a string in line 1")


def test_conversational_without_chat_template(tmp_path, tok_no_template):
    path = write(tmp_path / "d.jsonl", [GOOD_DPO])
    msg = error(path, "preference", tok_no_template)
    assert "conversational" in msg and "no chat template" in msg and "plain-string" in msg
    # plain rows need no template
    write(path, [{"prompt": "a", "chosen": "b", "rejected": "c"}])
    assert len(load_dataset_checked(str(path), "preference", tok_no_template)) == 1


def test_json_list_errors_name_the_record(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"prompt": "a"}, {"prompt": "b"}, {"promt": "c"}]))
    assert error(path, "prompt").startswith(f"{path}:record 3: missing field `prompt`")


def test_parquet_errors_name_the_row(tmp_path):
    from datasets import Dataset

    path = tmp_path / "d.parquet"
    Dataset.from_list([{"prompt": "a", "completion": "b"}, {"prompt": "a", "completion": " "}]).to_parquet(str(path))
    assert error(path, "sft").startswith(f"{path}:row 2: `completion` is an empty string")
