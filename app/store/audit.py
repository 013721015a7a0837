"""The audit trail's table: one row per command invocation, keyed by its interaction id.

The worker writes a row when a command ends; a retried job writes the same interaction again,
so the write is an upsert in which the last attempt's time, outcome and latency win.
`app.ops.audit` reads the rows back for `python -m app audit`. Part of `Store` (`app.store.db`).
"""

from __future__ import annotations

from databases import Database

from app.store.errors import full_translated
from app.store.models import AuditEntry, format_time, parse_time


class AuditQueries:
    """Writes and reads of `audit_log`."""

    _database: Database

    @full_translated
    async def record_audit(self, entry: AuditEntry) -> None:
        """Write (or, for a retried job, overwrite) the audit row of one invocation."""
        await self._database.execute(
            "INSERT INTO audit_log (interaction_id, at, guild_id, channel_id, user_id, command, "
            "outcome, latency_ms) VALUES (:interaction_id, :at, :guild_id, :channel_id, "
            ":user_id, :command, :outcome, :latency_ms) ON CONFLICT (interaction_id) DO UPDATE "
            "SET at = excluded.at, outcome = excluded.outcome, latency_ms = excluded.latency_ms",
            {
                "interaction_id": entry.interaction_id,
                "at": format_time(entry.at),
                "guild_id": entry.guild_id,
                "channel_id": entry.channel_id,
                "user_id": entry.user_id,
                "command": entry.command,
                "outcome": entry.outcome,
                "latency_ms": entry.latency_ms,
            },
        )

    async def recent_audit(self, limit: int) -> list[AuditEntry]:
        """The latest `limit` audit rows, newest first."""
        rows = await self._database.fetch_all(
            "SELECT interaction_id, at, guild_id, channel_id, user_id, command, outcome, "
            "latency_ms FROM audit_log ORDER BY at DESC, interaction_id DESC LIMIT :limit",
            {"limit": max(0, limit)},
        )
        return [
            AuditEntry(
                interaction_id=str(row["interaction_id"]),
                at=parse_time(row["at"]),
                guild_id=row["guild_id"],
                channel_id=str(row["channel_id"]),
                user_id=str(row["user_id"]),
                command=str(row["command"]),
                outcome=str(row["outcome"]),
                latency_ms=int(row["latency_ms"]),
            )
            for row in rows
        ]
