from __future__ import annotations

import re

import pytest

from app.commands.delivery import (
    EPHEMERAL,
    MESSAGE_LIMIT,
    SUPPRESS_EMBEDS,
    message_body,
    split_message,
)


def test_short_text_is_one_part() -> None:
    assert split_message("hello") == ["hello"]


def test_every_part_fits_and_nothing_is_lost() -> None:
    paragraphs = [f"Paragraph {i}: " + "word " * 90 for i in range(30)]
    text = "\n\n".join(p.strip() for p in paragraphs)
    parts = split_message(text)
    assert len(parts) > 1
    assert all(len(p) <= MESSAGE_LIMIT for p in parts)
    assert re.sub(r"\s+", " ", " ".join(parts)) == re.sub(r"\s+", " ", text)
    # Cuts fall at paragraph boundaries when there are some.
    assert all(p.startswith("Paragraph") for p in parts)


def test_links_are_never_cut() -> None:
    link = "https://discord.com/channels/1/2/3456789012345678"
    text = ("filler " * 280) + " ".join([link] * 40)
    for part in split_message(text):
        for token in part.split():
            if token.startswith("https://"):
                assert token == link


def test_markdown_links_survive_whole() -> None:
    link = "[source 12](https://discord.com/channels/1/2/3456789012345678)"
    text = "x" * 1990 + " " + link
    parts = split_message(text)
    assert parts[-1].endswith(link)


def test_code_blocks_are_closed_and_reopened() -> None:
    code = "\n".join(f"print({i})  # line {i}" for i in range(200))
    text = "Here is the code:\n```python\n" + code + "\n```\nDone."
    parts = split_message(text)
    assert len(parts) > 1
    for part in parts:
        assert len(part) <= MESSAGE_LIMIT
        assert part.count("```") % 2 == 0, part[:80]
    assert parts[1].startswith("```python\n")


def test_unbroken_text_is_cut_hard() -> None:
    parts = split_message("y" * 5000)
    assert "".join(parts) == "y" * 5000
    assert all(len(p) <= MESSAGE_LIMIT for p in parts)


def test_tiny_limit_is_refused() -> None:
    with pytest.raises(ValueError):
        split_message("abc", limit=10)


def test_message_body_never_mentions_nor_unfurls() -> None:
    body = message_body("@everyone look <@&123> <@456>")
    assert body["allowed_mentions"] == {"parse": []}
    assert body["flags"] == SUPPRESS_EMBEDS
    assert message_body("x", flags=EPHEMERAL)["flags"] == EPHEMERAL | SUPPRESS_EMBEDS
