"""`python -m utils.tiny_model`: build a tiny random causal LM and a tokenizer trained on the spot, saved with `save_pretrained`. The code is in utils/toy/tiny_model.py."""

import sys

if __name__ == "__main__":
    from utils.toy.tiny_model import main

    sys.exit(main())
