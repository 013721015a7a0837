"""Chat prompts: a system turn, worked examples and the question, through the model's template.

An instruction-tuned model follows instructions best from its system turn and
imitates answers best from example turns of its own format. The template's
markers are special tokens; every turn's content is tokenized with special
tokens off, so nothing quoted from Discord can close a turn or open a new one.
The fixed turns (instructions, examples) come first and are the same for every
question, so llama.cpp reuses their evaluated prefix from one answer to the next.

A model without a chat template (a base model) gets the same turns as plain
text: the system text, then each example as `Question: ... / Answer: ...`.
`prompt_frame` finds the tokens a template puts around a lone user message
(and BOS), for prompts given as one text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from app.llm.model_file import ModelError

if TYPE_CHECKING:
    from llama_cpp import Llama

Role = Literal["system", "user", "assistant"]
Turn = tuple[Role, str]
PromptInput = str | Sequence[Turn]
"""A prompt text (the user's turn) or whole chat turns."""

_MARK = "\u2063TURN{}\u2063"
_SENTINEL = "\u2063PROMPT\u2063"


@dataclass(frozen=True, slots=True)
class PromptFrame:
    """The tokens around the prompt text: BOS, and the chat template's turn markers."""

    prefix: tuple[int, ...]
    suffix: tuple[int, ...]


def encode_turns(
    llama: Llama, template: str, turns: Sequence[Turn], bos: tuple[int, ...]
) -> list[int]:
    """The tokens of `turns` rendered by `template`, contents without special tokens.

    `bos` is prepended when the rendered text does not start with it. The last turn is
    the user's; the template's generation prompt (the assistant's turn opener) follows.
    """
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    eos = llama.token_eos()
    formatter = Jinja2ChatFormatter(
        template=template,
        bos_token=llama.detokenize(list(bos), special=True).decode("utf-8") if bos else "",
        eos_token=llama.detokenize([eos], special=True).decode("utf-8") if eos >= 0 else "",
        add_generation_prompt=True,
    )
    marks = [_MARK.format(i) for i in range(len(turns))]
    messages: list[Any] = [
        {"role": role, "content": mark} for (role, _), mark in zip(turns, marks, strict=True)
    ]
    rendered = formatter(messages=messages).prompt
    tokens: list[int] = []
    rest = rendered
    for (_, content), mark in zip(turns, marks, strict=True):
        before, found, rest = rest.partition(mark)
        if not found:
            raise ValueError("the chat template dropped a turn")
        tokens += llama.tokenize(before.encode("utf-8"), add_bos=False, special=True)
        tokens += llama.tokenize(content.encode("utf-8"), add_bos=False, special=False)
    tokens += llama.tokenize(rest.encode("utf-8"), add_bos=False, special=True)
    if bos and tokens[:1] != list(bos):
        tokens = [*bos, *tokens]
    return tokens


def flatten(turns: Sequence[Turn]) -> str:
    """The turns as completion text for a model without a chat template."""
    parts = []
    for role, content in turns:
        if role == "assistant":
            parts.append(f"Answer: {content}\n\n")
        elif role == "system":
            parts.append(content + "\n\n")
        else:
            parts.append(content + "\n")
    return "".join(parts) + "Answer:"


def prompt_frame(llama: Llama, template: str | None) -> PromptFrame:
    """The tokens that go before and after the prompt text for this model."""
    bos = llama.token_bos()
    wants_bos = llama.metadata.get("tokenizer.ggml.add_bos_token", "true") == "true" and bos >= 0
    if not template:
        return PromptFrame((bos,) if wants_bos else (), ())
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    eos = llama.token_eos()
    formatter = Jinja2ChatFormatter(
        template=template,
        bos_token=llama.detokenize([bos], special=True).decode("utf-8") if bos >= 0 else "",
        eos_token=llama.detokenize([eos], special=True).decode("utf-8") if eos >= 0 else "",
    )
    rendered = formatter(messages=[{"role": "user", "content": _SENTINEL}]).prompt
    if rendered.count(_SENTINEL) != 1:
        raise ModelError("the model's chat template does not show the user's message exactly once")
    before, after = rendered.split(_SENTINEL)
    prefix = llama.tokenize(before.encode("utf-8"), add_bos=False, special=True)
    if wants_bos and prefix[:1] != [bos]:
        prefix.insert(0, bos)
    suffix = llama.tokenize(after.encode("utf-8"), add_bos=False, special=True)
    return PromptFrame(tuple(prefix), tuple(suffix))
