"""Channels and threads with their sync cursors and access status, and guild roles.

A channel's row holds both what Discord says about it (name, type, parent, permission
overwrites: `upsert_channels`) and the bot's own state for it: the sync cursor and whether the
bot could read it. The two are written apart so that refreshing a description never moves a
cursor. The cursor is written only by `write_cursor`, which `Store.save_page` calls inside the
transaction that writes the page, so a stored cursor never runs ahead of the stored messages.
Roles are replaced per guild as a whole. Part of `Store` (see `app.store.db`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from databases import Database

from app.store.errors import full_translated
from app.store.models import (
    ChannelAccess,
    ChannelRecord,
    ChannelState,
    RoleRecord,
    format_time,
    parse_time,
)
from app.store.rows import (
    CHANNEL_COLUMNS,
    CHANNEL_SELECT,
    INSERT_CHUNK,
    channel_from_row,
    channel_params,
    opt_int,
)


class ChannelQueries:
    """Writes and reads of `channels` (descriptions, cursors, access) and `roles`."""

    _database: Database

    @full_translated
    async def upsert_channels(self, channels: Iterable[ChannelRecord]) -> None:
        """Insert or update channels' descriptions; their sync state is kept."""
        records = list(channels)
        async with self._database.transaction():
            for start in range(0, len(records), INSERT_CHUNK):
                chunk = records[start : start + INSERT_CHUNK]
                values: dict[str, Any] = {}
                rows = []
                for i, channel in enumerate(chunk):
                    params = channel_params(channel)
                    values.update({f"{k}_{i}": v for k, v in params.items()})
                    rows.append("(" + ", ".join(f":{k}_{i}" for k in params) + ")")
                columns = (*CHANNEL_COLUMNS, "permission_overwrites")
                updates = ", ".join(f"{c} = excluded.{c}" for c in columns[1:])
                await self._database.execute(
                    f"INSERT INTO channels ({', '.join(columns)}) VALUES {', '.join(rows)} "
                    f"ON CONFLICT (id) DO UPDATE SET {updates}",
                    values,
                )

    async def get_channel(self, channel_id: str) -> ChannelRecord | None:
        """One channel's description, or None if unknown."""
        row = await self._database.fetch_one(f"{CHANNEL_SELECT} WHERE id = :id", {"id": channel_id})
        return channel_from_row(row) if row is not None else None

    async def channels_for_guild(self, guild_id: str) -> list[ChannelRecord]:
        """A guild's channels and threads, by position then id."""
        rows = await self._database.fetch_all(
            f"{CHANNEL_SELECT} WHERE guild_id = :guild_id ORDER BY position, id",
            {"guild_id": guild_id},
        )
        return [channel_from_row(row) for row in rows]

    async def threads_of(self, parent_id: str) -> list[ChannelRecord]:
        """The channels whose parent is `parent_id` (threads of a channel or forum)."""
        rows = await self._database.fetch_all(
            f"{CHANNEL_SELECT} WHERE parent_id = :parent_id ORDER BY id",
            {"parent_id": parent_id},
        )
        return [channel_from_row(row) for row in rows]

    async def channels_with_access(self, guild_id: str, access: ChannelAccess) -> set[str]:
        """Ids of a guild's channels whose last access status is `access`."""
        rows = await self._database.fetch_all(
            "SELECT id FROM channels WHERE guild_id = :guild_id AND access = :access",
            {"guild_id": guild_id, "access": access.value},
        )
        return {str(row["id"]) for row in rows}

    @full_translated
    async def set_channel_access(self, channel_id: str, access: ChannelAccess) -> None:
        """Record whether the bot could read a channel."""
        await self._database.execute(
            "INSERT INTO channels (id, access) VALUES (:id, :access) "
            "ON CONFLICT (id) DO UPDATE SET access = excluded.access",
            {"id": channel_id, "access": access.value},
        )

    async def channel_state(self, channel_id: str) -> ChannelState | None:
        """A channel's sync cursor and access status, or None if unknown."""
        row = await self._database.fetch_one(
            "SELECT id, newest_synced_id, backfill_before_id, backfill_complete, "
            "last_synced_at, access FROM channels WHERE id = :id",
            {"id": channel_id},
        )
        if row is None:
            return None
        return ChannelState(
            channel_id=str(row["id"]),
            newest_synced_id=opt_int(row["newest_synced_id"]),
            backfill_before_id=opt_int(row["backfill_before_id"]),
            backfill_complete=bool(row["backfill_complete"]),
            last_synced_at=parse_time(row["last_synced_at"]) if row["last_synced_at"] else None,
            access=ChannelAccess(row["access"]),
        )

    @full_translated
    async def replace_roles(self, guild_id: str, roles: Iterable[RoleRecord]) -> None:
        """Replace all stored roles of a guild with `roles`, in one transaction."""
        records = list(roles)
        for role in records:
            if role.guild_id != guild_id:
                raise ValueError(f"role {role.id} belongs to guild {role.guild_id}")
        async with self._database.transaction():
            await self._database.execute(
                "DELETE FROM roles WHERE guild_id = :guild_id", {"guild_id": guild_id}
            )
            for start in range(0, len(records), INSERT_CHUNK):
                values: dict[str, Any] = {}
                rows = []
                for i, role in enumerate(records[start : start + INSERT_CHUNK]):
                    values.update(
                        {
                            f"id_{i}": role.id,
                            f"guild_id_{i}": guild_id,
                            f"name_{i}": role.name,
                            f"permissions_{i}": str(role.permissions),
                            f"position_{i}": role.position,
                        }
                    )
                    rows.append(
                        f"(:id_{i}, :guild_id_{i}, :name_{i}, :permissions_{i}, :position_{i})"
                    )
                await self._database.execute(
                    "INSERT INTO roles (id, guild_id, name, permissions, position) "
                    f"VALUES {', '.join(rows)}",
                    values,
                )

    async def roles_for_guild(self, guild_id: str) -> list[RoleRecord]:
        """A guild's roles, by position then id."""
        rows = await self._database.fetch_all(
            "SELECT id, guild_id, name, permissions, position FROM roles "
            "WHERE guild_id = :guild_id ORDER BY position, id",
            {"guild_id": guild_id},
        )
        return [
            RoleRecord(
                id=str(row["id"]),
                guild_id=str(row["guild_id"]),
                name=str(row["name"]),
                permissions=int(row["permissions"]),
                position=int(row["position"]),
            )
            for row in rows
        ]


async def write_cursor(
    database: Database,
    channel_id: str,
    guild_id: str | None,
    newest_id: int | None,
    backfill_before: int | None,
    backfill_complete: bool | None,
) -> None:
    """Upsert a channel's cursor fields (None keeps the stored value) inside a page's write."""
    fields: dict[str, Any] = {}
    if newest_id is not None:
        fields["newest_synced_id"] = newest_id
    if backfill_before is not None:
        fields["backfill_before_id"] = backfill_before
    if backfill_complete is not None:
        fields["backfill_complete"] = backfill_complete
    if fields:
        fields["last_synced_at"] = format_time(datetime.now(UTC))
    columns = ["id", "guild_id", *fields]
    values = {"id": channel_id, "guild_id": guild_id, **fields}
    placeholders = ", ".join(f":{c}" for c in columns)
    updates = [f"{c} = excluded.{c}" for c in fields]
    # A channel first seen through its messages (an import) learns its guild here.
    updates.append("guild_id = COALESCE(channels.guild_id, excluded.guild_id)")
    await database.execute(
        f"INSERT INTO channels ({', '.join(columns)}) VALUES ({placeholders}) "
        f"ON CONFLICT (id) DO UPDATE SET {', '.join(updates)}",
        values,
    )
