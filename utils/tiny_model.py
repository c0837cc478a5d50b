"""`python -m utils.tiny_model`: build a tiny random model saved with `save_pretrained`, offline, in seconds: the
default Qwen2-shaped causal LM with a tokenizer trained on the spot (utils/toy/tiny_model.py), another text family
(utils/toy/families.py), or a vision-language model with its processor (utils/toy/vision.py).

    python -m utils.tiny_model --output_dir DIR [--hidden_size 64] [--num_layers 2] [--no_pad_token]
    python -m utils.tiny_model DIR [...]              # the same: the directory may also come first, unnamed
    python -m utils.tiny_model DIR --family llama3    # another family (llama3 gemma2 phi3 qwen3 gpt2)
    python -m utils.tiny_model DIR --family smolvlm   # a vision-language model with its processor (llava, gemma3)
"""

import sys

from utils.core.errors import CommandParser, run_command
from utils.toy.families import FAMILIES  # both light: no torch before --help is answered
from utils.toy.vision import VISION_FAMILIES


def main(argv: list[str] | None = None) -> int:
    return run_command(build, argv)


def build(argv: list[str]) -> None:
    p = CommandParser("python -m utils.tiny_model", __doc__)
    p.add_output_dir("where the model and its tokenizer are saved")
    p.add_argument("--hidden_size", type=int, default=64)
    p.add_argument("--num_layers", type=int, default=2)
    p.add_argument("--vocab_size", type=int, default=512)
    p.add_argument("--arch", choices=["qwen2", "llama"], default="qwen2")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no_pad_token", action="store_true", help="save without a pad token (to exercise pad repair)")
    p.add_argument("--no_chat_template", action="store_true")
    p.add_argument("--family", choices=[*FAMILIES, *VISION_FAMILIES],
                   help="another family's tokenizer, template and layers (utils/toy/families.py), or a vision-language "
                        "model with its processor (utils/toy/vision.py); --seed applies, the size options do not")
    a = p.parse_with_output_dir(argv, "the model")
    from utils.core.distributed import process_defaults

    process_defaults()  # no "Setting accelerator to CPU" from DeepSpeed's detection (a warning nobody can act on)
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    auto = AutoModelForCausalLM
    if a.family in VISION_FAMILIES:
        from utils.toy.vision import make_tiny_vlm

        out, auto, what = make_tiny_vlm(a.output_dir, a.family, a.seed), AutoModelForImageTextToText, "processor"
    elif a.family:
        from utils.toy.families import make_family

        out, what = make_family(a.family, a.output_dir, seed=a.seed), "tokenizer"
    else:
        from utils.toy.tiny_model import make_tiny

        out, what = make_tiny(a.output_dir, a.hidden_size, a.num_layers, a.vocab_size, a.arch, a.seed,
                              pad_token=not a.no_pad_token, chat_template=not a.no_chat_template), "tokenizer"
    n = sum(p.numel() for p in auto.from_pretrained(out).parameters())
    print(f"tiny {a.family or 'qwen2'} model ({n / 1e6:.2f}M parameters) and {what} saved to {out}")


if __name__ == "__main__":
    sys.exit(main())
