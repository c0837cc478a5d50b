"""`python -m utils.smollm2`: the real pretrained model of the tests, the real-model demo and the benchmarks:
SmolLM2-135M-Instruct (Llama. The code is in utils/toy/smollm2.py."""

import sys

from utils.toy.smollm2 import main  # noqa: F401  (also main(argv) in-process)

if __name__ == "__main__":
    sys.exit(main())
