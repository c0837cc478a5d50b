"""Tool-use conversations: assistant turns with `tool_calls`, `tool` turns with their results, and the tool schemas
(a row's `tools` field, or --tools for every row without one), as the model's own chat template renders them.

Arrow stores one struct type per column, so the calls of different tools would share one `arguments` struct holding
every tool's parameters, each row's missing ones filled with null (and rendered as `"b": null`). Rows are therefore
stored with each call's `arguments` and the row's `tools` as JSON strings (`store_form`), and turned back into
objects, with the nulls Arrow adds dropped, wherever they are rendered: by us (`render_form`, the check phase and
our assistant masks) and by TRL (`as_dataset`: each message stored as datasets' `Json`, decoded to its own keys).

A template that drops the calls, their arguments, the results or the schemas is refused at the row's FILE:LINE
before any weights load (`check_rendered`)."""

from __future__ import annotations

import json

from utils.data.schemas import BadRow, arguments_object, json_type

CONVERSATION_FIELDS = ("messages", "prompt", "completion", "chosen", "rejected")
_SCHEMA = ('a list of function schemas {"type": "function", "function": {"name": ..., "description": ..., '
           '"parameters": {...}}} (or a JSON string of one)')


def has_tool_content(row: dict) -> bool:
    if row.get("tools") is not None:
        return True
    return any(isinstance(row.get(f), list) and any(isinstance(m, dict) and (m.get("tool_calls") or
                                                                             m.get("role") == "tool")
                                                    for m in row[f]) for f in CONVERSATION_FIELDS)


def schemas(tools, at: str = "`tools`") -> list[dict]:
    """A row's `tools` (or --tools) as a list of {"type": "function", "function": {...}}: the flat form {"name",
    "description", "parameters"} (LLaMA-Factory's) is wrapped; a JSON string is parsed."""
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except ValueError as e:
            raise BadRow(f"{at} is not valid JSON ({e})", _SCHEMA) from None
    if isinstance(tools, dict):
        tools = [tools]
    if not isinstance(tools, list):
        raise BadRow(f"{at} is {json_type(tools)}", _SCHEMA)
    out = []
    for j, tool in enumerate(tools, 1):
        fn = tool.get("function", tool) if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"].strip():
            raise BadRow(f"{at} schema {j} has no function name", _SCHEMA)
        out.append({"type": "function", "function": fn})
    return out


def store_form(row: dict, default_tools: str | None = None) -> dict:
    """The row as stored: calls in OpenAI's nested form with `arguments` a JSON string, a call-only turn's null
    content as "", `tools` a JSON string (the row's own, else `default_tools`). Rows without tool content: as they
    are (plus `default_tools`)."""
    if row.get("tools") is None and default_tools is None and not has_tool_content(row):
        return row
    out = dict(row)
    for f in CONVERSATION_FIELDS:
        if isinstance(row.get(f), list):
            out[f] = [_stored_message(m) for m in row[f]]
    tools = row.get("tools")
    out["tools"] = json.dumps(schemas(tools), ensure_ascii=False) if tools is not None else default_tools
    if out["tools"] is None:
        del out["tools"]
    return out


def _stored_message(m: dict) -> dict:
    calls = m.get("tool_calls")
    if not calls:
        return m
    m = dict(m)
    if m.get("content") is None:
        m["content"] = ""
    stored = []
    for call in calls:
        fn = call.get("function", call)
        nested = {"type": "function",
                  "function": {"name": fn["name"],
                               "arguments": json.dumps(arguments_object(fn.get("arguments", {}), "call"),
                                                       ensure_ascii=False)}}
        if call.get("id") is not None:
            nested["id"] = call["id"]
        stored.append(nested)
    m["tool_calls"] = stored
    return m


def render_form(value):
    """A stored conversation (or a whole row) as templates want it: nulls dropped, `arguments` objects, `tools` a
    list."""
    if isinstance(value, list):
        return [render_form(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for k, v in value.items():
        if v is None:
            continue
        if k == "arguments" and isinstance(v, str):
            v = json.loads(v) if v.strip() else {}
        elif k == "tools" and isinstance(v, str):
            v = json.loads(v)
        out[k] = render_form(v) if isinstance(v, (dict, list)) else v
    return out


def arguments_as_text(messages: list[dict]) -> list[dict]:
    """`messages` (render form) with every call's arguments as a JSON string: what templates that concatenate them
    as text take (TRL's supports_tool_calling retries these so; its training copies of them take objects)."""
    out = []
    for m in messages:
        if m.get("tool_calls"):
            m = {**m, "tool_calls": [{**c, "function": {**c["function"], "arguments": json.dumps(
                c["function"].get("arguments", {}), ensure_ascii=False)}} for c in m["tool_calls"]]}
        out.append(m)
    return out


def row_tools(row: dict):
    """The tool schemas to render `row` with (None: none)."""
    tools = row.get("tools")
    return (json.loads(tools) if isinstance(tools, str) else tools) or None


def check_rendered(text: str, messages: list[dict], tools, template: str) -> None:
    """Raise BadRow when the rendering `text` of `messages` (render form) lacks a tool call's name or an argument
    value, a tool result, or a tool schema's name: the template cannot render tools (it drops them silently)."""
    for i, m in enumerate(messages, 1):
        for call in m.get("tool_calls") or []:
            fn = call["function"]
            missing = [fn["name"]] if fn["name"] not in text else []
            missing += [str(v) for v in fn.get("arguments", {}).values()
                        if isinstance(v, (str, int, float)) and str(v) not in text and json.dumps(v) not in text]
            if missing:
                raise BadRow(f"the chat template of {template} drops the tool call of message {i} (its rendering "
                             f"lacks {', '.join(repr(x) for x in missing[:3])})",
                             "a model whose chat template renders tool calls (Qwen2.5/Qwen3, Llama-3.1/3.2, ...), or "
                             "--tokenizer_name_or_path with one")
        if m.get("role") == "tool" and isinstance(m.get("content"), str) and m["content"].strip() \
                and m["content"].strip() not in text:
            raise BadRow(f"the chat template of {template} drops the tool result of message {i}",
                         "a model whose chat template renders tool results (role 'tool'), or "
                         "--tokenizer_name_or_path with one")
    for tool in tools or []:
        name = tool.get("function", tool).get("name")
        if name and name not in text:
            raise BadRow(f"the chat template of {template} does not render the tool schemas (`tools`): {name!r} is "
                         "not in the rendered conversation", "a model whose chat template lists the tools it is "
                         "given, or --tokenizer_name_or_path with one")


def as_dataset(dataset):
    """The stored dataset as TRL reads it: every message of a conversation column typed as datasets' `Json` (one JSON
    object per message, decoded to exactly its own keys: no nulls, `arguments` objects; kept through TRL's maps)."""
    from datasets import Json, List

    columns = [c for c in CONVERSATION_FIELDS if c in dataset.column_names
               and isinstance(dataset.features[c], List) and isinstance(dataset.features[c].feature, dict)]
    if not columns:
        return dataset
    features = dataset.features.copy()
    for c in columns:
        features[c] = List(Json())

    def decode(batch):
        return {c: [render_form(v) if v is not None else None for v in batch[c]] for c in columns}

    return dataset.map(decode, batched=True, features=features, desc="Storing tool-use conversations")


# ------------------------------------------------------------------------------ what formats.py reads
def tools_json(specs) -> str:
    """--tools as the JSON string rows store: the functions' schemas (or those of .json files), checked."""
    from utils.core.errors import UserError
    from utils.core.user_code import tool_schemas

    try:
        return json.dumps(schemas(tool_schemas(specs), "--tools"), ensure_ascii=False)
    except BadRow as e:
        raise UserError(f"{e.what}; expected {e.expected}.") from None


def sharegpt_tool_turns(messages: list[dict], name: str, roles: dict) -> list[dict]:
    """ShareGPT messages (roles as written) -> our roles (`roles`); `function_call` turns become assistant turns with
    `tool_calls`, and the `observation` turns after a single call are named after it."""
    calls = []  # the names of the last function_call turn's calls
    for i, m in enumerate(messages, 1):
        role, m["role"] = m["role"], roles[m["role"]]
        if role == "function_call":
            m["tool_calls"], m["content"] = function_calls(m.get("content"), f"`{name}` message {i}"), ""
            calls = [c["function"]["name"] for c in m["tool_calls"]]
        elif role in ("observation", "tool") and len(calls) == 1:
            m.setdefault("name", calls[0])
    return messages


def function_calls(value, at: str) -> list[dict]:
    """A ShareGPT `function_call` turn's value (LLaMA-Factory's: a JSON object {"name", "arguments"}, or a list of
    them for parallel calls) -> OpenAI `tool_calls`."""
    expected = 'a JSON string of {"name": ..., "arguments": {...}} (or of a list of them)'
    try:
        parsed = json.loads(value) if isinstance(value, str) else value
    except ValueError as e:
        raise BadRow(f"{at} (a function_call) is not valid JSON ({e})", expected) from None
    parsed = parsed if isinstance(parsed, list) else [parsed]
    if not parsed or not all(isinstance(c, dict) and isinstance(c.get("name"), str) for c in parsed):
        raise BadRow(f"{at} (a function_call) is not a call with a `name`", expected)
    return [{"type": "function", "function": {"name": c["name"], "arguments": c.get("arguments", {})}}
            for c in parsed]
