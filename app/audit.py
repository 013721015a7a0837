"""The audit trail: one row per command invocation, written by the worker, read by the CLI."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from app.settings import Settings

_COLUMNS = ("time (UTC)", "guild", "channel", "user", "command", "outcome", "latency")


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """Who ran which command where, when, how it ended and how long the user waited."""

    interaction_id: str
    at: datetime
    guild_id: str | None
    channel_id: str
    user_id: str
    command: str
    outcome: str
    # From the interaction's creation at Discord until the answer was sent.
    latency_ms: int


def format_entries(entries: list[AuditEntry]) -> str:
    """A plain-text table, newest first, for `python -m app audit`."""
    if not entries:
        return "no command has been recorded yet"
    rows = [
        (
            f"{e.at:%Y-%m-%d %H:%M:%S}",
            e.guild_id or "-",
            e.channel_id,
            e.user_id,
            "/" + e.command,
            e.outcome,
            f"{e.latency_ms / 1000:.1f} s",
        )
        for e in entries
    ]
    widths = [max(len(r[i]) for r in [_COLUMNS, *rows]) for i in range(len(_COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    header = "  ".join(c.ljust(w) for c, w in zip(_COLUMNS, widths, strict=True))
    return "\n".join([header.rstrip(), *(line.rstrip() for line in lines)])


async def read_audit(settings: Settings, limit: int) -> list[AuditEntry]:
    """The latest `limit` entries; needs no state lock (SQLite readers never block the writer)."""
    from app.store.db import Store

    async with Store.from_url(settings.database_url) as store:
        await store.migrate()
        return await store.recent_audit(limit)
