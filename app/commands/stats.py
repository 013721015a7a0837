"""/stats: message count, date range and top authors of a channel and its threads, with a chart.

The numbers are the answer's text; the chart (messages per week, top authors) is drawn in a
worker thread and rides on the same edit of the deferred message, with alt text that says in
words what it shows. A chart that cannot be drawn costs the member the picture, not the answer.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Final

from app.commands.charts import ActivityChart, describe, every_week, render_png
from app.commands.delivery import Responder
from app.commands.resources import Resources
from app.commands.scope import NOTHING_SYNCED, permitted_channels
from app.discord.files import File
from app.errors import CommandError
from app.interactions.invocation import Invocation
from app.store.models import Stats

logger = logging.getLogger(__name__)

# The `period` option's values (the choices registered in app.interactions.commands).
PERIODS: Final[dict[str, tuple[timedelta | None, str]]] = {
    "30d": (timedelta(days=30), "the last 30 days"),
    "1y": (timedelta(days=365), "the last year"),
    "all": (None, "all time"),
}
DEFAULT_PERIOD: Final = "all"
CHART_FILENAME: Final = "stats.png"


async def stats(resources: Resources, invocation: Invocation, reply: Responder) -> str:
    """/stats: message count, date range and top authors of this channel and its threads."""
    period = invocation.options.get("period") or DEFAULT_PERIOD
    if period not in PERIODS:
        raise CommandError(f"`period` must be one of {', '.join(PERIODS)}")
    span, label = PERIODS[period]
    now = datetime.now(UTC)
    since = None if span is None else now - span
    # The channel and the threads under it that this member may read.
    channels = sorted(await permitted_channels(resources, invocation))
    store = resources.state.store
    result = await store.channel_stats(channels, since=since)
    if result.count == 0 or result.first is None or result.last is None:
        await reply.send(NOTHING_SYNCED if since is None else f"No messages here in {label}.")
        return "empty"
    text = _numbers(result, None if since is None else label)
    weeks = await store.messages_per_week(channels, since=since)
    channel = await store.get_channel(invocation.channel_id)
    where = f"#{channel.name}" if channel is not None and channel.name else "this channel"
    chart = ActivityChart(
        title=f"{where} · {label}",
        weeks=every_week(
            weeks, (since or result.first).date(), (now if since else result.last).date()
        ),
        authors=result.top_authors,
    )
    try:
        png = await asyncio.to_thread(render_png, chart)
    except Exception:
        logger.exception("the /stats chart could not be drawn")
        await reply.send(text + "\n-# The chart could not be drawn this time.")
        return "no_chart"
    await reply.send_file(text, File(CHART_FILENAME, png, "image/png", describe(chart)))
    return "ok"


def _numbers(result: Stats, period: str | None) -> str:
    """The answer's text: the count and date range (of `period`, if any), then the top authors."""
    assert result.first is not None and result.last is not None
    lines = [
        f"**{result.count:,} messages** from {result.first:%Y-%m-%d} to {result.last:%Y-%m-%d}"
        + ("." if period is None else f" (period: {period})."),
        "Top authors:",
    ]
    lines += [
        f"{rank}. {author.name or author.author_id}: {author.message_count:,}"
        for rank, author in enumerate(result.top_authors, 1)
    ]
    return "\n".join(lines)
