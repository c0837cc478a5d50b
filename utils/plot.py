"""`python -m utils.plot`: training curves as PNG from any run's `trainer_state.json` (every method logs every step there). The code is in utils/evaluation/plots.py."""

import sys

if __name__ == "__main__":
    from utils.evaluation.plots import main

    sys.exit(main())
