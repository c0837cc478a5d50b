"""main_train's parser: TRL's TrlParser (a YAML file's options as defaults, then flags) over our dataclasses, with
no abbreviated flags and errors as UserErrors; the help texts; the options cache utils/cli/args.py reads."""

from __future__ import annotations

from utils.cli import args as cli
from utils.core.errors import UserError

MORE_HELP = "Every option of one method, with its TRL config fields: python main_train.py --rlhf_type TYPE --help"


def make_parser(dataclasses):
    """TRL's parser (YAML defaults, then flags) over our dataclasses; no abbreviated flags; errors are UserErrors."""
    from trl import TrlParser

    class Parser(TrlParser):
        def error(self, message):
            raise UserError(f"{message}. Run `python main_train.py --rlhf_type TYPE --help` for every option.")

    return Parser(dataclasses, prog="main_train.py", allow_abbrev=False)


def option_strings(parser) -> set[str]:
    return {o for action in parser._actions for o in action.option_strings}


def general_help(methods, common) -> str:
    """`python main_train.py --help`: the options every method has (`common`: the CommonArgs class), the methods."""
    names = ", ".join(m.name for m in methods.values())
    return f"{make_parser([common]).format_help()}\nMethods: {names}.\n{MORE_HELP}\n"


def options_table(methods, common) -> dict:
    """Each method's name, data kind, option names and `--help` text, and the general help, from the real parsers
    (`methods`: rlhf_args.METHODS; `common`: the CommonArgs class). The options cache holds exactly this."""
    entries = {}
    for key, m in methods.items():
        parser = make_parser([common, m.config])
        entries[key] = {"name": m.name, "data": m.data, "options": sorted(option_strings(parser)),
                        "help": parser.format_help()}
    return {"general_help": general_help(methods, common), "methods": entries}


def write_options_cache(methods, common) -> dict:
    """The options table, saved for the checks before the imports (utils/cli/args.py); returned too."""
    table = options_table(methods, common)
    cli.save_cache(table)
    return table


def answer_front(table: dict, argv: list[str], yaml_config: dict, values: dict, config_path: str | None) -> str:
    """`--help`, `--rlhf_type` and unknown flags, answered from the options table (the cache, or built from the
    parsers): the help printed and exit 0, a mistake a UserError; else the method's table key."""
    import sys

    if values.get("help") and not values.get("rlhf_type"):
        print(table["general_help"])
        sys.exit(0)
    key = method_key(values.get("rlhf_type"), [m["name"] for m in table["methods"].values()])
    entry = table["methods"][key]
    if values.get("help"):
        print(entry["help"])
        sys.exit(0)
    options = set(entry["options"])
    cli.refuse_unknown(*cli.unknown(argv, yaml_config, options), options, entry["name"], config_path)
    return key


def method_key(name, names: list[str]) -> str:
    """The table key of `--rlhf_type NAME` (case-insensitive), or a UserError listing the methods."""
    if not name:
        raise UserError(f"--rlhf_type is required; expected one of {', '.join(names)}.")
    if str(name).lower() not in {n.lower() for n in names}:
        raise UserError(f"--rlhf_type {name!r} is not a method; expected one of {', '.join(names)} "
                        "(case-insensitive).")
    return str(name).lower()
