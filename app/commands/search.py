"""/search: the best matching messages with author, date, snippet and jump link; no model."""

from __future__ import annotations

from app.commands.delivery import Responder
from app.commands.resources import Resources
from app.commands.scope import NOTHING_SYNCED, permitted_channels, snippet
from app.interactions.invocation import Invocation
from app.retrieval.search import jump_link

SEARCH_DEFAULT = 5
SNIPPET_CHARS = 180


async def search(resources: Resources, invocation: Invocation, reply: Responder) -> str:
    """/search: the best matching messages with author, date, snippet and jump link."""
    query = str(invocation.options.get("query", "")).strip()
    limit = int(invocation.options.get("limit", SEARCH_DEFAULT))
    channels = await permitted_channels(resources, invocation)
    if await resources.state.store.count_live(sorted(channels)) == 0:
        await reply.send(NOTHING_SYNCED)
        return "empty"
    hits = await resources.retriever.hits(query, channels, limit)
    if not hits:
        await reply.send("No message here matches that.")
        return "no_match"
    lines = [f"**Best matches for** “{snippet(query, 100)}”:"]
    for rank, (message, similarity) in enumerate(hits, 1):
        lines.append(
            f"**{rank}.** {message.author_name or message.author_id}, "
            f"{message.timestamp:%Y-%m-%d}: {snippet(message.index_text, SNIPPET_CHARS)} "
            f"([jump]({jump_link(message)}), {similarity:.0%})"
        )
    await reply.send("\n".join(lines))
    return "ok"
