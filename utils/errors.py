"""The one exception type for user mistakes: main_train prints its message and exits with code 2."""


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
