"""Tools and environments for GRPO (--tools, --environment, --tool_timeout), on TRL's GRPOTrainer tool loop.

TRL 1.16 parses the model's tool calls with the tokenizer's response schema, calls the tool, and appends the result
as a `tool` turn before sampling on, up to `max_tool_calling_iterations` rounds or `max_completion_length` tokens.
A tool that raises already goes back to the model as `{"error": "..."}` and counts in `tools/failure_frequency`.
What we add:

- the tools are checked in the check phase (`check_tools`): imported (only the modules named), each with a schema a
  template can render (type hints, a docstring with Args:), names unique; an environment class has `reset` and at
  least one public method, each such method a valid tool;
- a call that has not returned after --tool_timeout seconds goes back to the model as an error result (TRL would wait
  forever) and counts in `tools/timeouts`. Python cannot stop a thread: the call runs on in the background, its
  result dropped; a tool that can hang for good should time itself out (e.g. a subprocess with a timeout);
- `tools/errors` (calls that raised) and `tools/timeouts` per logged step, `tools/turns` (assistant turns per
  completion: 1 = answered without a tool); every rollout's transcript (calls, results, answer, rewards) in
  completions.jsonl (utils/trainers/online_rl.py).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from dataclasses import dataclass, field

from utils.core.errors import UserError
from utils.core.user_code import import_object, json_schema, tool_functions


@dataclass
class ToolStats:
    """Counts since the last log, shared by every wrapped tool of the run."""

    errors: int = 0
    timeouts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, errors: int = 0, timeouts: int = 0) -> None:
        with self.lock:
            self.errors += errors
            self.timeouts += timeouts

    def take(self) -> tuple[int, int]:
        with self.lock:
            out, self.errors, self.timeouts = (self.errors, self.timeouts), 0, 0
        return out


def timed(fn, timeout: float, stats: ToolStats):
    """`fn` cut at `timeout` seconds (TimeoutError, which TRL returns to the model as an error result), its raises
    and timeouts counted; name, docstring and signature kept (the schema the model sees)."""
    name = getattr(fn, "__name__", "tool")
    message = f"the tool {name} did not return within {timeout:g} s and was stopped waiting for"
    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def call_async(*args, **kwargs):
            try:
                return await asyncio.wait_for(fn(*args, **kwargs), timeout)
            except asyncio.TimeoutError:
                stats.add(timeouts=1)
                raise TimeoutError(message) from None
            except Exception:
                stats.add(errors=1)
                raise

        return call_async

    @functools.wraps(fn)
    def call(*args, **kwargs):
        box = {}

        def run():
            try:
                box["value"] = fn(*args, **kwargs)
            except BaseException as e:  # handed to the caller's thread
                box["error"] = e

        worker = threading.Thread(target=run, name=f"tool {name}", daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            stats.add(timeouts=1)
            raise TimeoutError(message)
        if "error" in box:
            stats.add(errors=1)
            raise box["error"]
        return box["value"]

    return call


def _public_methods(cls) -> list[str]:
    """The methods TRL exposes as tools: public functions of the class but `reset` and `get_reward`."""
    return [n for n, _ in inspect.getmembers(cls, predicate=inspect.isfunction)
            if n not in ("reset", "get_reward") and not n.startswith("_")]


def timed_environment(cls, timeout: float, stats: ToolStats):
    """A subclass of the environment class (same name, so TRL logs its reward under it) whose tool methods are
    `timed`; one instance per rollout, as TRL makes them."""
    methods = {n: timed(getattr(cls, n), timeout, stats) for n in _public_methods(cls)}
    return type(cls.__name__, (cls,), {**methods, "__module__": cls.__module__, "__doc__": cls.__doc__})


@dataclass
class ToolPlan:
    """The tools of a run, checked; `trainer_kwargs` builds what GRPOTrainer takes."""

    functions: list
    environment: type | None
    timeout: float
    stats: ToolStats = field(default_factory=ToolStats)

    @property
    def owns_reward(self) -> bool:
        return self.environment is not None and callable(getattr(self.environment, "get_reward", None))

    def trainer_kwargs(self) -> dict:
        kwargs = {"tools": [timed(f, self.timeout, self.stats) for f in self.functions], "tool_stats": self.stats}
        if self.environment is not None:
            kwargs["environment_factory"] = timed_environment(self.environment, self.timeout, self.stats)
        return kwargs


def check_tools(method, common, tokenizer) -> ToolPlan | None:
    """Check phase, for a method that calls tools (`Method.tools == "run"`): --tools and --environment imported and
    checked, and the tokenizer's chat template able to render a tool-calling exchange (TRL's own test); None when
    neither is given or the method only renders tool schemas (utils/data/tool_rows.py)."""
    if method.tools != "run" or (not common.tools and not common.environment):
        return None
    functions = tool_functions(common.tools)
    environment = None
    if common.environment:
        environment = import_object(common.environment, "--environment", kind="class")
        if not callable(getattr(environment, "reset", None)):
            raise UserError(f"--environment {common.environment!r}: {environment.__name__} has no `reset` method; "
                            "expected a class whose `reset(**row)` starts an episode (returning None, or text added "
                            "to the prompt) and whose public methods are the tools.")
        names = _public_methods(environment)
        if not names:
            raise UserError(f"--environment {common.environment!r}: {environment.__name__} has no public method "
                            "besides reset / get_reward; expected at least one tool method (type hints and a "
                            "docstring with Args:).")
        for n in names:
            json_schema(getattr(environment, n), f"--environment {common.environment!r}, method {n}")
        clash = sorted({f.__name__ for f in functions} & set(names))
        if clash:
            raise UserError(f"--tools and --environment both have a tool called {clash[0]!r}; expected distinct "
                            "names (the model calls tools by name).")
    from trl.chat_template_utils import supports_tool_calling

    if not supports_tool_calling(tokenizer):
        name = getattr(tokenizer, "name_or_path", "") or "the tokenizer"
        raise UserError(f"The chat template of {name} cannot render a tool-calling exchange (user -> assistant with "
                        "tool_calls -> tool result): it fails or drops a part of it, so the model would never see "
                        "its calls or their results. Expected a model whose template renders tools (Qwen2.5/Qwen3, "
                        "Llama-3.1/3.2, ...), or --tokenizer_name_or_path with one.")
    return ToolPlan(functions, environment, common.tool_timeout)


def tool_metrics(stats: ToolStats, completions: list, accelerator) -> dict:
    """This log's tools/errors and tools/timeouts (summed over processes) and tools/turns (assistant turns per
    completion over the completions TRL kept for its tables, gathered from every process)."""
    errors, timeouts = stats.take()
    if accelerator.num_processes > 1:
        import torch

        summed = accelerator.reduce(torch.tensor([errors, timeouts], device=accelerator.device), "sum")
        errors, timeouts = (int(x) for x in summed.tolist())
    turns = [sum(1 for m in c if m.get("role") == "assistant") for c in completions if isinstance(c, list)]
    out = {"tools/errors": errors, "tools/timeouts": timeouts}
    if turns:
        out["tools/turns"] = sum(turns) / len(turns)
    return out
