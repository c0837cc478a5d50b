"""`python -m utils.merge`: merge a LoRA / DoRA adapter into its base model and save a plain model (safetensors +
tokenizer). The code is in utils/model/merge.py."""

import sys

from utils.model.merge import main  # noqa: F401  (also main(argv) in-process)

if __name__ == "__main__":
    from utils.core.imports import hide_unused_bitsandbytes

    hide_unused_bitsandbytes(sys.argv[1:])  # before anything imports peft or transformers' trainer
    sys.exit(main())
