"""Where rows come from and what is made of them (utils/data/sources.py, utils/data/mixture.py,
utils/data/lengths.py): shard folders, splits and the hub cache; mixtures; the length report against a hand-counted
file. Formats: tests/test_formats.py."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from conftest import FAST, run_main, write_jsonl
from utils.data.loading import check_rows, load_dataset_checked
from utils.core.errors import UserError
from utils.data.formats import DataOptions

from test_formats import EXAMPLES, error, rows_of  # the helpers of both halves


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
