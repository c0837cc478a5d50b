"""Tool-use rows (utils/data/tool_rows.py): assistant `tool_calls`, `tool` turns and tool schemas (a `tools` field
or --tools), rendered by the model's own chat template, trained only on the assistant's turns; ShareGPT
function_call / observation converted; a template that drops tools refused at FILE:LINE before any weights load."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli, run_main, write_jsonl

ADD = {"type": "function", "function": {"name": "add", "description": "Add two integers.", "parameters": {
    "type": "object", "properties": {"a": {"type": "integer", "description": "first"},
                                     "b": {"type": "integer", "description": "second"}}, "required": ["a", "b"]}}}
NEG = {"type": "function", "function": {"name": "neg", "description": "Negate an integer.", "parameters": {
    "type": "object", "properties": {"x": {"type": "integer", "description": "the integer"}}, "required": ["x"]}}}


def _add_row(a, b, arguments_as_text=False):
    args = {"a": a, "b": b}
    return {"tools": [ADD, NEG], "messages": [
        {"role": "user", "content": f"What is {a} plus {b}?"},
        {"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": {
            "name": "add", "arguments": json.dumps(args) if arguments_as_text else args}}]},
        {"role": "tool", "name": "add", "content": f"SUM{a + b}"},
        {"role": "assistant", "content": f"It is {a + b}."}]}


def _neg_row(x):  # another tool with other arguments: Arrow would give both rows the union of the arguments
    return {"tools": [ADD, NEG], "messages": [
        {"role": "user", "content": f"What is minus {x}?"},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "neg", "arguments": {"x": x}}}]},
        {"role": "tool", "content": f"NEG{-x}"},
        {"role": "assistant", "content": f"It is {-x}."}]}


def _rows():
    return [_add_row(12, 7), _neg_row(5), _add_row(30, 4, arguments_as_text=True), _neg_row(9)]


@pytest.fixture(scope="module")
def families(tmp_path_factory):
    """qwen3 (TRL masks its template through its training copy) and llama3 with Llama-3.1's template (tools, no
    generation markers, no TRL copy: our masks)."""
    from transformers import AutoTokenizer

    from utils.toy.families import chat_template, make_family

    root = tmp_path_factory.mktemp("tool_families")
    qwen3 = make_family("qwen3", str(root / "qwen3"))
    llama = make_family("llama3", str(root / "llama31"))
    tok = AutoTokenizer.from_pretrained(llama)
    tok.chat_template = chat_template("llama3_1")
    tok.save_pretrained(llama)
    plain = make_family("llama3", str(root / "llama3"))  # the plain Llama-3 template: reads content only
    return {"qwen3": qwen3, "llama31": llama, "llama3": plain}


def _trl_dataset(model_dir, data_path, tmp_path):
    """SFT's training dataset as TRL builds it from ours: (tokenizer, rows with input_ids and the trained mask)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from utils.data.formats import DataOptions
    from utils.data.loading import prepare

    tok = AutoTokenizer.from_pretrained(model_dir)
    _, dataset = prepare(str(data_path), "sft", tok, "train_data_path", DataOptions(), assistant_only_loss=None)
    config = SFTConfig(output_dir=str(tmp_path / "out"), report_to="none", use_cpu=True, bf16=False, max_length=4096,
                       assistant_only_loss="assistant_masks" not in dataset.column_names)  # as rlhf_args/sft.check
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir), args=config, train_dataset=dataset,
                         processing_class=tok)
    out = []
    for row in trainer.train_dataset:
        trained = [t != -100 for t in row["labels"]]  # from TRL's masks or ours
        out.append((row["input_ids"], trained))
    return tok, out


@pytest.mark.parametrize("family", ["qwen3", "llama31"])
def test_loss_only_on_assistant_turns_and_rendering_is_the_templates(families, family, tmp_path):
    data = write_jsonl(tmp_path / "tools.jsonl", _rows())
    tok, rows = _trl_dataset(families[family], data, tmp_path)
    assert len(rows) == 4
    from trl.chat_template_utils import get_training_chat_template

    template = tok.chat_template if family == "llama31" else get_training_chat_template(tok)
    for raw, (ids, trained) in zip(_rows(), rows):
        messages = json.loads(json.dumps(raw["messages"]))
        for m in messages:  # what the template is given: arguments as objects, null content as ""
            for call in m.get("tool_calls") or []:
                args = call["function"]["arguments"]
                call["function"]["arguments"] = json.loads(args) if isinstance(args, str) else args
                call.setdefault("type", "function")
            m["content"] = m["content"] or ""
        expected = tok.apply_chat_template(messages, tools=raw["tools"], chat_template=template, tokenize=False)
        text = tok.decode(ids)
        assert text == expected  # the template's own rendering, tool schemas and arguments as written
        kept = tok.decode([i for i, t in zip(ids, trained) if t])
        tool_result = raw["messages"][2]["content"]
        assert tool_result in text and tool_result not in kept  # the tool's output is read, never trained on
        assert "What is" not in kept and '"description"' not in kept  # neither the user's turn nor the schemas
        call = raw["messages"][1]["tool_calls"][0]["function"]
        assert call["name"] in kept and raw["messages"][3]["content"] in kept  # the call and the answer are
        if call["name"] == "neg":  # no argument of the other tool was added (Arrow's union of struct fields)
            assert '"a"' not in text.split("What is minus")[1] and "null" not in text


def test_sharegpt_function_call_and_observation(families, tmp_path):
    """LLaMA-Factory's ShareGPT tool rows (function_call / observation turns, flat schemas as a JSON string) read as
    the OpenAI rows they mean."""
    flat = [ADD["function"], NEG["function"]]
    sharegpt = [{"tools": json.dumps(flat), "conversations": [
        {"from": "human", "value": "What is 12 plus 7?"},
        {"from": "function_call", "value": json.dumps({"name": "add", "arguments": {"a": 12, "b": 7}})},
        {"from": "observation", "value": "SUM19"},
        {"from": "gpt", "value": "It is 19."}]}]
    ours = [_add_row(12, 7)]
    ours[0]["tools"] = [ADD, NEG]
    a = _trl_dataset(families["qwen3"], write_jsonl(tmp_path / "sharegpt.jsonl", sharegpt), tmp_path)[1]
    b = _trl_dataset(families["qwen3"], write_jsonl(tmp_path / "ours.jsonl", ours), tmp_path)[1]
    assert a == b


def test_tools_flag_gives_rows_their_schemas(families, tmp_path):
    """--tools module:function: every row without a `tools` field is rendered with the function's schema."""
    rows = [{k: v for k, v in _add_row(a, 3).items() if k != "tools"} for a in range(8)]
    data = write_jsonl(tmp_path / "no_tools.jsonl", rows)
    out = tmp_path / "sft"
    run_cli("--rlhf_type", "SFT", "--train_mode", "lora", "--model_name_or_path", families["qwen3"],
            "--train_data_path", data, "--tools", "utils.toy.tool_task:add", "--output_dir", out, "--max_steps", "1",
            "--per_device_train_batch_size", "4", "--save_strategy", "no", "--report_to", "none")
    assert (out / "adapter_model.safetensors").is_file()
    from transformers import AutoTokenizer

    from utils.data.formats import DataOptions
    from utils.data.loading import prepare

    tok = AutoTokenizer.from_pretrained(families["qwen3"])
    options = DataOptions(tools=DataOptions.of({"tools": ["utils.toy.tool_task:add"]}).tools)
    _, dataset = prepare(str(data), "sft", tok, "train_data_path", options)
    assert json.loads(dataset[0]["tools"])[0]["function"]["name"] == "add"
    assert "Add two integers." in json.loads(dataset[0]["tools"])[0]["function"]["description"]


@pytest.fixture
def refused(families, tmp_path, capsys):
    """main_train in this process on `rows` -> its error message (exit 2, no traceback, no output_dir)."""
    def run(rows, *extra, family="qwen3", method="SFT"):
        data = write_jsonl(tmp_path / "bad.jsonl", rows)
        out = tmp_path / "never"
        capsys.readouterr()
        assert run_main("--rlhf_type", method, "--model_name_or_path", families[family], "--train_data_path", data,
                        "--output_dir", out, *extra) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and not out.exists()
        return err

    return run


def test_template_without_tools_refused_at_the_row(refused):
    err = refused(_rows(), family="llama3")
    assert "bad.jsonl:1" in err and "drops the tool call of message 2" in err, err


def test_bad_tool_rows_refused(refused):
    bad_args = _add_row(1, 2)
    bad_args["messages"][1]["tool_calls"][0]["function"]["arguments"] = "{a: 1"
    err = refused([_add_row(3, 4), bad_args])
    assert "bad.jsonl:2" in err and "tool call 1 has `arguments` that are not valid JSON" in err, err
    no_name = _add_row(1, 2)
    no_name["messages"][1]["tool_calls"] = [{"function": {"arguments": {}}}]
    assert "has no function name" in refused([no_name])
    on_user = _add_row(1, 2)
    on_user["messages"][0]["tool_calls"] = on_user["messages"][1]["tool_calls"]
    assert "has `tool_calls` but role 'user'" in refused([on_user])
    bad_schema = _add_row(1, 2)
    bad_schema["tools"] = [{"description": "nameless"}]
    assert "`tools` schema 1 has no function name" in refused([bad_schema])
    plain = [{"prompt": "What is 1 plus 2?", "completion": "3", "tools": [ADD]}]
    assert "plain-string rows" in refused(plain)
    err = refused(_rows(), "--tools", "utils.toy.tool_task:nothing_here")
    assert "--tools 'utils.toy.tool_task:nothing_here'" in err and "has no function" in err
    err = refused(_rows(), "--tools", "utils.toy.tool_task:write")
    assert "no tool schema can be made from 'write'" in err


def test_dpo_rows_with_tool_turns(families, tmp_path):
    """DPO: the prompt holds the call and its result; TRL tokenizes the prompt with the row's tool schemas and the
    arguments as written."""
    from transformers import AutoTokenizer

    rows = []
    for raw in _rows():
        m = raw["messages"]
        rows.append({"tools": raw["tools"], "prompt": m[:3], "chosen": [m[3]],
                     "rejected": [{"role": "assistant", "content": "No idea."}]})
    data = write_jsonl(tmp_path / "dpo.jsonl", rows)
    out = tmp_path / "dpo"
    run_cli("--rlhf_type", "DPO", "--train_mode", "lora", "--model_name_or_path", families["qwen3"],
            "--train_data_path", data, "--output_dir", out, "--max_steps", "1", "--per_device_train_batch_size", "2",
            "--save_strategy", "no", "--report_to", "none")
    assert (out / "adapter_model.safetensors").is_file()
    from trl import DPOConfig, DPOTrainer
    from transformers import AutoModelForCausalLM

    from utils.data.formats import DataOptions
    from utils.data.loading import prepare

    tok = AutoTokenizer.from_pretrained(families["qwen3"])
    _, dataset = prepare(str(data), "preference", tok, "train_data_path", DataOptions())
    trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(families["qwen3"]),
                         args=DPOConfig(output_dir=str(tmp_path / "o"), report_to="none", use_cpu=True, bf16=False),
                         train_dataset=dataset, processing_class=tok)
    prompt = tok.decode(trainer.train_dataset[1]["prompt_ids"])
    assert '"name": "neg"' in prompt and '{"x": 5}' in prompt and "NEG-5" in prompt and "null" not in prompt


def _tool_templates():
    import os

    import trl

    folder = os.path.join(os.path.dirname(trl.__file__), "chat_templates")
    return sorted(f[:-6] for f in os.listdir(folder) if f.endswith(".jinja") and "_training" not in f)


def test_every_tool_capable_template_trl_ships(families, tmp_path):
    """Each template TRL ships that renders a tool exchange (TRL's own test) takes the rows in the check phase, with
    the calls, arguments, results and schemas in its rendering; each one that does not is refused at the row."""
    from transformers import AutoTokenizer
    from trl.chat_template_utils import supports_tool_calling

    from utils.core.errors import UserError
    from utils.data.formats import DataOptions
    from utils.data.loading import prepare
    from utils.toy.families import chat_template

    data = write_jsonl(tmp_path / "tools.jsonl", _rows())
    no_schemas = write_jsonl(tmp_path / "no_schemas.jsonl", [{"messages": r["messages"]} for r in _rows()])
    tok = AutoTokenizer.from_pretrained(families["llama31"])
    capable, schemas_dropped = [], []
    for name in _tool_templates():
        tok.chat_template = chat_template(name)
        try:
            if not supports_tool_calling(tok):
                continue
        except Exception:  # templates for images, which index content as a list
            continue
        try:
            prepare(str(data), "sft", tok, "train_data_path", DataOptions(), assistant_only_loss=False)
            capable.append(name)
        except UserError as e:  # e.g. DeepSeek-V3's, which expects the tools described in the system turn
            assert "tools.jsonl:1: the chat template" in str(e) and "does not render the tool schemas" in str(e), e
            prepare(str(no_schemas), "sft", tok, "train_data_path", DataOptions(), assistant_only_loss=False)
            schemas_dropped.append(name)
    assert {"qwen3", "qwen2_5", "llama3_1", "llama3_2"} <= set(capable), (capable, schemas_dropped)
    assert len(capable) >= 15 and len(schemas_dropped) <= 2, (capable, schemas_dropped)
