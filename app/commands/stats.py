"""/stats: message count, date range and top authors of a channel and its threads."""

from __future__ import annotations

from app.commands.delivery import Responder
from app.commands.resources import Resources
from app.commands.scope import NOTHING_SYNCED, permitted_channels
from app.interactions.invocation import Invocation


async def stats(resources: Resources, invocation: Invocation, reply: Responder) -> str:
    """/stats: message count, date range and top authors of this channel and its threads."""
    # The channel and the threads under it that this member may read.
    channels = sorted(await permitted_channels(resources, invocation))
    result = await resources.state.store.channel_stats(channels)
    if result.count == 0 or result.first is None or result.last is None:
        await reply.send(NOTHING_SYNCED)
        return "empty"
    lines = [
        f"**{result.count:,} messages** from {result.first:%Y-%m-%d} to {result.last:%Y-%m-%d}.",
        "Top authors:",
    ]
    lines += [
        f"{rank}. {author.name or author.author_id}: {author.message_count:,}"
        for rank, author in enumerate(result.top_authors, 1)
    ]
    await reply.send("\n".join(lines))
    return "ok"
