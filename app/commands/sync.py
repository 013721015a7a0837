"""/sync: pull a channel and its threads from Discord now, then report what changed."""

from __future__ import annotations

from app.commands.delivery import Responder
from app.commands.resources import Resources
from app.interactions.invocation import Invocation


async def sync(resources: Resources, invocation: Invocation, reply: Responder) -> str:
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
