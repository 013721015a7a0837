"""Splitting text into Discord-sized messages without breaking code blocks or links."""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol

from app.discord.errors import DeliveryUncertain
from app.discord.files import File
from app.jobs import INTERACTION_TOKEN_LIFETIME, followups_key

if TYPE_CHECKING:
    from redis.asyncio import Redis

logger = logging.getLogger(__name__)

MESSAGE_LIMIT: Final = 2000
# Shown under the first part when Discord may have lost a follow-up (subtext markdown).
PART_MISSING_NOTE: Final = (
    "\n-# Discord lost the connection while the rest of this answer was being sent;"
    " part of it may be missing."
)
# Nothing the bot writes may ping anyone: not @everyone, not a role, not a user.
NO_MENTIONS: Final[dict[str, list[str]]] = {"parse": []}
EPHEMERAL: Final = 1 << 6
# No link previews: Discord fetches a previewed URL itself, so a link planted in the model's
# text could carry data out without anyone clicking it. Every message the bot sends has it.
SUPPRESS_EMBEDS: Final = 1 << 2

_LINK = re.compile(r"<?https?://\S+>?|\[[^\]\n]*\]\(<?https?://[^)\s]+>?\)")
_FENCE = "```"


def message_body(content: str, *, flags: int = 0) -> dict[str, Any]:
    """A webhook message body that can never mention anyone nor unfurl a link."""
    return {
        "content": content,
        "allowed_mentions": NO_MENTIONS,
        "flags": flags | SUPPRESS_EMBEDS,
    }


def split_message(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Split text into parts of at most `limit` characters.

    Cuts prefer a paragraph break, then a line break, then a space, and never
    fall inside a link. A cut inside a fenced code block closes the fence in
    one part and reopens it (with its language) in the next, so every part
    renders on its own.
    """
    if limit < 100:
        raise ValueError("limit too small to split safely")
    text = text.strip()
    parts: list[str] = []
    reopen = ""
    while text:
        text = reopen + text
        if len(text) <= limit:
            parts.append(text)
            break
        # Room for a closing fence if the cut lands inside a code block.
        window = limit - len(_FENCE) - 1
        cut = _best_cut(text, window)
        head = text[:cut].rstrip()
        fence = _open_fence(head)
        if fence is not None:
            head += "\n" + _FENCE
            reopen = fence + "\n"
        else:
            reopen = ""
        parts.append(head)
        text = text[cut:].lstrip("\n ")
    return [p for p in parts if p.strip() and p.strip() != _FENCE]


def _best_cut(text: str, window: int) -> int:
    """Index at which to cut text so that the head fits in `window` characters."""
    protected = [(m.start(), m.end()) for m in _LINK.finditer(text, 0, window + 600)]

    def safe(index: int) -> bool:
        return not any(start < index < end for start, end in protected)

    for separator in ("\n\n", "\n", " "):
        index = text.rfind(separator, 0, window + 1)
        while index > window // 4:
            if safe(index):
                return index
            index = text.rfind(separator, 0, index)
    # One unbroken run: cut before a link that straddles the window, else at the window.
    for start, end in protected:
        if start < window < end and start > 0:
            return start
    return window


def _open_fence(text: str) -> str | None:
    """The opening fence (with its language) still open at the end of text, if any."""
    opening: str | None = None
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped.startswith(_FENCE):
            opening = None if opening is not None else stripped.split()[0]
    return opening


class Responder(Protocol):
    """Where a command's answer goes: Discord (Reply) or a terminal."""

    async def progress(self, text: str) -> bool: ...

    async def send(self, text: str) -> None: ...

    async def send_file(self, text: str, file: File) -> None: ...


class CollectedReply:
    """A Responder that keeps the final text and files, for answers printed in a terminal."""

    def __init__(self) -> None:
        self.text = ""
        self.files: list[File] = []

    async def progress(self, text: str) -> bool:
        return False

    async def send(self, text: str) -> None:
        self.text = text

    async def send_file(self, text: str, file: File) -> None:
        self.text = text
        self.files.append(file)


class Sender(Protocol):
    """The REST calls a reply needs (DiscordRest provides them)."""

    async def edit_original_response(
        self,
        application_id: int | str,
        token: str,
        body: Mapping[str, Any],
        files: Sequence[File] = (),
    ) -> dict[str, Any]: ...

    async def create_followup(
        self, application_id: int | str, token: str, body: Mapping[str, Any]
    ) -> dict[str, Any]: ...

    async def edit_followup(
        self, application_id: int | str, token: str, message_id: str, body: Mapping[str, Any]
    ) -> dict[str, Any]: ...


class FollowupLedger(Protocol):
    """Remembers the follow-up messages already sent for an interaction, across retries."""

    async def sent(self, interaction_id: str) -> list[str]: ...

    async def record(self, interaction_id: str, index: int, message_id: str) -> None: ...


class RedisFollowupLedger:
    """A FollowupLedger in Redis, kept as long as the interaction token lives."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def sent(self, interaction_id: str) -> list[str]:
        key = followups_key(interaction_id)
        values: list[bytes] = await self._redis.lrange(key, 0, -1)  # type: ignore[misc]
        return [v.decode() if isinstance(v, bytes) else str(v) for v in values]

    async def record(self, interaction_id: str, index: int, message_id: str) -> None:
        key = followups_key(interaction_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.rpush(key, message_id)
            pipe.expire(key, INTERACTION_TOKEN_LIFETIME)
            await pipe.execute()


class Reply:
    """Delivers one command's answer into its deferred message.

    The first part replaces the "thinking..." message; further parts become
    follow-ups. A retried job edits the follow-ups it already sent instead of
    sending new ones, so the user sees exactly one answer.
    """

    def __init__(
        self,
        sender: Sender,
        ledger: FollowupLedger,
        *,
        interaction_id: str,
        application_id: str,
        token: str,
        ephemeral: bool,
        min_edit_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sender = sender
        self._ledger = ledger
        self._interaction_id = interaction_id
        self._application_id = application_id
        self._token = token
        self._flags = EPHEMERAL if ephemeral else 0
        self._min_edit_interval = min_edit_interval
        self._clock = clock
        self._last_edit = -math.inf
        self.delivered = False

    async def progress(self, text: str) -> bool:
        """Show a partial answer, at most once per interval; True when it was sent."""
        now = self._clock()
        if self.delivered or now - self._last_edit < self._min_edit_interval or not text.strip():
            return False
        self._last_edit = now
        shown = text if len(text) <= MESSAGE_LIMIT - 2 else text[: MESSAGE_LIMIT - 2] + " …"
        await self._sender.edit_original_response(
            self._application_id, self._token, message_body(shown)
        )
        return True

    async def send(self, text: str) -> None:
        """Deliver the final answer, split across messages when it is long."""
        await self._deliver(text, ())

    async def send_file(self, text: str, file: File) -> None:
        """Deliver the final answer with `file` attached to its first message.

        The file rides on the edit of the original response, never on a follow-up: an edit
        replaces the message's attachments, so a retried job shows the file once, not twice.
        """
        await self._deliver(text, (file,))

    async def _deliver(self, text: str, files: Sequence[File]) -> None:
        parts = split_message(text) or ["(empty answer)"]
        await self._sender.edit_original_response(
            self._application_id, self._token, message_body(parts[0]), files
        )
        already = await self._ledger.sent(self._interaction_id)
        for index, part in enumerate(parts[1:]):
            body = message_body(part, flags=self._flags)
            if index < len(already):
                # Whether a message is ephemeral is fixed when it is sent; an edit may not say.
                edit = message_body(part)
                await self._sender.edit_followup(
                    self._application_id, self._token, already[index], edit
                )
            else:
                try:
                    sent = await self._sender.create_followup(
                        self._application_id, self._token, body
                    )
                except DeliveryUncertain as exc:
                    # Posting again could show the part twice; say what may be missing instead.
                    logger.warning("follow-up %d may not have arrived: %s", index + 1, exc)
                    await self._sender.edit_original_response(
                        self._application_id, self._token, message_body(_noted(parts[0]))
                    )
                    break
                await self._ledger.record(self._interaction_id, index, str(sent["id"]))
        self.delivered = True


def _noted(text: str) -> str:
    """`text` with the missing-part note under it, cut to fit one message."""
    room = MESSAGE_LIMIT - len(PART_MISSING_NOTE)
    if len(text) > room:
        text = text[: room - 2] + " …"
    return text + PART_MISSING_NOTE
