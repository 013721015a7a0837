"""Messages: a channel's pages written with their cursor, and the reads of live messages.

Every page of history is written in one transaction together with the channel's cursor, so a
crash or kill at any point leaves either the whole page and its cursor or neither: the next run
resumes from the stored cursor with no gap and no duplicate. The same transaction queues each
new message, and each whose embedded text changed, in the index outbox (`app.store.outbox`).
A deleted message keeps its row, marked deleted, and is revived if a later page holds it
again; no read here returns it. Part of `Store` (see `app.store.db`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from databases import Database

from app.store.channels import write_cursor
from app.store.errors import full_translated
from app.store.lexical import refresh_lexical
from app.store.models import (
    AuthorCount,
    IndexState,
    PageResult,
    Stats,
    StoredMessage,
    WeekCount,
    format_time,
    parse_time,
)
from app.store.privacy import RefetchSpan, advance_refetch, withhold_opted_out
from app.store.rows import (
    MESSAGE_INSERT,
    MESSAGE_SELECT,
    chunks,
    execute_many,
    in_clause,
    message_from_row,
    message_params,
)

logger = logging.getLogger(__name__)


class MessageQueries:
    """Writes and reads of `messages`, apart from the index outbox."""

    _database: Database

    # Writes

    @full_translated
    async def save_page(
        self,
        channel_id: str,
        messages: Iterable[StoredMessage],
        *,
        newest_id: int | None = None,
        backfill_before: int | None = None,
        backfill_complete: bool | None = None,
    ) -> PageResult:
        """Write one page of a channel's messages and its cursor fields in one transaction.

        New messages are inserted `pending`; a stored message whose embedded text changed (or
        that had been marked deleted) is updated and set `pending` again; other stored fields
        that changed are updated without touching the index state; identical rows are left
        alone. Cursor fields left as None keep their stored value.
        """
        page: dict[int, StoredMessage] = {}
        for message in messages:
            if message.channel_id != channel_id:
                raise ValueError(f"message {message.id} is in channel {message.channel_id}")
            page[message.id] = message
        guild_id = next((m.guild_id for m in page.values() if m.guild_id), None)
        async with self._database.transaction():
            # The cursor is written first so the transaction takes SQLite's write lock before
            # it reads (a read-then-write transaction cannot wait on a busy writer).
            await write_cursor(
                self._database, channel_id, guild_id, newest_id, backfill_before, backfill_complete
            )
            # Members who opted out: their text never reaches the database (app.store.privacy).
            page = await withhold_opted_out(self._database, page)
            stored = await self._stored_rows(list(page))
            new = [m for i, m in page.items() if i not in stored]
            edited: list[int] = []
            unchanged: list[int] = []
            for message_id, message in page.items():
                if message_id not in stored:
                    continue
                if await self._update_if_changed(message, stored[message_id]):
                    edited.append(message_id)
                else:
                    unchanged.append(message_id)
            await self._insert_messages(new)
            changed = [m.id for m in new] + edited
            if changed:
                # The lexical index changes with the rows, in the same transaction.
                await refresh_lexical(self._database, channel_id, min(changed), max(changed))
        result = PageResult(
            new=tuple(sorted(m.id for m in new)),
            edited=tuple(sorted(edited)),
            unchanged=tuple(sorted(unchanged)),
        )
        logger.debug(
            "saved page of channel %s: %d new, %d edited, %d unchanged",
            channel_id,
            len(result.new),
            len(result.edited),
            len(result.unchanged),
        )
        return result

    @full_translated
    async def save_refetched_page(
        self, channel_id: str, messages: Iterable[StoredMessage], span: RefetchSpan, through: int
    ) -> PageResult:
        """Write a page read again for members who opted back in, and move the channel's
        refetch span past it (to `through`), in one transaction."""
        async with self._database.transaction():
            # Written first: the transaction takes the write lock before it reads.
            await advance_refetch(self._database, span, through)
            return await self.save_page(channel_id, messages)

    @full_translated
    async def mark_deleted(self, channel_id: str, ids: Iterable[int]) -> None:
        """Mark messages of a channel deleted and queue their removal from the vector index."""
        async with self._database.transaction():
            for chunk in chunks(ids):
                clause, values = in_clause("id", chunk)
                await self._database.execute(
                    "UPDATE messages SET deleted = TRUE, index_state = :state "
                    f"WHERE channel_id = :channel_id AND deleted = FALSE AND {clause}",
                    {**values, "state": IndexState.PENDING_REMOVAL.value, "channel_id": channel_id},
                )
                # Its words leave the lexical index, and its neighbours' context changes.
                for message_id in chunk:
                    await refresh_lexical(self._database, channel_id, message_id, message_id)

    # Reads (deleted messages never come back)

    async def count_live(
        self,
        channel_ids: Sequence[str] | None = None,
        *,
        index_state: IndexState | None = None,
    ) -> int:
        """Number of live messages, optionally in some channels and/or in one index state."""
        where = ["deleted = FALSE"]
        values: dict[str, Any] = {}
        if channel_ids is not None:
            if not channel_ids:
                return 0
            clause, values = in_clause("channel_id", channel_ids)
            where.append(clause)
        if index_state is not None:
            where.append("index_state = :index_state")
            values["index_state"] = index_state.value
        count = await self._database.fetch_val(
            f"SELECT COUNT(*) FROM messages WHERE {' AND '.join(where)}", values
        )
        return int(count)

    async def live_ids_since(self, channel_id: str, since_id: int) -> dict[int, str]:
        """Live message ids after `since_id` in a channel, with their content hashes."""
        rows = await self._database.fetch_all(
            "SELECT id, content_hash FROM messages WHERE channel_id = :channel_id "
            "AND id > :since AND deleted = FALSE ORDER BY id",
            {"channel_id": channel_id, "since": since_id},
        )
        return {int(row["id"]): str(row["content_hash"]) for row in rows}

    async def get_messages(self, ids: Iterable[int]) -> list[StoredMessage]:
        """The live messages among `ids`, by id; a withheld one (its author opted out) comes
        without text and with `withheld` set, so a caller can tell it from an unknown id."""
        found: list[StoredMessage] = []
        for chunk in chunks(ids):
            clause, values = in_clause("id", chunk)
            rows = await self._database.fetch_all(
                f"{MESSAGE_SELECT} WHERE deleted = FALSE AND {clause}", values
            )
            found.extend(message_from_row(row) for row in rows)
        return sorted(found, key=lambda m: m.id)

    async def neighbours(
        self, channel_id: str, message_id: int, before: int = 2, after: int = 2
    ) -> list[StoredMessage]:
        """Up to `before` live messages before `message_id`, it, and up to `after` after, by id.

        Bot messages are included; `StoredMessage.author_is_bot` lets the caller drop them.
        """
        values = {"channel_id": channel_id, "id": message_id}
        earlier = await self._database.fetch_all(
            f"{MESSAGE_SELECT} WHERE channel_id = :channel_id AND id < :id AND deleted = FALSE "
            "AND withheld = FALSE ORDER BY id DESC LIMIT :limit",
            {**values, "limit": before},
        )
        later = await self._database.fetch_all(
            f"{MESSAGE_SELECT} WHERE channel_id = :channel_id AND id >= :id AND deleted = FALSE "
            "AND withheld = FALSE ORDER BY id LIMIT :limit",
            {**values, "limit": after + 1},
        )
        if not later or int(later[0]["id"]) != message_id:
            later = later[:after]  # the anchor is gone: `after` messages after it, not one more
        return [message_from_row(row) for row in [*reversed(earlier), *later]]

    async def recent_messages(self, channel_id: str, count: int) -> list[StoredMessage]:
        """The `count` most recent live messages of a channel, oldest first (none withheld)."""
        rows = await self._database.fetch_all(
            f"{MESSAGE_SELECT} WHERE channel_id = :channel_id AND deleted = FALSE "
            "AND withheld = FALSE "
            "ORDER BY id DESC LIMIT :limit",
            {"channel_id": channel_id, "limit": count},
        )
        return [message_from_row(row) for row in reversed(rows)]

    async def messages_from(
        self, channel_id: str, from_id: int, limit: int, *, latest: bool = False
    ) -> list[StoredMessage]:
        """Up to `limit` live messages of a channel from `from_id` on (it included), oldest first.

        The first `limit` of them, or with `latest` the last `limit` (those nearest now).
        """
        order = "DESC" if latest else "ASC"
        rows = await self._database.fetch_all(
            f"{MESSAGE_SELECT} WHERE channel_id = :channel_id AND id >= :from_id "
            f"AND deleted = FALSE AND withheld = FALSE ORDER BY id {order} LIMIT :limit",
            {"channel_id": channel_id, "from_id": from_id, "limit": limit},
        )
        found = [message_from_row(row) for row in rows]
        return found[::-1] if latest else found

    async def channel_stats(
        self, channel_ids: Sequence[str], top: int = 5, *, since: datetime | None = None
    ) -> Stats:
        """Live message count, first and last time, and the `top` authors of some channels
        (counting their messages from `since` on, when given)."""
        if not channel_ids:
            return Stats(count=0, first=None, last=None)
        clause, values = in_clause("channel_id", channel_ids)
        period = _from(since, "timestamp", values)
        summary = await self._database.fetch_one(
            "SELECT COUNT(*) AS n, MIN(timestamp) AS first, MAX(timestamp) AS last "
            f"FROM messages WHERE deleted = FALSE AND {clause}{period}",
            values,
        )
        assert summary is not None  # an aggregate always returns one row
        # Both lists bind the same parameter names to the same channel ids.
        m_clause, _ = in_clause("m.channel_id", channel_ids)
        a_clause, _ = in_clause("a.channel_id", channel_ids)
        m_period = _from(since, "m.timestamp", values)
        # Ties broken by author id so the answer is stable; the name is the author's latest.
        authors = await self._database.fetch_all(
            "SELECT m.author_id AS author_id, COUNT(*) AS n, "
            "(SELECT a.author_name FROM messages a WHERE a.author_id = m.author_id "
            f"AND a.deleted = FALSE AND {a_clause} ORDER BY a.id DESC LIMIT 1) AS name "
            # Counted above, never named: the messages of members who opted out.
            "FROM messages m WHERE m.deleted = FALSE AND m.withheld = FALSE "
            f"AND {m_clause}{m_period} "
            "GROUP BY m.author_id ORDER BY n DESC, m.author_id LIMIT :top",
            {**values, "top": top},
        )
        return Stats(
            count=int(summary["n"]),
            first=parse_time(summary["first"]) if summary["first"] else None,
            last=parse_time(summary["last"]) if summary["last"] else None,
            top_authors=tuple(
                AuthorCount(str(row["author_id"]), str(row["name"] or ""), int(row["n"]))
                for row in authors
            ),
        )

    async def messages_per_week(
        self, channel_ids: Sequence[str], *, since: datetime | None = None
    ) -> list[WeekCount]:
        """Live messages of some channels per week (from `since` on), oldest week first.

        Counted per day in SQL on the stored time's date (the same text on SQLite and
        Postgres, so no dialect's date functions), then folded into weeks starting on Monday.
        """
        if not channel_ids:
            return []
        clause, values = in_clause("channel_id", channel_ids)
        period = _from(since, "timestamp", values)
        rows = await self._database.fetch_all(
            "SELECT SUBSTR(timestamp, 1, 10) AS day, COUNT(*) AS n FROM messages "
            f"WHERE deleted = FALSE AND {clause}{period} GROUP BY SUBSTR(timestamp, 1, 10)",
            values,
        )
        weeks: dict[date, int] = {}
        for row in rows:
            day = date.fromisoformat(str(row["day"]))
            monday = day - timedelta(days=day.weekday())
            weeks[monday] = weeks.get(monday, 0) + int(row["n"])
        return [WeekCount(week, weeks[week]) for week in sorted(weeks)]

    async def iter_live_messages(self, batch: int = 500) -> AsyncIterator[list[StoredMessage]]:
        """Every live message in batches by id, for a full rebuild of the vector index."""
        last = -1
        while True:
            rows = await self._database.fetch_all(
                f"{MESSAGE_SELECT} WHERE id > :last AND deleted = FALSE AND withheld = FALSE "
                "ORDER BY id LIMIT :n",
                {"last": last, "n": batch},
            )
            if not rows:
                return
            found = [message_from_row(row) for row in rows]
            yield found
            last = found[-1].id

    # Helpers of save_page

    async def _stored_rows(self, ids: list[int]) -> dict[int, Mapping[str, Any]]:
        stored: dict[int, Mapping[str, Any]] = {}
        for chunk in chunks(ids):
            clause, values = in_clause("id", chunk)
            rows = await self._database.fetch_all(
                "SELECT id, content, attachments, embeds, edited, edited_at, deleted, "
                f"content_hash, index_state, withheld FROM messages WHERE {clause}",
                values,
            )
            for row in rows:
                stored[int(row["id"])] = dict(row._mapping)
        return stored

    async def _update_if_changed(self, message: StoredMessage, old: Mapping[str, Any]) -> bool:
        params = message_params(message)
        text_changed = old["content_hash"] != params["content_hash"]
        revived = bool(old["deleted"])
        # Withholding a member's text (an opt-out) or giving it back is no edit of theirs.
        withheld_changed = bool(old["withheld"]) != message.withheld
        edit = text_changed and not withheld_changed
        if edit and message.edited_at is None:
            # Discord always stamps edits; a missing stamp still records when we saw it.
            params["edited_at"] = format_time(datetime.now(UTC))
        elif message.edited_at is None:
            params["edited_at"] = old["edited_at"]
        same = (
            not text_changed
            and not revived
            and not withheld_changed
            and all(old[c] == params[c] for c in ("content", "attachments", "embeds", "edited_at"))
        )
        if same:
            return False
        state = _next_state(message, old, text_changed or revived or withheld_changed)
        await self._database.execute(
            "UPDATE messages SET content = :content, attachments = :attachments, "
            "embeds = :embeds, content_hash = :content_hash, edited = :edited, "
            "edited_at = :edited_at, deleted = FALSE, index_state = :index_state, "
            "withheld = :withheld WHERE id = :id",
            {
                "id": message.id,
                "content": params["content"],
                "attachments": params["attachments"],
                "embeds": params["embeds"],
                "content_hash": params["content_hash"],
                "edited": message.edited or edit or bool(old["edited"]),
                "edited_at": params["edited_at"],
                "index_state": state,
                "withheld": message.withheld,
            },
        )
        return True

    async def _insert_messages(self, messages: Sequence[StoredMessage]) -> None:
        rows = []
        for message in messages:
            params = message_params(message)
            # A withheld message (its author opted out) is never embedded.
            state = IndexState.REMOVED if message.withheld else IndexState.PENDING
            params["index_state"] = state.value
            rows.append(params)
        await execute_many(self._database, MESSAGE_INSERT, rows)


def _next_state(message: StoredMessage, old: Mapping[str, Any], to_embed: bool) -> str:
    """A changed row's index state: embedded again when its text changed; a withheld one's
    vector leaves the index (or stays gone)."""
    if message.withheld:
        if old["index_state"] == IndexState.REMOVED.value:
            return IndexState.REMOVED.value
        return IndexState.PENDING_REMOVAL.value
    return IndexState.PENDING.value if to_embed else str(old["index_state"])


def _from(since: datetime | None, column: str, values: dict[str, Any]) -> str:
    """The SQL that keeps rows whose `column` time is `since` or later ("" for all), its
    value put in `values`. Stored times are fixed-width UTC text, so they compare as the
    times do."""
    if since is None:
        return ""
    values["since"] = format_time(since)
    return f" AND {column} >= :since"
