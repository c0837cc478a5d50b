"""`python -m utils.rejection_sampling`: rejection sampling (best-of-N): TRL has none, so this is ours. The code is in
utils/sampling/rejection.py."""

import sys

from utils.sampling.rejection import main  # noqa: F401  (also main(argv) in-process)

if __name__ == "__main__":
    from utils.core.imports import hide_unused_bitsandbytes

    hide_unused_bitsandbytes(sys.argv[1:])  # before anything imports peft or transformers' trainer
    sys.exit(main())
