"""The audit trail for people: `python -m app audit` reads the latest rows and prints a table.

The worker writes one `AuditEntry` per command invocation through `Store.record_audit`; the
entry and its table belong to the store (`app.store.audit`), so this module only reads.
"""

from __future__ import annotations

from app.settings import Settings
from app.store.db import Store
from app.store.models import AuditEntry

_COLUMNS = ("time (UTC)", "guild", "channel", "user", "command", "outcome", "latency")


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
    async with Store.from_url(settings.database_url) as store:
        await store.migrate()
        return await store.recent_audit(limit)
