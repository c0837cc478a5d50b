"""Training vision-language models with images (docs/vision.md): SFT's trained tokens on every family's template,
the methods TRL 1.16 trains with images (DPO, KTO, GRPO, RLOO) with rewards that see the images, what is frozen,
outputs that reload and merge, sampling commands with images, and a visual task learned by SFT then GRPO."""

from __future__ import annotations

import json

import pytest

from conftest import ENV, FAST, ROOT, run_main, write_jsonl

Q = "Which colour?"


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    """Four pictures, and rows for each data kind; image paths relative to the files."""
    from PIL import Image

    d = tmp_path_factory.mktemp("colour_rows")
    (d / "img").mkdir()
    pics = {"red": (200, 30, 30), "blue": (30, 30, 200), "green": (30, 180, 60), "yellow": (220, 200, 40)}
    for name, rgb in pics.items():
        Image.new("RGB", (32, 32), rgb).save(d / "img" / f"{name}.png")
    user = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": Q}]}]
    said = (lambda text: [{"role": "assistant", "content": text}])
    other = dict(zip(pics, ["blue", "red", "yellow", "green"]))
    write_jsonl(d / "sft.jsonl", [{"messages": user + said(c), "images": [f"img/{c}.png"]} for c in pics] * 2
                + [{"messages": [{"role": "user", "content": "Name a colour."}, *said("green")]}])  # no image
    write_jsonl(d / "pref.jsonl", [{"prompt": user, "chosen": said(c), "rejected": said(other[c]),
                                    "images": [f"img/{c}.png"]} for c in pics] * 2)
    write_jsonl(d / "prompts.jsonl", [{"prompt": user, "images": [f"img/{c}.png"], "answer": c} for c in pics] * 2)
    (d / "seen.py").write_text(
        "import json, os\n"
        "def saw_images(completions, images, **kwargs):\n"
        "    with open(os.path.join(os.path.dirname(__file__), 'seen.jsonl'), 'a') as f:\n"
        "        f.write(json.dumps(images) + '\\n')\n"
        "    return [0.0] * len(completions)\n")
    return d


@pytest.mark.parametrize("family", ["smolvlm", "llava", "gemma3"])
def test_sft_trains_the_answer_only_and_saves_a_reloadable_adapter(family, tiny_vlms, colours, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    import main_train
    from utils.toy.vision import SPECS

    out = tmp_path / "sft"
    argv = ["--rlhf_type", "SFT", "--model_name_or_path", tiny_vlms[family], "--train_data_path",
            colours / "sft.jsonl", "--output_dir", out, *FAST]
    method, common, config, tok, train, evals, needs = main_train.check_phase([str(a) for a in argv])
    trainer = main_train.build_trainer(method, common, config, tok, train, evals, [], needs)
    batch = trainer.data_collator([dict(train[0])])
    trained = batch["input_ids"][0][batch["labels"][0] != -100]
    assert tok.decode(trained) == train[0]["messages"][1]["content"][0]["text"] + SPECS[family][1]  # "red<end of turn>"
    assert "pixel_values" in batch
    mixed = [dict(train[len(train) - 1]), dict(train[0])]  # a row without an image first: collated image row first
    assert trainer.data_collator(mixed)["input_ids"].shape[0] == 2 and mixed[0]["images"]
    names = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n and ("language_model" in n or "text_model" in n) for n in names), names
    del trainer
    assert run_main(*argv) == 0
    processor = AutoProcessor.from_pretrained(out)
    model = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(tiny_vlms[family]), out)
    picture = processor(images=[[str(colours / "img" / "red.png")]], return_tensors="pt",
                        text=[processor.apply_chat_template(train[0]["messages"][:1], add_generation_prompt=True)])
    assert torch.isfinite(model(**picture).logits).all()
    from utils.model.merge import main as merge  # in-process: `python -m utils.merge` runs in test_commands

    merged = tmp_path / "merged"
    assert merge(["--model_name_or_path", str(out), "--output_dir", str(merged)]) == 0
    AutoProcessor.from_pretrained(merged), AutoModelForImageTextToText.from_pretrained(merged)


@pytest.mark.parametrize("method,data,extra", [
    ("DPO", "pref.jsonl", []),
    ("KTO", "pref.jsonl", []),
    ("GRPO", "prompts.jsonl", ["--num_generations", "4", "--max_completion_length", "4"]),
    ("RLOO", "prompts.jsonl", ["--num_generations", "4", "--max_completion_length", "4"]),
])
def test_preference_and_online_methods_train_with_images(method, data, extra, tiny_vlms, colours, tmp_path):
    from conftest import log_history

    seen = colours / "seen.jsonl"
    seen.unlink(missing_ok=True)
    rewards = ["--reward_funcs", f"{colours / 'seen.py'}:saw_images"] if data == "prompts.jsonl" else []
    out = tmp_path / method
    fast = [f for i, f in enumerate(FAST) if "--max_length" not in FAST[max(0, i - 1):i + 1]]  # GRPO has none
    assert run_main("--rlhf_type", method, "--model_name_or_path", tiny_vlms["smolvlm"], "--train_data_path",
                    colours / data, "--output_dir", out, *fast, "--max_steps", "2", *extra, *rewards) == 0
    assert any("loss" in h for h in log_history(out)) and (out / "processor_config.json").exists()
    if rewards:  # the reward function got each row's images, as the absolute paths of the files
        batches = [json.loads(line) for line in seen.read_text().splitlines()]
        assert batches and all(len(i) == 1 and i[0].startswith(str(colours / "img")) for b in batches for i in b)


def test_full_mode_freezes_the_vision_tower_and_projector_unless_asked(tiny_vlms, colours, tmp_path):
    from safetensors.torch import load_file

    before = load_file(f"{tiny_vlms['llava']}/model.safetensors")
    for flags, tower_moves in (([], False), (["--freeze_vision_tower", "false"], True)):
        out = tmp_path / f"full{len(flags)}"
        assert run_main("--rlhf_type", "SFT", "--train_mode", "full", "--model_name_or_path", tiny_vlms["llava"],
                        "--train_data_path", colours / "sft.jsonl", "--output_dir", out, *FAST, "--learning_rate",
                        "1e-2", *flags) == 0
        after = load_file(out / "model.safetensors")
        moved = {k for k in before if not before[k].equal(after[k])}
        assert any("language_model" in k for k in moved)
        assert not any("multi_modal_projector" in k for k in moved)
        assert any("vision_tower" in k for k in moved) == tower_moves


def test_qlora_trains_a_vision_language_model(tiny_vlms, colours, tmp_path):
    out = tmp_path / "qlora"
    assert run_main("--rlhf_type", "SFT", "--train_mode", "qlora", "--model_name_or_path", tiny_vlms["gemma3"],
                    "--train_data_path", colours / "sft.jsonl", "--output_dir", out, *FAST, "--max_steps", "2") == 0
    assert (out / "adapter_model.safetensors").exists()


def test_a_tiny_vlm_learns_colours_by_sft_then_grpo(tiny_vlms, tmp_path):
    """The README's learning numbers (docs/vision.md): held-out accuracy above chance after SFT on noisy
    demonstrations, and higher after GRPO with a correctness reward, both measured by utils.evaluate."""
    from utils.evaluation.run import evaluate
    from utils.toy import vision_task

    files = vision_task.make(str(tmp_path / "task"))
    base = tiny_vlms["smolvlm"]
    reward = "utils/toy/vision_task.py:correct_colour"
    common = ["--train_mode", "full", "--save_strategy", "no", "--seed", "0", "--disable_tqdm", "true"]
    assert run_main("--rlhf_type", "SFT", "--model_name_or_path", base, "--train_data_path", files["sft"],
                    "--output_dir", tmp_path / "sft", "--num_train_epochs", "8", "--learning_rate", "3e-3",
                    "--per_device_train_batch_size", "8", *common) == 0
    assert run_main("--rlhf_type", "GRPO", "--model_name_or_path", tmp_path / "sft", "--train_data_path",
                    files["prompts"], "--reward_funcs", reward, "--output_dir", tmp_path / "grpo", "--max_steps", "80",
                    "--learning_rate", "1e-3", "--num_generations", "4", "--per_device_train_batch_size", "8",
                    "--max_completion_length", "4", "--temperature", "0.5", *common) == 0
    result = evaluate(["--model_name_or_path", str(tmp_path / "grpo"), "--baseline_model_name_or_path",
                       str(tmp_path / "sft"), "--eval_data_path", files["heldout"], "--reward_funcs", reward,
                       "--num_samples", "4", "--max_new_tokens", "4", "--temperature", "0.5",
                       "--output_dir", str(tmp_path / "eval")])["results"]
    sft, grpo, gain = result["reward"]["baseline"], result["reward"]["model"], result["reward"]["difference"]
    chance = 1 / len(vision_task.COLOURS)
    assert sft["ci95"][0] > chance, result  # SFT: above chance, with 95 % confidence
    assert gain["ci95"][0] > 0, result  # GRPO over SFT, paired over the same held-out pictures
    print(f"held-out accuracy: SFT {sft}, GRPO {grpo}, GRPO - SFT {gain}")


def test_rejection_sampling_keeps_the_images(tiny_vlms, colours, tmp_path):
    from utils.sampling.rejection import main as rejection_sampling

    out = tmp_path / "rs"
    assert rejection_sampling(["--model_name_or_path", tiny_vlms["smolvlm"], "--train_data_path",
                               str(colours / "prompts.jsonl"), "--reward_funcs", "utils/toy/vision_task.py:correct_colour",
                               "--num_samples", "2", "--max_new_tokens", "3", "--output_dir", str(out)]) == 0
    best = [json.loads(line) for line in (out / "best.jsonl").read_text().splitlines()]
    assert len(best) == 8 and all(r["images"][0].startswith(str(colours / "img")) for r in best)
    assert run_main("--rlhf_type", "SFT", "--model_name_or_path", tiny_vlms["smolvlm"], "--train_data_path",
                    out / "best.jsonl", "--output_dir", tmp_path / "again", *FAST, "--max_steps", "1") == 0


@pytest.mark.distributed
def test_two_processes_train_a_vlm_on_mixed_batches(tiny_vlms, colours, tmp_path):
    """DDP over gloo (script/rlhf_run.sh, 2 processes): batches of one row with an image and one without."""
    import subprocess

    out = tmp_path / "ddp"
    proc = subprocess.run(["bash", "script/rlhf_run.sh", "--rlhf_type", "SFT", "--model_name_or_path",
                           tiny_vlms["smolvlm"], "--train_data_path", str(colours / "sft.jsonl"), "--output_dir",
                           str(out), "--max_steps", "3", "--per_device_train_batch_size", "2", "--disable_tqdm",
                           "true"], cwd=ROOT, env=dict(ENV, NPROC="2"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "adapter_model.safetensors").exists() and "find_unused_parameters=True" not in proc.stderr
