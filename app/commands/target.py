"""The message a context-menu command was run on, as far as the bot may use it.

Discord hands the target message over in the interaction itself, text included. The
stored copy wins: it is the one the privacy rules have been applied to (a member who
opted out has their stored messages withheld, without text), so a message the store
holds withheld or empty is never quoted from the payload. The payload's text is used
only when the store has not synced the message yet, and not when its author opted out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from app.commands.resources import Resources
from app.errors import CommandError
from app.interactions.invocation import Invocation
from app.store.models import StoredMessage

NOT_AVAILABLE = "That message is not available to me."


@dataclass(frozen=True, slots=True)
class Target:
    """The target's id, text and time, and its stored copy when the store holds it."""

    id: int
    text: str
    sent: datetime | None
    stored: StoredMessage | None


async def usable_target(resources: Resources, invocation: Invocation) -> Target | None:
    """The invocation's target message, or None when it must not be used (see the module)."""
    target = invocation.target
    if target is None:
        raise CommandError("this command works on a message: use it from a message's Apps menu")
    store = resources.state.store
    found = await store.get_messages([target.id])
    stored = found[0] if found else None
    if stored is None:
        if target.author_id is not None:
            status = await store.privacy_status(target.author_id)
            if status.since is not None:
                return None
        return Target(id=target.id, text=target.content, sent=target.timestamp, stored=None)
    # The front door checked the payload's channel; the stored row is checked too, so a
    # message of a channel the member cannot read is never quoted.
    if stored.withheld or stored.channel_id != invocation.channel_id:
        return None
    if not stored.index_text.strip():
        return None
    return Target(id=stored.id, text=stored.index_text, sent=stored.timestamp, stored=stored)
