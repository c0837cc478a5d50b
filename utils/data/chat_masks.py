"""Assistant-only loss on any chat template that renders a conversation consistently with its prefixes.

TRL masks assistant turns through `{% generation %}` markers in the template, and for templates without them it
swaps in a patched copy of the families it knows (Llama-3, Gemma, Qwen, Phi-3, ...). Every other template (most
fine-tunes, SmolLM2's ChatML with its default system prompt, Mistral's `[INST]`) makes TRL refuse SFT on `messages`
after the weights have loaded. For those we work the masks out ourselves, in the check phase, row by row:

- the whole conversation is rendered once (`full`); it is what the model trains on;
- for each assistant turn, the conversation before it rendered with the generation prompt (what the model sees
  when it is asked to answer) must be a prefix of `full`: the turn starts there;
- the conversation up to and including the turn, rendered alone, agrees with `full` up to where the turn ends (its
  end-of-turn token and what the template writes before the next turn, e.g. a newline): the turn ends there. The
  part must hold the turn's content (a template that drops or rewrites earlier turns, such as their reasoning,
  does not) and end in a special token, or the model would not learn to stop.

A row that breaks one of these is refused at its FILE:LINE before any weights load, saying what to do. The result is
TRL's own input format: `input_ids` and `assistant_masks` (1 on the tokens of assistant turns), which SFTTrainer
turns into labels as it does for templates with markers.

TRL 1.16 (`trl.chat_template_utils.get_training_chat_template`); masks for any template were asked for in
huggingface/trl#4879. Drop this when TRL masks templates it has no patched copy of.
"""

from __future__ import annotations

from utils.core.errors import UserError
from utils.data.schemas import one_line
from utils.data.tool_rows import render_form, row_tools


class Inconsistent(Exception):
    """A row the template renders inconsistently: (what is wrong, what to do)."""

    def __init__(self, what: str, expected: str):
        super().__init__(what)
        self.what, self.expected = what, expected


def trl_masks_template(tokenizer) -> bool:
    """True when TRL masks assistant turns on this tokenizer's template itself (markers, or a template it patches)."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    template = tokenizer.chat_template
    if template is None:
        return True  # no template: the data check refuses conversational rows before this matters
    if has_generation_markers(template):
        return True
    try:
        get_training_chat_template(tokenizer)
    except ValueError:  # "patching is not supported for this template"
        return False
    return True


def wanted(assistant_only_loss: bool | None, columns, tokenizer) -> bool:
    """Whether the data needs our masks: `messages` rows with assistant-only loss on (None: on, SFT's default) and a
    template TRL cannot mask."""
    return assistant_only_loss is not False and "messages" in columns and tokenizer is not None \
        and not trl_masks_template(tokenizer)


def _common_prefix(a: str, b: str) -> int:
    if a.startswith(b):  # the usual case, in C: the turn rendered last reads as inside the conversation
        return len(b)
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def assistant_spans(messages: list[dict], render) -> tuple[str, list[tuple[int, int]]]:
    """(the rendered conversation, [(start, end)] character spans of its assistant turns). `render(messages,
    generation_prompt)` applies the template. Raises Inconsistent."""
    full = render(messages, False)
    spans = []
    for i, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        n = i + 1
        if i == 0:
            raise Inconsistent("turn 1 is an assistant turn with nothing before it to answer",
                               "a conversation whose first assistant turn follows a user (or system) turn")
        prompt = render(messages[:i], True)
        if not full.startswith(prompt):
            at = _common_prefix(full, prompt)
            raise Inconsistent(
                f"the chat template renders the conversation before turn {n} (an assistant turn) differently when it "
                f"is the prompt for an answer ({prompt[at:at + 40]!r}...) than inside the whole conversation "
                f"({full[at:at + 40]!r}...), so the loss of that turn would be learned in a context the model never "
                "sees when it answers", "a chat template whose generation prompt is a prefix of the conversation; or "
                "split the conversation into prompt/completion rows, one per assistant turn")
        alone = render(messages[:n], False)
        start, end = len(prompt), _common_prefix(full, alone)
        content = message.get("content")
        texts = [content.strip()] if isinstance(content, str) and content.strip() else []
        texts += [call["function"]["name"] for call in message.get("tool_calls") or []]
        if end <= start or any(text not in full[start:end] for text in texts):
            raise Inconsistent(
                f"the chat template renders turn {n} (an assistant turn) differently when the conversation ends there "
                f"({alone[start:start + 60]!r}...) than when more turns follow ({full[start:start + 60]!r}...), e.g. it "
                "drops earlier turns' reasoning", "a chat template that renders every turn the same whatever follows "
                "it; or split the conversation into prompt/completion rows, one per assistant turn (then each answer "
                "is rendered as the last turn)")
        spans.append((start, end))
    if not spans:
        raise Inconsistent("the conversation has no assistant turn to train on",
                           "at least one turn with role 'assistant'")
    return full, spans


def tokens_and_mask(tokenizer, text: str, spans, stop_ids: set[int]) -> tuple[list[int], list[int]]:
    """Token ids of `text` (no special tokens added: the template wrote its own) and a 0/1 mask, 1 on the tokens that
    lie inside a span (a span's end can fall inside the next turn's first token, e.g. `<|end|>` vs `<|user|>`: that
    token is not the turn's). Raises Inconsistent when a turn has no token or does not end in an end-of-turn token."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    mask = [0] * len(ids)
    for n, (start, end) in enumerate(spans, 1):
        inside = [j for j, (a, b) in enumerate(offsets) if start <= a and b <= end and a < b]
        if not inside:
            raise Inconsistent(f"assistant turn {n} has no token of its own (its text merges into the tokens around it)",
                               "assistant turns with content")
        for j in inside:
            mask[j] = 1
        last = [j for j in inside if text[offsets[j][0]:offsets[j][1]].strip() or ids[j] in stop_ids]
        if not last or ids[last[-1]] not in stop_ids:
            tail = text[offsets[inside[-1]][0]:end]
            raise Inconsistent(
                f"the chat template ends assistant turn {n} without an end-of-turn token (it ends with {tail!r}), so "
                "the model would never learn to stop", "a template that closes each assistant turn with a special "
                "token (such as the EOS token); or prompt/completion rows")
    return ids, mask


def stop_ids(tokenizer) -> set[int]:
    """Tokens that can close a turn: the tokenizer's special and added tokens (EOS, <|im_end|>, <|eot_id|>, ...)."""
    ids = set(tokenizer.get_added_vocab().values())
    ids.update(i for i in tokenizer.all_special_ids if i is not None)
    return ids


def mask_row(messages: list[dict], tokenizer, stops: set[int], tools=None) -> dict:
    """`messages` in render form (utils/data/tool_rows.render_form), rendered with the tool schemas `tools`."""
    def render(msgs, generation_prompt):
        return tokenizer.apply_chat_template(msgs, tools=tools, tokenize=False, add_generation_prompt=generation_prompt)

    text, spans = assistant_spans(messages, render)
    ids, mask = tokens_and_mask(tokenizer, text, spans, stops)
    return {"input_ids": ids, "assistant_masks": mask}


def add_masks(dataset, tokenizer, where):
    """`dataset` (rows with `messages`, in stored order: row i is at `where(i)`) -> `input_ids` + `assistant_masks`.
    Raises UserError naming the row."""
    stops = stop_ids(tokenizer)
    name = getattr(tokenizer, "name_or_path", "") or "the tokenizer"

    def one(row, i):
        try:
            return mask_row(render_form(row["messages"]), tokenizer, stops, row_tools(row))
        except Inconsistent as e:
            raise UserError(f"{where(i)}: {e.what} (chat template of {name}, which has no {{% generation %}} markers, "
                            f"so the assistant turns are found by rendering the conversation turn by turn); expected "
                            f"{e.expected}.") from None
        except Exception as e:  # a template may raise anything (jinja2's TemplateError, KeyError, TypeError, ...)
            raise UserError(f"{where(i)}: the chat template of {name} refused this row: {type(e).__name__}: "
                            f"{one_line(e)}; expected a row that template accepts.") from None

    return dataset.map(one, with_indices=True, remove_columns=dataset.column_names,
                       desc="Masking assistant turns (template without generation markers)")
