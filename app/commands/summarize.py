"""/summarize and "Summarize from here": a stretch of one channel, summarised part by part.

Which messages:

- `/summarize`: the channel's last `count` messages (default 50). In a thread or a forum
  post, without `count`, the whole thread, up to 500 messages.
- `/summarize since:3d`: the messages since then. `since` bounds the range and `count`
  caps it (default 500); when the range holds more, the latest are kept.
- "Summarize from here" (a message's Apps menu): that message and the ones after it
  in its channel, the first 500.

Messages without text are left out, and the store never lists a withheld one (its author
opted out), so nothing of such a member is summarised, quoted or named.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from app.commands.delivery import Responder
from app.commands.resources import Resources
from app.commands.scope import NOTHING_SYNCED, quotes
from app.commands.target import NOT_AVAILABLE, usable_target
from app.discord.snowflakes import time_snowflake
from app.errors import CommandError
from app.interactions.commands import SUMMARIZE_COUNT_DEFAULT, SUMMARIZE_COUNT_MAX
from app.interactions.invocation import Invocation
from app.llm.prompts import NO_ANSWER, Prompt, map_reduce_summary
from app.retrieval.query import parse_when
from app.retrieval.search import jump_link
from app.store.db import Store
from app.store.models import StoredMessage


async def summarize(resources: Resources, invocation: Invocation, reply: Responder) -> str:
    """/summarize: recent messages, those since a time, or a whole thread (see the module)."""
    store = resources.state.store
    channel_id = invocation.channel_id
    count = invocation.options.get("count")
    limit = int(count) if count is not None else None
    since = invocation.options.get("since")
    if isinstance(since, str):
        start = since_time(since, datetime.now(UTC))
        cap = limit or SUMMARIZE_COUNT_MAX
        found = await store.messages_from(channel_id, id_bound(start), cap, latest=True)
        period = f"since {_when(start)}"
        title = f"the {'last ' if len(found) == cap else ''}{{n}} messages {period}"
        nothing = f"Nothing was said here {period}."
    elif limit is None and await _in_thread(store, channel_id):
        found = await store.recent_messages(channel_id, SUMMARIZE_COUNT_MAX)
        capped = len(found) == SUMMARIZE_COUNT_MAX
        title = "the last {n} messages of this thread" if capped else "this thread's {n} messages"
        nothing = "Nothing in this thread has text I can summarize."
    else:
        found = await store.recent_messages(channel_id, limit or SUMMARIZE_COUNT_DEFAULT)
        title = "the last {n} messages"
        nothing = "None of the recent messages here has text I can summarize."
    return await _summarise(resources, invocation, reply, found, title, nothing)


async def summarize_from_here(
    resources: Resources, invocation: Invocation, reply: Responder
) -> str:
    """The target message and the ones after it, up to 500, summarised ("Summarize from here")."""
    target = await usable_target(resources, invocation)
    if target is None:
        await reply.send(NOT_AVAILABLE)
        return "unavailable"
    found = await resources.state.store.messages_from(
        invocation.channel_id, target.id, SUMMARIZE_COUNT_MAX
    )
    capped = len(found) == SUMMARIZE_COUNT_MAX
    title = (
        "the first {n} messages from this one on" if capped else "the {n} messages from this one on"
    )
    nothing = "I have not synced that message yet; try again after the next sync."
    return await _summarise(resources, invocation, reply, found, title, nothing)


def since_time(value: str, now: datetime) -> datetime:
    """`since` as a time; a value the front door let through but that fails here is the
    member's error."""
    try:
        return parse_when(value, now)
    except ValueError as exc:
        raise CommandError(f"`since` is not a time I can read: {exc}") from None


def id_bound(when: datetime) -> int:
    """The smallest message id sent at `when`, clamped to the 64-bit ids the database holds."""
    return max(0, min(time_snowflake(when.timestamp()), 2**63 - 1))


def _when(start: datetime) -> str:
    start = start.astimezone(UTC)
    return (
        f"{start:%Y-%m-%d}"
        if start.time() == datetime.min.time()
        else f"{start:%Y-%m-%d %H:%M} UTC"
    )


async def _in_thread(store: Store, channel_id: str) -> bool:
    channel = await store.get_channel(channel_id)
    return channel is not None and channel.is_thread


async def _summarise(
    resources: Resources,
    invocation: Invocation,
    reply: Responder,
    found: Sequence[StoredMessage],
    title: str,
    nothing: str,
) -> str:
    """Summarise the messages with text among `found`; `title` names them, with `{n}`."""
    messages = [m for m in found if m.index_text.strip()]
    if not messages:
        store = resources.state.store
        synced = await store.count_live([invocation.channel_id]) > 0
        await reply.send(nothing if synced else NOTHING_SYNCED)
        return "empty"
    named = title.format(n=len(messages))
    await reply.progress(f"Summarizing {named}…")
    generator = resources.generator

    async def complete(prompt: Prompt) -> str:
        result = await generator.generate(
            prompt.text, max_tokens=prompt.max_tokens, stop=prompt.stop
        )
        return result.text

    summary = await map_reduce_summary(
        await quotes(resources, messages),
        complete=complete,
        count_tokens=generator.count_tokens,
        n_ctx=generator.n_ctx,
    )
    first, last = messages[0], messages[-1]
    header = (
        f"**Summary of {named}** "
        f"({first.timestamp:%Y-%m-%d} to {last.timestamp:%Y-%m-%d}, "
        f"from [here]({jump_link(first)}) to [here]({jump_link(last)})):"
    )
    await reply.send(header + "\n" + (summary.text or NO_ANSWER))
    return "ok"
