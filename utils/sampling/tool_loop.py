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

from utils.sampling import generation


@dataclass
class Episode:
    messages: list = field(default_factory=list)  # the completion: assistant and tool turns
    tokens: int = 0  # tokens the model wrote, over all its turns
    finished: bool = True  # the last turn ended with EOS
    calls: int = 0
    failures: int = 0  # calls that raised, timed out or named no tool


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


def sample_with_tools(model, tokenizer, prompts: list, tools: list, *, num_samples: int, max_new_tokens: int,
                      max_iterations: int, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
                      seed: int = 0) -> list[list[Episode]]:
    """`num_samples` episodes per conversational prompt; `tools`: callables (already `timed`). Every turn is
    sampled with up to `max_new_tokens` tokens."""
    from trl.chat_template_utils import add_response_schema, parse_response
    from transformers.utils import get_json_schema

    if getattr(tokenizer, "response_template", None) is None and getattr(tokenizer, "response_schema", None) is None:
        tokenizer = add_response_schema(tokenizer)
    schemas = [get_json_schema(t) for t in tools]
    by_name = {t.__name__: t for t in tools}
    kwargs = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k, tools=schemas)
    groups = generation.generate(model, tokenizer, prompts, num_samples=num_samples, seed=seed, **kwargs)
    episodes = [[Episode() for _ in group] for group in groups]
    pending = []  # (prompt index, sample index, the Sample of its last turn)
    for i, group in enumerate(groups):
        pending += [(i, j, s) for j, s in enumerate(group)]
    for round_ in range(max_iterations + 1):
        calling = []
        for i, j, s in pending:
            ep = episodes[i][j]
            ids = s.completion_ids[:-1] if s.finished else s.completion_ids
            message = parse_response(tokenizer, ids, prefix=s.prompt_ids, tools=schemas)
            ep.messages.append(message)
            ep.tokens += len(s.completion_ids)
            ep.finished = s.finished
            if message.get("tool_calls") and s.finished and round_ < max_iterations:
                for call in message["tool_calls"]:
                    result, failed = _call(call, by_name)
                    ep.calls, ep.failures = ep.calls + 1, ep.failures + failed
                    ep.messages.append({"role": "tool", "name": (call.get("function") or {}).get("name"),
                                        "content": result if isinstance(result, str) else str(result)})
                calling.append((i, j))
        if not calling:
            break
        conversations = [prompts[i] + episodes[i][j].messages for i, j in calling]
        again = generation.generate(model, tokenizer, conversations, num_samples=1,
                                    seed=seed * 1_000_003 + 7919 * (round_ + 1), **kwargs)
        pending = [(i, j, g[0]) for (i, j), g in zip(calling, again)]
    return episodes
