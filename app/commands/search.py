"""/search: the best matching messages with author, date, snippet and jump link; no model.

Options narrow the search: `author` (a member), `channel` (another channel the
member can read, with its threads), `after` and `before` (a date, or a span back
from now such as `3d`); see `app.retrieval.query.parse_when`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from app.commands.delivery import Responder
from app.commands.resources import Resources
from app.commands.scope import NOTHING_SYNCED, permitted_channels, snippet
from app.errors import CommandError
from app.interactions.invocation import Invocation
from app.retrieval.query import parse_when
from app.retrieval.search import Filters, jump_link

SEARCH_DEFAULT = 5
SNIPPET_CHARS = 180


def search_filters(options: dict[str, object], now: datetime) -> Filters:
    """The filters /search's options ask for; a bad time is the member's error."""
    author = options.get("author")
    bounds: dict[str, datetime | None] = {}
    for name in ("after", "before"):
        value = options.get(name)
        try:
            bounds[name] = parse_when(value, now) if isinstance(value, str) else None
        except ValueError as exc:
            raise CommandError(f"`{name}` is not a time I can read: {exc}") from None
    after, before = bounds["after"], bounds["before"]
    if after is not None and before is not None and after >= before:
        raise CommandError("`after` must be earlier than `before`")
    return Filters(
        author_ids=frozenset({author}) if isinstance(author, str) else frozenset(),
        after=after,
        before=before,
    )


async def search(resources: Resources, invocation: Invocation, reply: Responder) -> str:
    """/search: the best matching messages with author, date, snippet and jump link."""
    query = str(invocation.options.get("query", "")).strip()
    limit = int(invocation.options.get("limit", SEARCH_DEFAULT))
    now = datetime.now(UTC)
    filters = search_filters(invocation.options, now)
    target = invocation.options.get("channel")
    channels = await permitted_channels(
        resources, invocation, target if isinstance(target, str) else None
    )
    if await resources.state.store.count_live(sorted(channels)) == 0:
        await reply.send(NOTHING_SYNCED)
        return "empty"
    results = await resources.retriever.search(query, channels, limit, filters=filters, now=now)
    if not results:
        narrowed = " with those options" if filters else ""
        await reply.send(f"No message here matches that{narrowed}.")
        return "no_match"
    lines = [f"**Best matches for** “{snippet(query, 100)}”:"]
    for rank, result in enumerate(results, 1):
        message = result.message
        lines.append(
            f"**{rank}.** {message.author_name or message.author_id}, "
            f"{message.timestamp:%Y-%m-%d}: {snippet(message.index_text, SNIPPET_CHARS)} "
            f"([jump]({jump_link(message)}))"
        )
    await reply.send("\n".join(lines))
    return "ok"
