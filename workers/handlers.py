"""Command handlers, by command name: each answers one invocation through its Reply."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from app.delivery import Reply
from app.interactions.commands import ASK, SEARCH, STATS, SUMMARIZE, SYNC
from app.interactions.invocation import Invocation
from workers.answers import NOTHING_SYNCED, ask, permitted_channels, search, summarize
from workers.resources import WorkerResources

Handler = Callable[[WorkerResources, Invocation, Reply], Awaitable[str]]


async def sync(resources: WorkerResources, invocation: Invocation, reply: Reply) -> str:
    """/sync: pull this channel (and its threads) now, then report what changed."""
    if resources.sync.running:
        await reply.progress("A sync is already running; this channel is next…")
    summary = await resources.sync.sync_channels([invocation.channel_id])
    text = f"Sync finished: {summary.line()}."
    guilds = resources.settings.sync_guild_ids
    if invocation.guild_id is not None and invocation.guild_id not in guilds:
        text += "\nThis server is not in SYNC_GUILD_IDS, so it is only synced when asked."
    await reply.send(text)
    return "ok"


async def stats(resources: WorkerResources, invocation: Invocation, reply: Reply) -> str:
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


HANDLERS: Mapping[str, Handler] = {
    ASK: ask,
    SEARCH: search,
    SUMMARIZE: summarize,
    STATS: stats,
    SYNC: sync,
}
