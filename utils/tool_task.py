"""`python -m utils.tool_task DIR`: a tiny tool-capable model and a calculator task (SFT transcripts that call the
tool, prompts for GRPO, held-out prompts), nothing downloaded. The code is in utils/toy/tool_task.py."""

import sys

from utils.toy.tool_task import main  # noqa: F401  (also main(argv) in-process)

if __name__ == "__main__":
    sys.exit(main())
