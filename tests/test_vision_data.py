"""Image data for vision-language models (utils/data/images.py, utils/cli/vision_checks.py): every format users bring
is read to the same rows, with paths relative to the data file; every mistake is one paragraph at FILE:LINE, exit 2,
before any weights load and with nothing written; TRL's refused defaults are switched off; images are counted."""

from __future__ import annotations

import base64
import json
import logging

import pytest

from conftest import run_main, write_jsonl

Q = "Which colour?"


@pytest.fixture(scope="module")
def pics(tmp_path_factory):
    from PIL import Image

    d = tmp_path_factory.mktemp("pics")
    (d / "img").mkdir()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(d / "img" / "red.png")
    Image.new("RGB", (32, 32), (30, 30, 200)).save(d / "img" / "blue.png")
    whole = (d / "img" / "red.png").read_bytes()
    (d / "img" / "cut.png").write_bytes(whole[:len(whole) // 2])  # opens, does not decode
    (d / "img" / "notes.png").write_text("not a picture")
    return d


def _user(content):
    return [{"role": "user", "content": content}]


def _messages(content, answer="red"):
    return _user(content) + [{"role": "assistant", "content": answer}]


def _pair():
    return {"prompt": _user([{"type": "image"}, {"type": "text", "text": Q}]), "images": ["img/red.png"],
            "chosen": [{"role": "assistant", "content": "red"}], "rejected": [{"role": "assistant", "content": "blue"}]}


def _check(argv_model, data, *extra, method="SFT"):
    """The check phase of main_train on `data`: (train dataset, Needs)."""
    import main_train

    out = data.parent / "never"
    *_, train, _, needs = main_train.check_phase(["--rlhf_type", method, "--model_name_or_path", argv_model,
                                                  "--train_data_path", data, "--output_dir", out, *map(str, extra)])
    assert not out.exists()
    return train, needs


def test_every_image_format_reads_to_the_same_rows(pics, tiny_vlms):
    red = str(pics / "img" / "red.png")
    uri = "data:image/png;base64," + base64.b64encode((pics / "img" / "red.png").read_bytes()).decode()
    text_only = {"messages": _messages("Say red.")}
    formats = {
        "parts": {"messages": _messages([{"type": "image"}, {"type": "text", "text": Q}]), "images": ["img/red.png"]},
        "one_image": {"messages": _messages([{"type": "image"}, {"type": "text", "text": Q}]), "image": "img/red.png"},
        "llava": {"conversations": [{"from": "human", "value": "<image>" + Q}, {"from": "gpt", "value": "red"}],
                  "images": ["img/red.png"]},
        "image_url": {"messages": _messages([{"type": "image_url", "image_url": {"url": "img/red.png"}},
                                             {"type": "text", "text": Q}])},
        "own_path": {"messages": _messages([{"type": "image", "image": red}, {"type": "text", "text": Q}])},
        "trl": {"messages": _messages(Q), "images": ["img/red.png"]},  # images go before the first user text
    }
    for name, row in formats.items():
        plain_row = text_only if name != "llava" else {"conversations": [{"from": "human", "value": "Say red."},
                                                                          {"from": "gpt", "value": "red"}]}
        train, needs = _check(tiny_vlms["smolvlm"], write_jsonl(pics / f"{name}.jsonl", [row, plain_row]))
        first, plain = train[0], train[1]
        assert first["images"] == [red], name
        assert [p["type"] for p in first["messages"][0]["content"]] == ["image", "text"], name
        assert first["messages"][0]["content"][1]["text"] == Q and plain["images"] == [], name
        # the length report counts each image's tokens: <fake><global-img>, 4 x <image>, <fake>
        assert needs.data_report["tokens"]["image tokens (in the prompt)"]["max"] == 7, name
    train, _ = _check(tiny_vlms["smolvlm"], write_jsonl(pics / "uri.jsonl", [
        {"messages": _messages([{"type": "image_url", "image_url": {"url": uri}}, {"type": "text", "text": Q}])}]))
    assert train[0]["images"] == [uri]


def test_text_parts_without_images_are_plain_messages_for_any_model(pics, tiny_dir):
    rows = [{"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi?"}]},
                          {"role": "assistant", "content": [{"type": "text", "text": "Hello."}]}]}]
    train, _ = _check(tiny_dir, write_jsonl(pics / "text_parts.jsonl", rows))
    assert "images" not in train.column_names and train[0]["messages"][0]["content"] == "Hi?"


def _refused(capsys, model, rows_or_path, *extra, method="SFT", tmp=None):
    data = rows_or_path if not isinstance(rows_or_path, list) else write_jsonl(tmp / "bad.jsonl", rows_or_path)
    out = data.parent / "out_refused"
    code = run_main("--rlhf_type", method, "--model_name_or_path", model, "--train_data_path", data,
                    "--output_dir", out, *extra)
    err = capsys.readouterr().err
    assert code == 2 and not out.exists(), err
    assert "Traceback" not in err and err.count("error:") == 1, err
    return err


def test_image_mistakes_are_refused_at_their_row(pics, tiny_vlms, tiny_dir, capsys):
    ok = {"messages": _messages([{"type": "image"}, {"type": "text", "text": Q}]), "images": ["img/red.png"]}
    smol = tiny_vlms["smolvlm"]
    cases = [
        ({**ok, "images": ["img/gone.png"]}, "bad.jsonl:2: the image 'img/gone.png' does not exist"),
        ({**ok, "images": ["img/cut.png"]}, "bad.jsonl:2: the image 'img/cut.png' cannot be decoded"),
        ({**ok, "images": ["img/notes.png"]}, "bad.jsonl:2: the image 'img/notes.png' is not an image"),
        ({**ok, "images": ["img/red.png", "img/blue.png"]}, "bad.jsonl:2: the row has 1 image placeholder but 2 images"),
        ({"messages": _messages("<image><image>" + Q), "images": ["img/red.png"]},
         "the row has 2 image placeholders but 1 image"),
        ({"prompt": Q, "completion": "red", "image": "img/red.png"}, "`prompt` is a plain string in a row with images"),
    ]
    for bad, words in cases:
        rows = [ok, bad] if "prompt" not in bad else [bad]
        assert words in _refused(capsys, smol, rows, tmp=pics), words
    data = write_jsonl(pics / "good.jsonl", [{"messages": _messages("Say red.")}, ok])
    err = _refused(capsys, tiny_dir, data)
    assert "good.jsonl:2: the row has images but the model at" in err and "is a text-only model" in err
    err = _refused(capsys, smol, write_jsonl(pics / "pref.jsonl", [_pair()]), method="ORPO")
    assert "TRL 1.16's ORPO trainer takes no images; expected one of SFT, DPO, KTO, RLOO, GRPO" in err
    err = _refused(capsys, smol, data, "--max_length", "20")
    assert "good.jsonl:2: --max_length 20 would cut this row's image tokens: its prompt is 27 tokens, 7 of them" in err
    assert "--padding_free true is refused with image data" in _refused(capsys, smol, data, "--padding_free", "true")
    assert "resizes every image to one fixed size (28 x 28 pixels)" in _refused(capsys, tiny_vlms["llava"], data,
                                                                                 "--max_pixels", "256")


def test_templates_that_drop_images_or_cannot_mask_are_refused(pics, tiny_vlms, capsys, tmp_path):
    import shutil

    data = write_jsonl(pics / "one.jsonl", [{"messages": _messages("<image>" + Q), "images": ["img/red.png"]}])
    text_template = tmp_path / "text_template"
    shutil.copytree(tiny_vlms["smolvlm"], text_template)
    (text_template / "chat_template.jinja").write_text(
        "{% for m in messages %}{{ m['role'] }}: {% if m['content'] is string %}{{ m['content'] }}{% else %}"
        "{% for p in m['content'] if p['type'] == 'text' %}{{ p['text'] }}{% endfor %}{% endif %}\n{% endfor %}")
    err = _refused(capsys, text_template, data)
    assert "one.jsonl:1: the chat template of" in err and "does not render image parts: the row has 1 image(s)" in err
    no_markers = tmp_path / "no_markers"
    shutil.copytree(tiny_vlms["smolvlm"], no_markers)
    template = (no_markers / "chat_template.jinja").read_text()
    (no_markers / "chat_template.jinja").write_text(template.replace("{% generation %}", "").replace(
        "{% endgeneration %}", ""))
    assert "has no {% generation %} markers" in _refused(capsys, no_markers, data)
    _check(no_markers, data, "--assistant_only_loss", "false")  # the way out it names works


def test_families_that_need_torchvision_are_refused_with_what_to_install(tiny_vlms, pics, capsys, tmp_path,
                                                                          monkeypatch):
    import importlib.util
    import shutil

    qwen = tmp_path / "qwen2vl"
    shutil.copytree(tiny_vlms["smolvlm"], qwen)
    config = json.loads((qwen / "config.json").read_text())
    (qwen / "config.json").write_text(json.dumps({**config, "model_type": "qwen2_vl"}))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torchvision" else real(name, *a))
    data = write_jsonl(pics / "q.jsonl", [{"messages": _messages("<image>" + Q), "images": ["img/red.png"]}])
    err = _refused(capsys, qwen, data)
    assert "(qwen2_vl) needs torchvision for its processor" in err and "pip install torchvision" in err


def test_trl_refused_defaults_are_switched_off_with_a_line(pics, tiny_vlms, caplog):
    caplog.set_level(logging.INFO, logger="main_train")
    _check(tiny_vlms["gemma3"], write_jsonl(pics / "dpo.jsonl", [_pair()]), method="DPO")
    lines = [r.getMessage() for r in caplog.records]
    for name in ("padding_free", "precompute_ref_log_probs"):
        assert f"--{name} switched off: TRL 1.16 does not support it with images" in lines, lines
