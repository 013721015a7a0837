"""Members' privacy: who opted out, their messages kept without text, and giving it back.

A member who opts out (`/privacy opt-out`, `python -m app forget --user ID`) gets a row in
`opted_out`, and in the same transaction every message of theirs is *withheld*: its content,
attachments and embeds are cleared and `messages.withheld` is set. The row itself stays, with
its id, channel, author and time, so that threads keep their shape and /stats still counts it.
Everything derived from the text goes in that transaction too: the message's own lexical row
and the rows of the messages whose context quoted it (its neighbours, and the replies to it),
while the vector of each is queued for removal in the outbox (`pending_removal`), which the
caller drains at once (`Indexer.remove`).

The opt-out is honoured where messages are written, not where they are read: `save_page`,
which every writer goes through (sync, an export's import, the recheck), withholds the
messages of opted-out authors before it stores them (`withhold_opted_out`), so their text
never reaches the database again. No read returns a withheld message's text, since it has
none, and the reads that list messages leave withheld rows out altogether.

Opting back in deletes the row and records, per channel holding the member's withheld
messages, a span of ids to read from Discord again (`refetch_spans`). The next sync of the
channel pages through that span (`app.sync.history`) and `save_page` puts the text back: the
content comes from Discord, never from a copy, because none is kept. The span's cursor is
written in the same transaction as each page, so a crash resumes where the last page ended.
Part of `Store` (see `app.store.db`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from databases import Database

from app.store.errors import full_translated
from app.store.lexical import refresh_lexical
from app.store.models import IndexState, StoredMessage, format_time, parse_time
from app.store.rows import chunks, in_clause

# Target rows closer than this many rows to the previous one in their channel are rewritten
# with it in one range: one statement per row saved is worth a few rows written again.
_MERGE_GAP: Final = 32
# A withheld message's `content_hash`: that of no text.
_EMPTY_HASH: Final = hashlib.sha256(b"").hexdigest()


@dataclass(frozen=True, slots=True)
class OptOut:
    """A member who opted out, since when, their latest name and their withheld messages."""

    user_id: str
    at: datetime
    name: str = ""
    withheld: int = 0


@dataclass(frozen=True, slots=True)
class OptOutResult:
    """What an opt-out did: since when it holds, and the messages it emptied now."""

    since: datetime
    already: bool
    cleared: int
    # The messages whose vectors leave the index (`Indexer.remove`).
    vector_ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class OptInResult:
    """What an opt-in did: whether the member had opted out, and what the next syncs restore."""

    was_opted_out: bool
    messages: int
    channels: int


@dataclass(frozen=True, slots=True)
class PrivacyStatus:
    """Whether a member is opted out (since when), and how many of their messages are withheld."""

    since: datetime | None
    withheld: int


@dataclass(frozen=True, slots=True)
class RefetchSpan:
    """Ids of a channel to read from Discord again: after `after_id`, up to `until_id`."""

    channel_id: str
    after_id: int
    until_id: int


def withhold(message: StoredMessage) -> StoredMessage:
    """The message as it is stored for an author who opted out: no text, never embedded."""
    return dataclasses.replace(
        message,
        content="",
        attachments=(),
        embeds=(),
        withheld=True,
        index_state=IndexState.REMOVED,
    )


async def withhold_opted_out(
    database: Database, messages: Mapping[int, StoredMessage]
) -> dict[int, StoredMessage]:
    """The messages, those of opted-out authors withheld; call in the transaction that writes."""
    authors = list({m.author_id for m in messages.values()})
    if not authors:
        return dict(messages)
    clause, values = in_clause("user_id", authors)
    rows = await database.fetch_all(f"SELECT user_id FROM opted_out WHERE {clause}", values)
    out = {str(row["user_id"]) for row in rows}
    return {i: withhold(m) if m.author_id in out else m for i, m in messages.items()}


async def advance_refetch(database: Database, span: RefetchSpan, through: int) -> None:
    """Move a span's cursor to `through`, or end the span once it reaches `until_id`.

    Only the span as it was read moves: one an opt-in widened meanwhile is left as it is, to
    be walked from its new start.
    """
    values = {"channel_id": span.channel_id, "after": span.after_id, "until": span.until_id}
    same = "channel_id = :channel_id AND after_id = :after AND until_id = :until"
    if through >= span.until_id:
        await database.execute(f"DELETE FROM refetch_spans WHERE {same}", values)
    else:
        await database.execute(
            f"UPDATE refetch_spans SET after_id = :through WHERE {same}",
            {**values, "through": through},
        )


class PrivacyQueries:
    """Opting out and back in, and the reads of who opted out."""

    _database: Database

    @full_translated
    async def opt_out(self, user_id: str, at: datetime | None = None) -> OptOutResult:
        """Record the opt-out (the first time holds) and withhold every message of the member."""
        when = format_time(at or datetime.now(UTC))
        async with self._database.transaction():
            # Written first, so the transaction takes SQLite's write lock before it reads.
            await self._database.execute(
                "INSERT INTO opted_out (user_id, at) VALUES (:user_id, :at) "
                "ON CONFLICT (user_id) DO NOTHING",
                {"user_id": user_id, "at": when},
            )
            since = str(
                await self._database.fetch_val(
                    "SELECT at FROM opted_out WHERE user_id = :user_id", {"user_id": user_id}
                )
            )
            rows = await self._database.fetch_all(
                "SELECT id, channel_id, deleted, index_state FROM messages "
                "WHERE author_id = :user_id AND withheld = FALSE",
                {"user_id": user_id},
            )
            found = [
                (int(r["id"]), str(r["channel_id"]), bool(r["deleted"]), str(r["index_state"]))
                for r in rows
            ]
            if found:
                await self._withhold_author(
                    user_id, [(i, channel) for i, channel, deleted, _ in found if not deleted]
                )
        return OptOutResult(
            since=parse_time(since),
            already=since != when,
            cleared=len(found),
            vector_ids=tuple(i for i, _, _, state in found if state != IndexState.REMOVED.value),
        )

    @full_translated
    async def opt_in(self, user_id: str) -> OptInResult:
        """Delete the opt-out and queue the member's withheld messages to be read again."""
        # Read before the transaction, which writes first (SQLite's write lock, as above).
        was = await self._database.fetch_val(
            "SELECT COUNT(*) FROM opted_out WHERE user_id = :user_id", {"user_id": user_id}
        )
        async with self._database.transaction():
            await self._database.execute(
                "DELETE FROM opted_out WHERE user_id = :user_id", {"user_id": user_id}
            )
            spans = await self._database.fetch_all(
                "SELECT channel_id, MIN(id) AS low, MAX(id) AS high, COUNT(*) AS n "
                "FROM messages WHERE author_id = :user_id AND withheld = TRUE "
                "AND deleted = FALSE GROUP BY channel_id",
                {"user_id": user_id},
            )
            for span in spans:
                # A span already waiting in the channel grows to cover both.
                await self._database.execute(
                    "INSERT INTO refetch_spans (channel_id, after_id, until_id) "
                    "VALUES (:channel_id, :after, :until) ON CONFLICT (channel_id) DO UPDATE SET "
                    "after_id = CASE WHEN excluded.after_id < refetch_spans.after_id "
                    "THEN excluded.after_id ELSE refetch_spans.after_id END, "
                    "until_id = CASE WHEN excluded.until_id > refetch_spans.until_id "
                    "THEN excluded.until_id ELSE refetch_spans.until_id END",
                    {
                        "channel_id": str(span["channel_id"]),
                        "after": int(span["low"]) - 1,
                        "until": int(span["high"]),
                    },
                )
        return OptInResult(
            was_opted_out=bool(was),
            messages=sum(int(s["n"]) for s in spans),
            channels=len(spans),
        )

    async def privacy_status(self, user_id: str) -> PrivacyStatus:
        """Whether a member is opted out, since when, and how many messages are withheld."""
        since = await self._database.fetch_val(
            "SELECT at FROM opted_out WHERE user_id = :user_id", {"user_id": user_id}
        )
        withheld = await self._database.fetch_val(
            "SELECT COUNT(*) FROM messages WHERE author_id = :user_id AND withheld = TRUE "
            "AND deleted = FALSE",
            {"user_id": user_id},
        )
        return PrivacyStatus(
            since=parse_time(str(since)) if since is not None else None, withheld=int(withheld)
        )

    async def opted_out_members(self) -> list[OptOut]:
        """Every member who opted out, earliest first, with their latest stored name."""
        rows = await self._database.fetch_all(
            "SELECT o.user_id AS user_id, o.at AS at, "
            "(SELECT m.author_name FROM messages m WHERE m.author_id = o.user_id "
            "ORDER BY m.id DESC LIMIT 1) AS name, "
            "(SELECT COUNT(*) FROM messages m WHERE m.author_id = o.user_id "
            "AND m.withheld = TRUE AND m.deleted = FALSE) AS n "
            "FROM opted_out o ORDER BY o.at, o.user_id"
        )
        return [
            OptOut(
                user_id=str(row["user_id"]),
                at=parse_time(str(row["at"])),
                name=str(row["name"] or ""),
                withheld=int(row["n"]),
            )
            for row in rows
        ]

    async def refetch_span(self, channel_id: str) -> RefetchSpan | None:
        """The span of a channel waiting to be read again, if any."""
        row = await self._database.fetch_one(
            "SELECT after_id, until_id FROM refetch_spans WHERE channel_id = :channel_id",
            {"channel_id": channel_id},
        )
        if row is None:
            return None
        return RefetchSpan(channel_id, int(row["after_id"]), int(row["until_id"]))

    async def withheld_ids(self, ids: Iterable[int]) -> set[int]:
        """Which of these messages are stored withheld (their author opted out)."""
        found: set[int] = set()
        for chunk in chunks(ids):
            clause, values = in_clause("id", chunk)
            rows = await self._database.fetch_all(
                f"SELECT id FROM messages WHERE withheld = TRUE AND {clause}", values
            )
            found.update(int(row["id"]) for row in rows)
        return found

    async def _withhold_author(self, user_id: str, live: list[tuple[int, str]]) -> None:
        """Empty an author's rows and rewrite every lexical row that held their words.

        `live` holds the author's live messages (id, channel): their own lexical rows go,
        and their neighbours' and the replies' rows are written again without their text.
        """
        await self._database.execute(
            "UPDATE messages SET content = '', attachments = '[]', embeds = '[]', "
            "content_hash = :empty, withheld = TRUE, index_state = CASE "
            "WHEN index_state = :removed THEN :removed ELSE :pending_removal END "
            "WHERE author_id = :user_id AND withheld = FALSE",
            {
                "user_id": user_id,
                "empty": _EMPTY_HASH,
                "removed": IndexState.REMOVED.value,
                "pending_removal": IndexState.PENDING_REMOVAL.value,
            },
        )
        targets: dict[str, set[int]] = {}
        for message_id, channel_id in live:
            targets.setdefault(channel_id, set()).add(message_id)
        # Replies quote what they answer in their context: theirs change too.
        for chunk in chunks(message_id for message_id, _ in live):
            clause, values = in_clause("reply_to_id", chunk)
            replies = await self._database.fetch_all(
                f"SELECT id, channel_id FROM messages WHERE deleted = FALSE AND {clause}", values
            )
            for reply in replies:
                targets.setdefault(str(reply["channel_id"]), set()).add(int(reply["id"]))
        for channel_id, ids in targets.items():
            for low, high in await self._ranges(channel_id, sorted(ids)):
                await refresh_lexical(self._database, channel_id, low, high)

    async def _ranges(self, channel_id: str, ids: list[int]) -> list[tuple[int, int]]:
        """The ids in ranges: one range while fewer than `_MERGE_GAP` rows lie between."""
        rows = await self._database.fetch_all(
            "SELECT id FROM messages WHERE channel_id = :channel_id AND id >= :low "
            "AND id <= :high AND deleted = FALSE ORDER BY id",
            {"channel_id": channel_id, "low": ids[0], "high": ids[-1]},
        )
        position = {int(row["id"]): i for i, row in enumerate(rows)}
        ranges: list[tuple[int, int]] = []
        for message_id in ids:
            here = position.get(message_id)
            if ranges and here is not None:
                low, high = ranges[-1]
                if here - position.get(high, here) <= _MERGE_GAP:
                    ranges[-1] = (low, message_id)
                    continue
            ranges.append((message_id, message_id))
        return ranges
