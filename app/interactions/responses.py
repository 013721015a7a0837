"""The JSON bodies the front door answers with, the constant ones encoded once."""

from __future__ import annotations

import json
from typing import Final

# Discord's interaction callback types.
PONG: Final = 1
CHANNEL_MESSAGE: Final = 4
DEFERRED_CHANNEL_MESSAGE: Final = 5
EPHEMERAL: Final = 1 << 6
# No link previews in anything the bot says (see app.commands.delivery).
SUPPRESS_EMBEDS: Final = 1 << 2

PONG_BODY: Final = b'{"type":1}'
DEFERRED_BODY: Final = b'{"type":5}'
DEFERRED_EPHEMERAL_BODY: Final = b'{"type":5,"data":{"flags":64}}'

UNAVAILABLE_TEXT: Final = "The assistant is temporarily unavailable, try again in a minute."
BUSY_TEXT: Final = "I'm busy answering other questions right now; try again in a minute."


def _dump(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def deferred(ephemeral: bool) -> bytes:
    """The 'thinking...' acknowledgement, private to the user when `ephemeral`."""
    return DEFERRED_EPHEMERAL_BODY if ephemeral else DEFERRED_BODY


def ephemeral_message(content: str) -> bytes:
    """An immediate reply only the invoking user sees; it never mentions anyone."""
    return _dump(
        {
            "type": CHANNEL_MESSAGE,
            "data": {
                "content": content,
                "flags": EPHEMERAL | SUPPRESS_EMBEDS,
                "allowed_mentions": {"parse": []},
            },
        }
    )


def rate_limited(retry_after: float) -> bytes:
    """The reply to a user over their per-minute allowance."""
    seconds = max(1, int(retry_after + 0.999))
    unit = "second" if seconds == 1 else "seconds"
    return ephemeral_message(f"You are sending commands too fast; try again in {seconds} {unit}.")


def error(message: str) -> bytes:
    """A JSON error body for a request that is not an answerable interaction."""
    return _dump({"error": message})


UNAVAILABLE_BODY: Final = ephemeral_message(UNAVAILABLE_TEXT)
BUSY_BODY: Final = ephemeral_message(BUSY_TEXT)
