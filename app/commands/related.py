"""The message menu's "Find related": messages like that one, wherever the member can read.

The target message's text is the query of the same hybrid search as /search, over every
channel the member may read (the permission scope of `/ask scope:server`); the target
itself is left out. The answer is private: it may quote channels other members cannot see.
"""

from __future__ import annotations

from app.commands.delivery import Responder
from app.commands.resources import Resources
from app.commands.scope import NOTHING_SYNCED, server_channels, snippet
from app.commands.target import NOT_AVAILABLE, usable_target
from app.interactions.invocation import Invocation
from app.retrieval.search import jump_link

RELATED_COUNT = 5
SNIPPET_CHARS = 180
# The query is the message's text; a long one is cut, since the search reads its words.
QUERY_CHARS = 1000


async def find_related(resources: Resources, invocation: Invocation, reply: Responder) -> str:
    """The messages most like the target, with jump links, privately ("Find related")."""
    target = await usable_target(resources, invocation)
    if target is None or not target.text.strip():
        await reply.send(NOT_AVAILABLE)
        return "unavailable"
    channels = await server_channels(resources, invocation)
    store = resources.state.store
    if await store.count_live(sorted(channels)) == 0:
        await reply.send(NOTHING_SYNCED)
        return "empty"
    query = target.text[:QUERY_CHARS]
    # "Yesterday" in the message means the day before it was sent, not before now.
    found = await resources.retriever.search(query, channels, RELATED_COUNT + 1, now=target.sent)
    results = [
        r.message
        for r in found
        # A withheld message (its author opted out) has no text and is never shown.
        if r.message.id != target.id and not r.message.withheld and r.message.index_text.strip()
    ][:RELATED_COUNT]
    if not results:
        await reply.send("I found no other message like that one in the channels you can read.")
        return "no_match"
    names: dict[str, str] = {}
    for channel_id in {m.channel_id for m in results}:
        channel = await store.get_channel(channel_id)
        names[channel_id] = channel.name if channel else channel_id
    lines = [f"**Messages like** “{snippet(target.text, 100)}”:"]
    for rank, message in enumerate(results, 1):
        author = message.author_name or message.author_id
        lines.append(
            f"**{rank}.** {author} in #{names[message.channel_id]}, "
            f"{message.timestamp:%Y-%m-%d}: {snippet(message.index_text, SNIPPET_CHARS)} "
            f"([jump]({jump_link(message)}))"
        )
    await reply.send("\n".join(lines))
    return "ok"
