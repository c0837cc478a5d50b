"""Every `python -m utils.X` command follows the one convention (utils/core/errors.py: CommandParser + run_command):
`--help` answers at once, before torch or transformers is imported; an abbreviated or unknown flag is one
paragraph with the options it may mean and exit code 2, never a traceback; an old flag name still works, with a
one-line notice. The commands are found by scanning utils/ for a `__main__` block, so a new one is covered
without editing this file. Each subprocess only parses (a few seconds in all)."""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
import time

import pytest

from conftest import ENV, ROOT

COMMANDS = sorted(p.stem for p in (ROOT / "utils").glob("*.py")
                  if re.search(r"^if __name__ == ['\"]__main__['\"]:", p.read_text(), re.M))
HEAVY = ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "deepspeed", "bitsandbytes", "matplotlib")

# The command's own `__main__`, with CommandParser.parse_args replaced: "facts" prints the parser's options and
# renamed flags without parsing; "parse" parses the given arguments and prints the result. Either way it exits.
_PROBE = """
import json, runpy, sys
from utils.core.errors import CommandParser
mode, module, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
parse = CommandParser.parse_args

def probe(self, args=None, namespace=None):
    if mode == "parse":
        print(json.dumps(vars(parse(self, args, namespace)), default=str))
    else:
        actions = self._actions
        print(json.dumps({"options": {o: a.dest for a in actions for o in a.option_strings}, "renamed": self.renamed,
                          "required": [a.option_strings[0] for a in actions if a.required and a.option_strings],
                          "positionals": sum(1 for a in actions if not a.option_strings and a.nargs is None)}))
    sys.exit(0)

CommandParser.parse_args = probe
sys.argv = [module, *argv]
runpy.run_module(module, run_name="__main__", alter_sys=True)
sys.exit("the command never called CommandParser.parse_args")
"""


def _run(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=60)
    return proc, time.perf_counter() - start


@functools.cache
def _facts(name: str) -> dict:
    """The parser's options ({option string: dest}), renamed flags, required options and positionals."""
    return _probe("facts", name)[0]


def _probe(mode: str, name: str, *argv: str) -> tuple[dict, str]:
    proc, _ = _run("-c", _PROBE, mode, f"utils.{name}", *argv)
    assert proc.returncode == 0 and proc.stdout.strip(), f"utils.{name} ({mode}): {proc.stderr[-3000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def _refused(name: str, *argv: str) -> str:
    """stderr of a command line the command must refuse: exit code 2, one paragraph, no traceback."""
    proc, _ = _run("-m", f"utils.{name}", *argv)
    assert proc.returncode == 2, (argv, proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def test_commands_found():
    assert {"demo", "evaluate", "merge", "plot", "rejection_sampling", "tiny_model"} <= set(COMMANDS), COMMANDS


@pytest.mark.parametrize("name", COMMANDS)
def test_help_answers_before_heavy_imports(name):
    proc, seconds = _run("-X", "importtime", "-m", f"utils.{name}", "--help")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith(f"usage: python -m utils.{name}"), proc.stdout[:500]
    imported = {line.rpartition("|")[2].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert not imported & set(HEAVY), f"utils.{name} --help imports {sorted(imported & set(HEAVY))}"
    assert seconds < 5, f"utils.{name} --help took {seconds:.1f} s"


@pytest.mark.parametrize("name", COMMANDS)
def test_abbreviated_flag_refused_with_its_full_name(name):
    options = sorted(_facts(name)["options"], key=lambda o: (o == "--help", -len(o)))
    for option in (o for o in options if o.startswith("--")):
        prefix = next((option[:n] for n in range(3, len(option))
                       if [o for o in options if o.startswith(option[:n])] == [option]), None)
        if prefix:
            break
    else:
        pytest.fail(f"utils.{name}: no option has a unique prefix: {options}")
    err = _refused(name, prefix)
    assert prefix in err and "did you mean" in err and option in err, err


@pytest.mark.parametrize("name", COMMANDS)
def test_unknown_flag_refused(name):
    err = _refused(name, "--no_such_option", "1")
    assert "Unknown option" in err and "--no_such_option" in err and "--help" in err, err


@pytest.mark.parametrize("name", COMMANDS)
def test_old_flag_names_still_work(name):
    facts = _facts(name)
    if not facts["renamed"]:
        pytest.skip(f"utils.{name} has no renamed flag")
    for old, new in facts["renamed"].items():
        argv = [f"--{old}", "old_value.png"]
        for option in facts["required"]:
            if option != f"--{new}":
                argv += [option, "x"]
        argv += ["x"] * facts["positionals"]
        parsed, err = _probe("parse", name, *argv)
        assert parsed[facts["options"][f"--{new}"]] == "old_value.png", (old, parsed)
        assert err.strip() == f"python -m utils.{name}: --{old} is deprecated, use --{new} (the old name goes away " \
                              "in the next release).", err


def test_renamed_flags_found():
    assert _facts("plot")["renamed"] == {"out": "output_dir"}
    assert _facts("merge")["renamed"]["adapter"] == "model_name_or_path"


def test_did_you_mean():
    from utils.core.errors import did_you_mean

    options = ["--help", "--hidden_size", "--num_layers", "--output_dir"]
    assert did_you_mean("--hid", options) == " (did you mean --hidden_size?)"  # an abbreviation
    assert did_you_mean("--num_layer=3", options) == " (did you mean --num_layers?)"  # a misspelling, with a value
    assert did_you_mean("--zzz", options) == ""
