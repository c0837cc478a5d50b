"""Sampling with tools, outside training (utils.evaluate --tools): the model answers, its tool calls are parsed with
TRL's parser (`trl.chat_template_utils.parse_response`, the one GRPO uses), the tools are called (cut at
--tool_timeout, a raise returned as an error result, as in training: utils/trainers/tools.py), the results are
appended as `tool` turns and the model samples on, up to `max_iterations` rounds of calls.

A sample is an `Episode`: the completion as messages (assistant turns with their `tool_calls`, the tool results,
the answer), the tokens the model wrote (its own turns only), whether its last turn ended, the calls it made and
how many of them failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from utils.core.errors import UserError
from utils.sampling import generation


@dataclass
class Episode:
    messages: list = field(default_factory=list)  # the completion: assistant and tool turns
    tokens: int = 0  # tokens the model wrote, over all its turns
    finished: bool = True  # the last turn ended with EOS
    calls: int = 0
    failures: int = 0  # calls that raised, timed out or named no tool


def check_tools(a, preference: bool, data, *tokenizers) -> list | None:
    """utils.evaluate's check phase: --tools imported and checked (None: not given), conversational prompts, both
    sides' templates able to render a tool exchange (`tokenizers`)."""
    if not a.tools:
        return None
    from trl.chat_template_utils import supports_tool_calling

    from utils.core.user_code import tool_functions

    if preference:
        raise UserError(f"--tools with preference rows ({a.eval_data_path}): tools are called while sampling "
                        "prompts; expected prompt rows (`prompt` as a conversation).")
    if not isinstance(data[0]["prompt"], list):
        raise UserError(f"--tools with plain-string prompts ({a.eval_data_path}): the tool schemas and results go "
                        "through the chat template; expected conversational prompts (lists of role/content messages).")
    functions = tool_functions(a.tools)
    for side, tok in zip(("--model_name_or_path", "--baseline_model_name_or_path"), tokenizers):
        if not supports_tool_calling(tok):
            raise UserError(f"--tools: the chat template of {side} ({getattr(tok, 'name_or_path', '')}) cannot render "
                            "a tool-calling exchange (user -> assistant with tool_calls -> tool result); expected a "
                            "template that renders tools (Qwen2.5/Qwen3, Llama-3.1/3.2, ...).")
    return functions


def _call(tool_call: dict, tools: dict) -> tuple[object, bool]:
    """(the result, whether it failed); a failure's result is {"error": ...}, as TRL returns it to the model."""
    fn = tool_call.get("function") or {}
    name = fn.get("name")
    if name not in tools:
        return {"error": f"Tool {name} not found."}, True
    try:
        return tools[name](**(fn.get("arguments") or {})), False
    except Exception as e:  # the model's call is wrong, or the tool failed: the model reads why
        return {"error": str(e)}, True


def _suffix_ids(tokenizer, template, tool_messages: list[dict]) -> list[int]:
    """The tokens the template writes after an assistant turn that called tools: the tool turns, then the next
    assistant header (TRL's GRPOTrainer._get_tool_suffix_ids, on a minimal conversation)."""
    call = [{"type": "function", "function": {"name": tool_messages[0]["name"], "arguments": {}}}]
    head = [{"role": "user", "content": "dummy"}, {"role": "assistant", "content": "", "tool_calls": call}]
    kwargs = dict(tokenize=True, return_dict=False, chat_template=template)
    prefix = tokenizer.apply_chat_template(head, add_generation_prompt=False, **kwargs)
    full = tokenizer.apply_chat_template(head + tool_messages, add_generation_prompt=True, **kwargs)
    ends = [i for i, t in enumerate(prefix) if t == tokenizer.eos_token_id]
    prefix = prefix[:ends[-1] + 1] if ends else prefix  # "...<|im_end|>": the model wrote up to EOS, not the newline
    if full[:len(prefix)] != prefix:
        raise ValueError("the chat template renders a conversation differently once tool turns follow it")
    return full[len(prefix):]


def sample_with_tools(model, tokenizer, prompts: list, tools: list, *, num_samples: int, max_new_tokens: int,
                      max_iterations: int, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
                      seed: int = 0) -> list[list[Episode]]:
    """`num_samples` episodes per conversational prompt; `tools`: callables (already `timed`). As in GRPO's rollouts,
    the context of a turn is the tokens before it as they were (the model's own tokens, not re-rendered), the tool
    turns appended with the template's tokens, with TRL's prefix-preserving copy of the template where the model's
    own is not; every turn is sampled with up to `max_new_tokens` tokens."""
    from transformers.utils import get_json_schema
    from trl.chat_template_utils import (add_response_schema, get_training_chat_template,
                                         is_chat_template_prefix_preserving, parse_response)

    if getattr(tokenizer, "response_template", None) is None and getattr(tokenizer, "response_schema", None) is None:
        tokenizer = add_response_schema(tokenizer)
    template = None if is_chat_template_prefix_preserving(tokenizer) else get_training_chat_template(tokenizer)
    schemas = [get_json_schema(t) for t in tools]
    by_name = {t.__name__: t for t in tools}
    settings = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k)
    first = [tokenizer.apply_chat_template(p, tools=schemas, add_generation_prompt=True, tokenize=False,
                                           chat_template=template) for p in prompts]
    ids = tokenizer(first, add_special_tokens=False)["input_ids"]
    groups = generation.generate_ids(model, tokenizer, ids, num_samples=num_samples, seed=seed, **settings)
    episodes = [[Episode() for _ in group] for group in groups]
    pending = [(i, j, s) for i, group in enumerate(groups) for j, s in enumerate(group)]
    for round_ in range(max_iterations + 1):
        calling, contexts = [], []
        for i, j, s in pending:
            ep = episodes[i][j]
            message = parse_response(tokenizer, s.completion_ids, prefix=s.prompt_ids, tools=schemas)
            ep.messages.append(message)
            ep.tokens += len(s.completion_ids)
            ep.finished = s.finished
            if not (message.get("tool_calls") and s.finished and round_ < max_iterations):
                continue
            results = []
            for call in message["tool_calls"]:
                result, failed = _call(call, by_name)
                ep.calls, ep.failures = ep.calls + 1, ep.failures + failed
                results.append({"role": "tool", "name": (call.get("function") or {}).get("name"),
                                "content": result if isinstance(result, str) else str(result)})
            ep.messages += results
            calling.append((i, j))
            contexts.append(s.prompt_ids + s.completion_ids + _suffix_ids(tokenizer, template, results))
        if not calling:
            break
        again = generation.generate_ids(model, tokenizer, contexts, num_samples=1,
                                        seed=seed * 1_000_003 + 7919 * (round_ + 1), **settings)
        pending = [(i, j, g[0]) for (i, j), g in zip(calling, again)]
    return episodes
