"""The one exception type for user mistakes (main_train and the module commands print its message and exit
with code 2), `reword` for what a library still refuses late, and the one command-line convention: the parser and
`main` every `python -m utils.X` command shares, renamed flags and "did you mean" (main_train's as well)."""

import argparse
import dataclasses
import difflib
import re
import sys


class UserError(Exception):
    """A bad flag, file, field or combination. The message is one paragraph the user can act on."""


def show(value) -> str:
    """A value as it is written on our command line: lists space-separated, booleans true / false."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return " ".join(show(v) for v in value)
    return str(value)


# peft's LoraConfig fields -> our flags (CommonArgs); every TRL / transformers config field is our flag by its name.
PEFT_FLAGS = {"r": "lora_rank", "lora_alpha": "lora_alpha", "lora_dropout": "lora_dropout",
              "target_modules": "lora_target_modules", "use_dora": "use_dora"}
# A field as libraries name it in a message: `name`, 'name', "name", name=..., peft's "Target modules {...}".
_QUOTED = re.compile(r"`(?:args\.)?(\w+)`|'(\w+)'|\"(\w+)\"|\b(\w+)=|\b([Tt]arget modules)\b")
# ... or bare: a field name with an underscore anywhere, or any field name that starts a sentence of the message.
_BARE = re.compile(r"\b([a-z]\w*_\w+)\b|(?:^|[.:] )([a-z]\w*) (?:must|should|has to|is not|cannot)\b")


def reword(error: Exception, common=None, config=None, where: str = "The configuration", hint: str = "",
           named_only: bool = False):
    """A library's late refusal (ValueError / TypeError from peft, TRL, transformers, DeepSpeed) as a UserError
    that names our flags and their values: each field its message names (peft's `r` is our --lora_rank, ...; a TRL
    or transformers config field is our flag of the same name). None for a TypeError that names no flag of ours:
    that one is a bug of ours, not a user's mistake, and goes up as it is; with `named_only` (errors raised while
    training, where a bug of ours is as likely as a bad value), None for any error that names no flag."""
    sentence = " ".join(str(error).split()).rstrip(".")
    ours = {f.name: common for f in dataclasses.fields(common)} if dataclasses.is_dataclass(common) else {}
    ours.update({f.name: config for f in dataclasses.fields(config)} if dataclasses.is_dataclass(config) else {})
    found, aliases = [], []
    strong = ["".join(m).replace(" ", "_").lower() for m in _QUOTED.findall(sentence)]
    for name in strong + ["".join(m) for m in _BARE.findall(sentence)]:
        flag = PEFT_FLAGS.get(name) if common is not None and name in PEFT_FLAGS else name
        if flag in ours and flag not in found:
            found.append(flag)
            if flag != name:
                aliases.append(f"`{name}` is our --{flag}")
    if not found:
        if isinstance(error, TypeError) or named_only:
            return None
        return UserError(f"{where} refused the configuration: {sentence}.{hint}")
    flags = ", ".join(f"--{f} {show(getattr(ours[f], f))}" for f in found)
    alias = f" ({'; '.join(aliases)})" if aliases else ""
    return UserError(f"{where} refused {flags}: {sentence}{alias}. Expected a value it accepts: change "
                     f"{' or '.join('--' + f for f in found)}.{hint}")


# ------------------------------------------------------------------------ the commands' convention
def rename(argv: list[str], config: dict, renamed: dict[str, str], prog: str) -> tuple[list[str], dict]:
    """Old flag / YAML key names still work, with a one-line notice each (main_train and every command)."""
    for old, new in renamed.items():
        hit = old in config
        if hit:
            config[new] = config.pop(old)
        for i, arg in enumerate(argv):
            if arg == f"--{old}" or arg.startswith(f"--{old}="):
                argv[i], hit = f"--{new}" + arg[len(old) + 2:], True
        if hit:
            print(f"{prog}: --{old} is deprecated, use --{new} (the old name goes away in the next release).",
                  file=sys.stderr)
    return argv, config


def did_you_mean(flag: str, options) -> str:
    """` (did you mean --a, --b?)` for a misspelt or abbreviated flag: the options it abbreviates (shortest
    first), then difflib's closest; '' when nothing is close."""
    name = flag.split("=")[0].lstrip("-")
    names = sorted({o[2:] for o in options if o.startswith("--")})
    longer = sorted((n for n in names if n.startswith(name) and n != name), key=len)
    close = list(dict.fromkeys(longer[:3] + difflib.get_close_matches(name, names, n=3)))[:3]
    return f" (did you mean {', '.join('--' + c for c in close)}?)" if close else ""


def run_command(work, argv: list[str] | None = None) -> int:
    """The `main` of every `python -m utils.X` command: logging on, `work(argv)` run (argv: the command line's by
    default), and a UserError printed as one `error: ...` paragraph with exit code 2 (a user's mistake never shows
    a traceback). An int that `work` returns is the exit code; anything else means 0."""
    import logging

    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    try:
        code = work([str(a) for a in (sys.argv[1:] if argv is None else argv)])
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return code if isinstance(code, int) and not isinstance(code, bool) else 0


class CommandParser(argparse.ArgumentParser):
    """argparse for every `python -m utils.X` command (tests/test_commands.py holds each to it): flags are never
    abbreviated, an unknown or abbreviated one is refused with the options it may mean, any other bad flag is a
    UserError naming `--help` (run_command: one paragraph, exit code 2), the module's docstring is the
    description as written, and `renamed` old flag names still work with a one-line notice (rename)."""

    def __init__(self, prog: str, description: str | None = None, renamed: dict[str, str] | None = None):
        super().__init__(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                         allow_abbrev=False)
        self.renamed = renamed or {}

    def parse_args(self, args=None, namespace=None):
        args = rename([str(a) for a in (sys.argv[1:] if args is None else args)], {}, self.renamed, self.prog)[0]
        flags = args[:args.index("--")] if "--" in args else args
        if not {"-h", "--help"} & set(flags):  # help first, as argparse would; then unknown flags before the rest
            known = self._option_string_actions
            unknown = [a for a in flags if re.match(r"--?[A-Za-z]", a) and a.split("=")[0] not in known]
            if unknown:
                hints = "; ".join(a.split("=")[0] + did_you_mean(a, known) for a in unknown)
                raise UserError(f"Unknown option(s) for {self.prog}: {hints}. Options are never abbreviated. "
                                f"Run `{self.prog} --help` to list every option.")
        return super().parse_args(args, namespace)

    def error(self, message):
        raise UserError(f"{message}. Run `{self.prog} --help` for every option.")

    def add_output_dir(self, help: str) -> None:
        """`--output_dir DIR`, which may also be given as DIR alone (`output_dir` then holds the one given)."""
        self.add_argument("dir", nargs="?", metavar="DIR", help="the same as --output_dir DIR")
        self.add_argument("--output_dir", help=help)

    def parse_with_output_dir(self, argv, what: str):
        """parse_args, with `output_dir` set from DIR or --output_dir: both (and different), or neither, refused."""
        a = self.parse_args(argv)
        if a.dir is not None and a.output_dir not in (None, a.dir):
            raise UserError(f"Two output directories: {a.dir!r} and --output_dir {a.output_dir!r}. Give one.")
        a.output_dir = a.output_dir or a.dir
        if a.output_dir is None:
            raise UserError(f"Where should {what} go? Give --output_dir DIR (or DIR alone).")
        return a
