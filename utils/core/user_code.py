"""The user's own Python, named on the command line as `module:name` or `path/to/file.py:name`: reward functions
(--reward_funcs), tools (--tools) and environments (--environment). Only the module named is imported; a mistake in
the spec, a missing file, an import that fails inside the user's module or a name that is not there is one
UserError naming the flag."""

from __future__ import annotations

import importlib
import importlib.util
import os

from utils.core.errors import UserError


def import_object(spec: str, flag: str, kind: str = "function"):
    """`module:name` or `path/to/file.py:name` -> the object (a function, or a class when `kind` is "class")."""
    target, sep, name = spec.rpartition(":")
    if not sep or not target or not name:
        raise UserError(f"{flag} {spec!r}: expected `module:{kind}` or `path/to/file.py:{kind}`.")
    try:
        if target.endswith(".py"):
            if not os.path.isfile(target):
                raise UserError(f"{flag} {spec!r}: file {target!r} does not exist.")
            mod_spec = importlib.util.spec_from_file_location(f"user_module_{abs(hash(os.path.abspath(target)))}",
                                                              target)
            module = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except UserError:
        raise
    except Exception as e:  # an import error inside the user's module: name it, keep the cause
        raise UserError(f"{flag} {spec!r}: importing {target!r} failed: {type(e).__name__}: {e}") from e
    obj = getattr(module, name, None)
    if kind == "class" and not isinstance(obj, type):
        raise UserError(f"{flag} {spec!r}: {target!r} has no class {name!r}.")
    if not callable(obj):
        raise UserError(f"{flag} {spec!r}: {target!r} has no function {name!r}.")
    return obj


def json_schema(fn, where: str) -> dict:
    """The JSON schema a chat template shows the model for tool `fn` (transformers' `get_json_schema`: the name, the
    docstring's summary and Args:, the type hints)."""
    from transformers.utils import get_json_schema

    try:
        return get_json_schema(fn)
    except Exception as e:  # DocstringParsingException / TypeHintParsingException: what the function lacks
        raise UserError(f"{where}: no tool schema can be made from {getattr(fn, '__name__', fn)!r}: {e} Expected a "
                        "function with a type hint on every argument and a docstring with a summary line and an "
                        "`Args:` section describing each argument.") from None


def tool_functions(specs, flag: str = "--tools") -> list:
    """The functions named by `specs`, each with a schema a template can render; names unique."""
    functions, seen = [], {}
    for spec in specs:
        fn = import_object(spec, flag)
        json_schema(fn, f"{flag} {spec!r}")
        if fn.__name__ in seen:
            raise UserError(f"{flag}: {spec!r} and {seen[fn.__name__]!r} are both called {fn.__name__!r}; the model "
                            "calls tools by name, so expected tools with distinct names.")
        seen[fn.__name__] = spec
        functions.append(fn)
    return functions


def tool_schemas(specs, flag: str = "--tools") -> list[dict]:
    """The schemas of `specs`: functions (as `tool_functions`) or .json files holding a list of schemas."""
    import json

    out = []
    for spec in specs:
        if spec.endswith(".json") and ":" not in os.path.basename(spec):
            if not os.path.isfile(spec):
                raise UserError(f"{flag} {spec!r}: file does not exist.")
            try:
                with open(spec) as f:
                    loaded = json.load(f)
            except ValueError as e:
                raise UserError(f"{flag} {spec!r}: not valid JSON ({e}); expected a list of function schemas "
                                '{"type": "function", "function": {"name": ..., "parameters": {...}}}.') from None
            out += loaded if isinstance(loaded, list) else [loaded]
        else:
            out += [json_schema(fn, f"{flag} {spec!r}") for fn in tool_functions([spec], flag)]
    return out
