"""Rows with images: read from the formats users have, checked in the check phase, stored, and handed to TRL.

Accepted, in conversational rows (a ShareGPT `conversations` becomes `messages` first):
- content parts `{"type": "image"}` taking the row's `images` list (or its one `image`) in order, or naming their
  own file: `{"type": "image", "image": PATH}` (also `path` / `url`);
- OpenAI's `{"type": "image_url", "image_url": {"url": PATH or "data:image/...;base64,..."}}`;
- LLaVA / ShareGPT strings with `<image>` placeholders, the files in `images` / `image`;
- TRL's own form: string contents and an `images` list, the images then put before the first user turn's text.
Relative paths are relative to the data file. Rows without images can sit beside rows with them.

Stored form (Arrow keeps one type per column): every content a string, each image a `<image>` placeholder in it,
`images` a list of absolute paths (or data: URIs). `as_parts` turns the dataset into TRL's form when it is built:
contents as lists of `{"type": "text" | "image"}` parts, `images` a list in every row.

Each image is opened and decoded here (a truncated file decodes to an error, not only opens), once per file."""

from __future__ import annotations

import base64
import io
import os

from utils.data.schemas import BadRow, json_type, one_line

IMAGE = "<image>"
FIELDS = ("prompt", "completion", "chosen", "rejected", "messages")
_PART = ('content parts {"type": "text", "text": ...} and {"type": "image"} (or {"type": "image_url", "image_url": '
         '{"url": PATH}})')
_decoded: dict = {}  # image (a file: with its mtime and size) -> None (it decodes) or what is wrong with it


def wanted(row: dict) -> bool:
    """The row gives images (an `images` / `image` field, or image parts in a conversation)."""
    if not isinstance(row, dict):
        return False  # the row check names what it is
    if row.get("images") is not None or row.get("image") is not None:
        return True
    return any(isinstance(m, dict) and isinstance(m.get("content"), list)
               for f in FIELDS if isinstance(row.get(f), list) for m in row[f])


def normalize(row: dict, base: str) -> dict:
    """The row in the stored form; `base`: the data file's folder. Raises BadRow (what is wrong, what was expected)."""
    given = _listed(row)
    out = {k: v for k, v in row.items() if k not in ("image", "images")}
    walk = _Walk(list(given))
    for f in FIELDS:
        value = row.get(f)
        if isinstance(value, str) and (given or IMAGE in value):
            raise BadRow(f"`{f}` is a plain string in a row with images", "conversational rows (lists of "
                         '{"role", "content"} messages) when images come with the row: a chat template places them')
        if isinstance(value, list):
            out[f] = [walk.message(m, f, i) for i, m in enumerate(value, 1)]
    if walk.taken == 0 and walk.pending:  # TRL's form: the images go before the first user turn's text
        first = next((m for f in FIELDS if isinstance(out.get(f), list) for m in out[f]
                      if isinstance(m, dict) and m.get("role") == "user"), None)
        if first is None:
            raise BadRow(f"the row has {len(given)} image(s) but no user turn to show them in",
                         "images placed in a user turn")
        first["content"] = IMAGE * len(given) + str(first.get("content") or "")
        walk.ordered, walk.pending = list(given) + walk.ordered, []
    elif walk.taken != len(given):
        placed, n_images = walk.taken + walk.own, len(given) + walk.own
        raise BadRow(f"the row has {placed} image placeholder{'s' if placed != 1 else ''} but {n_images} "
                     f"image{'s' if n_images != 1 else ''}", "one `<image>` (or image part) per file in `images`")
    for field in ("completion", "chosen", "rejected"):
        if isinstance(out.get(field), list) and any(IMAGE in str(m.get("content")) for m in out[field]
                                                    if isinstance(m, dict)):
            raise BadRow(f"`{field}` holds an image", "images in the prompt (user turns) only: the model reads them, "
                         "it does not write them")
    if walk.ordered:  # a row whose parts were text only is stored as plain messages
        out["images"] = [_resolve(i, base) for i in walk.ordered]
    return out


class _Walk:
    """The images of a row in the order its placeholders come: `pending` (the row's `images`) taken one per
    placeholder or `{"type": "image"}` part (`taken`), parts that name their own file counted in `own`."""

    def __init__(self, pending: list):
        self.pending, self.ordered, self.taken, self.own = pending, [], 0, 0

    def take(self) -> None:
        self.taken += 1
        if self.pending:
            self.ordered.append(self.pending.pop(0))

    def message(self, m, field: str, i: int):
        """One message with its content as a string, each image a placeholder."""
        if not isinstance(m, dict):
            return m
        content = m.get("content")
        if isinstance(content, str):
            for _ in range(content.count(IMAGE)):
                self.take()
            return m
        if not isinstance(content, list):
            return m
        text = []
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                text.append(part["text"])
            elif kind in ("image", "image_url"):
                own = part.get("image_url") if kind == "image_url" else (part.get("image") or part.get("path")
                                                                         or part.get("url"))
                own = own.get("url") if isinstance(own, dict) else own
                if kind == "image_url" and not isinstance(own, str):
                    raise BadRow(f"`{field}` message {i} has an image_url part without a url", _PART)
                if isinstance(own, str):
                    self.ordered.append(own)
                    self.own += 1
                else:
                    self.take()
                text.append(IMAGE)
            else:
                raise BadRow(f"`{field}` message {i} has a content part {json_type(part)}"
                             f"{f' of type {kind!r}' if kind else ''}", _PART)
        return {**m, "content": "".join(text)}


def _listed(row: dict) -> list:
    images, image = row.get("images"), row.get("image")
    if images is not None and image is not None:
        raise BadRow("the row has both `images` and `image`", "one of them: `images` (a list) or `image` (one file)")
    if image is not None:
        images = [image]
    if images is None:
        return []
    if not isinstance(images, list) or not all(isinstance(i, str) and i.strip() for i in images):
        raise BadRow(f"`images` is {json_type(images)} or holds something other than paths",
                     'a list of image file paths (relative to the data file, or absolute), or "data:" URIs')
    return list(images)


def _resolve(image: str, base: str) -> str:
    """The image as stored (an absolute path, or the data: URI), decoded once; BadRow when it cannot be."""
    if image.startswith("data:"):
        where = image
    else:
        where = os.path.normpath(os.path.join(base, os.path.expanduser(image)))
    try:  # a file is decoded again once it changed
        key = where if where.startswith("data:") else (where, os.stat(where).st_mtime_ns, os.stat(where).st_size)
    except OSError:
        key = (where, None)
    if key not in _decoded:
        _decoded[key] = _problem(where)
    problem = _decoded[key]
    if problem:
        shown = image if len(image) < 80 else image[:60] + "..."
        raise BadRow(f"the image {shown!r} {problem}", "image files (PNG, JPEG, ...) that exist and decode, paths "
                     "relative to the data file or absolute")
    return where


def _problem(where: str) -> str | None:
    from PIL import Image, UnidentifiedImageError

    try:
        if where.startswith("data:"):
            head, _, data = where.partition(",")
            if ";base64" not in head:
                return "is a data: URI that is not base64"
            source = io.BytesIO(base64.b64decode(data, validate=False))
        elif not os.path.isfile(where):
            return f"does not exist ({where})"
        else:
            source = where
        with Image.open(source) as img:
            img.load()
    except UnidentifiedImageError:
        return "is not an image"
    except Image.DecompressionBombError as e:
        return f"is too large to decode safely ({e})"
    except (OSError, ValueError, SyntaxError) as e:
        return f"cannot be decoded ({type(e).__name__}: {e})"
    return None


# ------------------------------------------------------------------------------------------ TRL's form
def as_parts(dataset):
    """Every conversation's contents as parts (`<image>` -> {"type": "image"}) and `images` a list in every row."""
    columns = [c for c in FIELDS if c in dataset.column_names]

    def parts(batch):
        out = {c: [[{**m, "content": split(m["content"])} for m in conv] if conv is not None else None
                   for conv in batch[c]] for c in columns}
        out["images"] = [i or [] for i in batch["images"]]
        return out

    return dataset.map(parts, batched=True, desc="Placing images in the conversations")


def split(content: str) -> list[dict]:
    out = []
    for i, text in enumerate(content.split(IMAGE)):
        if i:
            out.append({"type": "image", "text": None})
        if text:
            out.append({"type": "text", "text": text})
    return out


def template_parts(messages: list) -> list:
    """Messages as a processor's chat template takes them: each content a list of parts without Arrow's null keys
    (a stored string split at its `<image>` placeholders)."""
    out = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            content = split(content)
        if isinstance(content, list):
            m = {**m, "content": [{k: v for k, v in p.items() if v is not None} for p in content]}
        out.append(m)
    return out


# ---------------------------------------------------------------------- counted with the model's processor
class ProcessorText:
    """What utils.data.lengths renders and counts with, for a vision-language model: the processor's chat template
    over the stored rows (each `<image>` an image part), its tokenizer's counts, plus each row's image tokens."""

    def __init__(self, processor):
        self.processor, self.tokenizer = processor, processor.tokenizer
        self.name_or_path = getattr(self.tokenizer, "name_or_path", "")
        self.chat_template = getattr(processor, "chat_template", None) or self.tokenizer.chat_template
        self.added = {}  # (image sizes, special tokens) -> tokens the images add

    def apply_chat_template(self, messages, tools=None, tokenize=False, add_generation_prompt=False):
        return self.processor.apply_chat_template(template_parts(messages), tools=tools, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)

    def __call__(self, texts, add_special_tokens=True):
        return self.tokenizer(texts, add_special_tokens=add_special_tokens)

    def image_tokens(self, text: str, images: list, special: bool) -> int:
        """Tokens the images of one rendered prompt add (the processor expands each placeholder). BadRow when the
        chat template dropped the image parts (a text-only template renders none) or the processor refuses them."""
        token = getattr(self.processor, "boi_token", None) or getattr(self.processor, "image_token", None)
        if token and text.count(token) < len(images):
            raise BadRow(f"the chat template of {self.name_or_path or 'the model'} does not render image parts: the "
                         f"row has {len(images)} image(s) but its rendering holds {text.count(token)} {token!r}",
                         'a template that places {"type": "image"} content parts (the processor\'s chat template)')
        key = (tuple(map(size_of, images)), special)  # what the expansion depends on: the images' sizes
        if key not in self.added:
            plain = len(self.tokenizer(text, add_special_tokens=special)["input_ids"])
            try:
                full = self.processor(text=[text], images=[images], add_special_tokens=special)["input_ids"][0]
            except (ValueError, OSError, TypeError) as e:
                raise BadRow(f"the processor of {self.name_or_path or 'the model'} refused the row's images: "
                             f"{type(e).__name__}: {one_line(e)}", "images and placeholders the processor takes") from e
            self.added[key] = len(full) - plain
        return self.added[key]


def size_of(image: str) -> tuple[int, int]:
    """(width, height) of an image file or data: URI, from its header (checked to decode in the row check)."""
    from PIL import Image

    source = io.BytesIO(base64.b64decode(image.partition(",")[2])) if image.startswith("data:") else image
    with Image.open(source) as img:
        return img.size
