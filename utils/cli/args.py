"""The command line before any heavy import: a YAML config with flag overrides, renamed flags, path and data
checks that need no torch, and the options cache that lets `--help`, a misspelt flag, a missing path and a bad
data row be reported in well under 3 s (importing torch, transformers and TRL's configs alone takes ~5 s on two
CPU cores; bench/RESULTS.md, start-up).

The cache (`.cache/cli-options.json`) holds each method's data kind, option names and `--help` text, produced
by the real parser from the real table (utils/cli/options.write_options_cache). Its key covers the Python, TRL and
transformers versions and every file the options come from, so an edited args file or another TRL makes it
stale; a stale cache is never used (every check then runs after the imports) and is rebuilt by that run.
`script/setup.sh` builds it once after installing (`python -m utils.options_cache`).
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import sys

from utils.core.errors import UserError, did_you_mean

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.path.join(ROOT, ".cache", "cli-options.json")
# Flags the checks before the imports read, as raw strings (lists for the nargs ones).
_SINGLE = ("rlhf_type", "train_mode", "model_name_or_path", "tokenizer_name_or_path", "output_dir",
           "resume_from_checkpoint", "teacher_model_name_or_path", "value_model_path", "train_split", "pairs",
           "min_score_gap", "seed")
_LISTS = ("reward_model_path", "train_data_path", "eval_data_path", "data_weights")
_BOOLS = ("teacher_load_in_4bit",)  # `--flag` alone means true, as in HfArgumentParser


# ------------------------------------------------------------------------------------ config file
def explicit(argv: list[str], config: dict) -> set[str]:
    """The option names the user set, as flags or in the YAML file (a default of ours is switched off only when unset)."""
    return {a[2:].split("=", 1)[0] for a in argv if a.startswith("--")} | set(config)


def split_config(argv: list[str]) -> tuple[str | None, list[str]]:
    """(YAML path or None, the other arguments) from `--config FILE [flags]`, `--config=FILE` or `FILE.yaml [flags]`."""
    argv = [str(a) for a in argv]
    if argv and argv[0].endswith((".yaml", ".yml")) and not argv[0].startswith("-"):
        return argv[0], argv[1:]
    for i, arg in enumerate(argv):
        if arg == "--config":
            if i + 1 == len(argv):
                raise UserError("--config needs a YAML file: --config run.yaml [--flag value ...].")
            return argv[i + 1], argv[:i] + argv[i + 2:]
        if arg.startswith("--config="):
            return arg.partition("=")[2], argv[:i] + argv[i + 1:]
    return None, argv


def read_config(path: str | None) -> dict:
    """The YAML mapping (option name -> value); an `env:` mapping is exported first, as TRL's TrlParser does."""
    if path is None:
        return {}
    import yaml

    try:
        with open(path) as f:
            raw = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"{path}: could not read the YAML config: {e}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of option names to values at the top level.")
    env = raw.pop("env", None) or {}
    if not isinstance(env, dict):
        raise UserError(f"{path}: `env` must be a mapping of environment variables to values.")
    for key, value in env.items():
        os.environ[str(key)] = str(value)
    return raw


# -------------------------------------------------------------------------------- unknown options
def refuse_unknown(flags: list[str], keys: list[str], options: set[str], method: str, config_path: str | None):
    """One paragraph for misspelt flags and YAML keys, with the closest real options."""
    entries = [(f.split("=")[0], "") for f in flags] + [(f"--{k}", f" (in {config_path})") for k in keys]
    hints = [flag + where + did_you_mean(flag, options) for flag, where in entries]
    if hints:
        raise UserError(f"Unknown option(s) for --rlhf_type {method}: {'; '.join(hints)}. Options are never "
                        f"abbreviated. Run `python main_train.py --rlhf_type {method} --help` to list every option.")


def unknown(argv: list[str], config: dict, options: set[str]) -> tuple[list[str], list[str]]:
    flags = [a for a in argv if a.startswith("--") and a.split("=")[0] not in options]
    return flags, [k for k in config if f"--{k}" not in options]


# -------------------------------------------------------------------------------------- raw values
class _Unparsable(Exception):
    pass


class _LightParser(argparse.ArgumentParser):
    def error(self, message):
        raise _Unparsable(message)


def raw_values(argv: list[str], config: dict) -> dict:
    """The flags the early checks need, as given (flags over the YAML file); {} when argparse would refuse them
    (the full parser then reports it)."""
    p = _LightParser(add_help=False, allow_abbrev=False)
    p.add_argument("-h", "--help", action="store_true")
    for name in _SINGLE:
        p.add_argument(f"--{name}")
    for name in _LISTS:
        p.add_argument(f"--{name}", nargs="*")
    for name in _BOOLS:
        p.add_argument(f"--{name}", nargs="?", const="true")
    try:
        values = vars(p.parse_known_args(argv)[0])
    except _Unparsable:
        return {}
    for name in _SINGLE + _LISTS + _BOOLS:
        if values.get(name) is None and config.get(name) is not None:
            values[name] = config[name]
    for name in _LISTS:
        if values.get(name) is not None and not isinstance(values[name], list):
            values[name] = [values[name]]
    return values


def check_paths(values: dict) -> None:
    """Every path the run names, checked before anything is imported or read: model directories hold a config and
    weights, GGUF files are complete and readable (utils/model/gguf.py), a checkpoint to resume from is complete,
    output_dir is not a file."""
    from utils.model import gguf
    from utils.model.checks import check_model_dir, checkpoint_gaps

    four_bit = {"model_name_or_path": "--train_mode qlora" if values.get("train_mode") == "qlora" else
                "--load_in_4bit" if _true(values.get("load_in_4bit")) else None,
                "teacher_model_name_or_path": "--teacher_load_in_4bit" if _true(values.get("teacher_load_in_4bit"))
                else None}
    for name in ("model_name_or_path", "tokenizer_name_or_path", "teacher_model_name_or_path", "value_model_path"):
        path = values.get(name)
        if path and gguf.is_gguf(path):
            gguf.check(path, f"--{name}", four_bit.get(name))
        elif path and name != "tokenizer_name_or_path":  # a tokenizer directory is checked as it loads
            check_model_dir(path, f"--{name}")
    for path in values.get("reward_model_path") or []:
        if gguf.is_gguf(path):  # llama.cpp maps no sequence-classification head of a causal LM into GGUF
            raise UserError(f"--reward_model_path {path!r} is a GGUF file: GGUF files hold causal LMs, and "
                            "transformers reads no trained score head from them, so it cannot score answers; train "
                            f"a reward model from it first (--rlhf_type Reward --model_name_or_path {path}) and "
                            "pass that run's output_dir.")
        check_model_dir(path, "--reward_model_path")
    out = values.get("output_dir")
    if out and os.path.isfile(os.path.expanduser(out)):
        raise UserError(f"--output_dir {out!r} is a file; expected a directory (created if it does not exist).")
    ckpt = values.get("resume_from_checkpoint")
    if ckpt and ckpt.lower() in ("latest", "auto"):  # resolved in output_dir (utils/runtime/resume.py)
        if os.path.isdir(os.path.expanduser(ckpt)):
            raise UserError(f"--resume_from_checkpoint {ckpt} could mean the newest checkpoint in --output_dir or "
                            f"the directory ./{ckpt} here; give ./{ckpt} for the directory, or run from elsewhere.")
    elif ckpt:
        real = os.path.expanduser(ckpt)
        if not os.path.isdir(real):
            raise UserError(f"--resume_from_checkpoint {ckpt!r} does not exist; expected a checkpoint directory "
                            "(output_dir/checkpoint-N, written during training).")
        gaps = checkpoint_gaps(real)
        if gaps:
            raise UserError(f"--resume_from_checkpoint {ckpt!r} is not a complete checkpoint ({' and '.join(gaps)}; "
                            "a run stopped while saving it?); expected a directory "
                            "written by a save step, e.g. the previous checkpoint-N.")


def _true(value) -> bool:
    return str(value).lower() in ("true", "1", "yes", "y", "t")


# ------------------------------------------------------------------------------------------ cache
def _key() -> str:
    from importlib.metadata import version

    h = hashlib.sha256(sys.version.encode())
    for dist in ("trl", "transformers"):
        h.update(version(dist).encode())
    files = ["common_args.py", "utils/model/dtype.py", "utils/cli/args.py", "utils/cli/options.py",
             *glob.glob("rlhf_args/*.py", root_dir=ROOT)]
    for rel in sorted(files):
        with open(os.path.join(ROOT, rel), "rb") as f:
            h.update(rel.encode() + f.read())
    return h.hexdigest()


def load_cache() -> dict | None:
    try:
        with open(CACHE) as f:
            data = json.load(f)
        return data if data.get("key") == _key() else None
    except (OSError, ValueError):
        return None


def save_cache(data: dict) -> None:
    try:
        os.makedirs(os.path.dirname(CACHE), exist_ok=True)
        tmp = f"{CACHE}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump({**data, "key": _key()}, f)
        os.replace(tmp, CACHE)
    except OSError:  # a read-only checkout: every run takes the slower path, nothing else changes
        pass
