"""`python -m utils.options_cache`: build the options cache (.cache/cli-options.json) unless it is current, so that
`--help`, a misspelt flag, a missing path and a bad data row are answered before the heavy imports.
script/setup.sh runs it once after installing. The cache is read by utils/cli/args.py, written by
utils/cli/options.py."""

import os
import sys

if __name__ == "__main__":
    from utils.cli.args import CACHE, ROOT, load_cache
    from utils.core.errors import CommandParser, run_command

    sys.path.insert(0, ROOT)
    if run_command(CommandParser("python -m utils.options_cache", __doc__.split("\n\n")[0].split(": ", 1)[1])
                   .parse_args):
        sys.exit(2)
    if load_cache() is None:
        from utils.core.imports import hide_unused_bitsandbytes

        hide_unused_bitsandbytes([])  # the options do not depend on it; its import prints a kernel notice
        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
        from common_args import CommonArgs
        from rlhf_args import METHODS
        from utils.cli.options import write_options_cache

        write_options_cache(METHODS, CommonArgs)
        print(f"[setup] options cache written: {CACHE}")
