"""The outbox for the vector index: the `index_state` column of `messages`.

The vector index lives outside the SQL database, so it cannot share a transaction with it.
Instead every message row carries where it stands with the index: rows are written `pending`
(or `pending_removal` when deleted) in the same transaction as the page that changed them, and
the indexer reads them from here, updates the vector index, and only then marks them `indexed`
(or `removed`). A crash between the two leaves rows pending, to be embedded again: the index
may briefly lag the store but never loses a message. Part of `Store` (see `app.store.db`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from databases import Database

from app.store.errors import full_translated
from app.store.models import IndexState, StoredMessage
from app.store.rows import MESSAGE_SELECT, chunks, execute_many, in_clause, message_from_row

_STATES = {
    "pending": IndexState.PENDING.value,
    "indexed": IndexState.INDEXED.value,
    "pending_removal": IndexState.PENDING_REMOVAL.value,
    "removed": IndexState.REMOVED.value,
}


class OutboxQueries:
    """Reads and marks of the messages waiting for the vector index."""

    _database: Database

    async def pending_index(self, limit: int) -> list[StoredMessage]:
        """Live messages waiting to be (re)embedded, oldest id first."""
        rows = await self._database.fetch_all(
            f"{MESSAGE_SELECT} WHERE index_state = :state AND deleted = FALSE "
            "AND withheld = FALSE ORDER BY id LIMIT :limit",
            {"state": IndexState.PENDING.value, "limit": limit},
        )
        return [message_from_row(row) for row in rows]

    async def pending_removal(self, limit: int) -> list[int]:
        """Ids of deleted messages waiting to be removed from the vector index."""
        rows = await self._database.fetch_all(
            "SELECT id FROM messages WHERE index_state = :state ORDER BY id LIMIT :limit",
            {"state": IndexState.PENDING_REMOVAL.value, "limit": limit},
        )
        return [int(row["id"]) for row in rows]

    @full_translated
    async def mark_indexed(
        self, ids: Iterable[int], *, expected_hashes: Mapping[int, str] | None = None
    ) -> None:
        """Mark pending live messages indexed.

        With `expected_hashes` (id -> the content hash that was embedded), a message edited
        since it was read keeps its pending state, so the newer text gets embedded next time.
        """
        if expected_hashes is None:
            for chunk in chunks(ids):
                clause, values = in_clause("id", chunk)
                await self._database.execute(
                    "UPDATE messages SET index_state = :indexed "
                    f"WHERE index_state = :pending AND deleted = FALSE AND {clause}",
                    {**values, "indexed": _STATES["indexed"], "pending": _STATES["pending"]},
                )
            return
        async with self._database.transaction():
            await execute_many(
                self._database,
                "UPDATE messages SET index_state = :indexed WHERE id = :id "
                "AND index_state = :pending AND deleted = FALSE AND content_hash = :hash",
                [
                    {
                        "indexed": _STATES["indexed"],
                        "pending": _STATES["pending"],
                        "id": message_id,
                        "hash": expected_hashes[message_id],
                    }
                    for message_id in ids
                ],
            )

    @full_translated
    async def mark_removed(self, ids: Iterable[int]) -> None:
        """Mark deleted messages as removed from the vector index."""
        for chunk in chunks(ids):
            clause, values = in_clause("id", chunk)
            await self._database.execute(
                f"UPDATE messages SET index_state = :removed "
                f"WHERE index_state = :pending_removal AND {clause}",
                {
                    **values,
                    "removed": _STATES["removed"],
                    "pending_removal": _STATES["pending_removal"],
                },
            )

    @full_translated
    async def reset_index_state(self) -> None:
        """Set every live message back to pending, for a full rebuild of the vector index
        (a withheld one, whose author opted out, is never embedded)."""
        await self._database.execute(
            "UPDATE messages SET index_state = :pending WHERE deleted = FALSE AND withheld = FALSE",
            {"pending": IndexState.PENDING.value},
        )

    async def count_indexed(self) -> int:
        """Number of messages the vector index holds by the outbox (reads only its index)."""
        count = await self._database.fetch_val(
            "SELECT COUNT(*) FROM messages WHERE index_state = :state",
            {"state": IndexState.INDEXED.value},
        )
        return int(count)
