"""`python -m utils.tiny_model`: build a tiny random causal LM and a tokenizer trained on the spot, saved with
`save_pretrained`. The code is in utils/toy/tiny_model.py."""

import sys

from utils.toy.tiny_model import main  # noqa: F401  (also main(argv) in-process)

if __name__ == "__main__":
    sys.exit(main())
