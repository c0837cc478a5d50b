"""The one exception type for user mistakes (main_train and the module commands print its message and exit
with code 2), and the parser and `main` those commands share."""

import argparse


class UserError(Exception):
    """A bad flag, file, field or combination. The message is one paragraph the user can act on."""


def run_command(work, argv: list[str]) -> int:
    """The `main` of our `python -m utils.X` commands: logging on, `work(argv)` run, and a UserError printed as one
    `error: ...` paragraph with exit code 2 (no traceback for a user mistake)."""
    import logging
    import sys

    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    try:
        work(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


class CommandParser(argparse.ArgumentParser):
    """argparse for `python -m utils.X` commands: a bad flag is a UserError naming `--help`, flags are never
    abbreviated, the module's docstring is the description as written, and `renamed` old flag names still work
    with a one-line notice (utils.cli.rename)."""

    def __init__(self, prog: str, description: str | None = None, renamed: dict[str, str] | None = None):
        super().__init__(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                         allow_abbrev=False)
        self.renamed = renamed or {}

    def parse_args(self, args=None, namespace=None):
        import sys

        from utils.cli import rename

        args = [str(a) for a in (sys.argv[1:] if args is None else args)]
        return super().parse_args(rename(args, {}, self.renamed, self.prog)[0], namespace)

    def error(self, message):
        raise UserError(f"{message}. Run `{self.prog} --help` for every option.")
