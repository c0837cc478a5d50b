"""`python -m utils.plot`: training curves as PNG from any run's `trainer_state.json` (every method logs every step
there). The code is in utils/evaluation/plots.py."""

import sys

from utils.evaluation.plots import main  # noqa: F401  (also main(argv) in-process)

if __name__ == "__main__":
    sys.exit(main())
