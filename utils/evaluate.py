"""`python -m utils.evaluate`: evaluate what training bought: a model against the model it started from, on held-out
prompts. The code is in utils/evaluation/run.py."""

import sys

from utils.evaluation.run import main  # noqa: F401  (also main(argv) in-process)

if __name__ == "__main__":
    from utils.core.imports import hide_unused_bitsandbytes

    hide_unused_bitsandbytes(sys.argv[1:])  # before anything imports peft or transformers' trainer
    sys.exit(main())
