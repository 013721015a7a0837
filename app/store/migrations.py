"""Versioned schema migrations: numbered SQL steps, each applied once in its own transaction.

To change the schema, append a `Migration` with the next number to `MIGRATIONS`; never edit
one that has shipped. The SQL is written for SQLite and kept portable; `render` rewrites the
few type names that differ on Postgres.

Several workers may start at once on one Postgres database. Each migration's transaction
(and the one that creates `schema_version`) first takes a transaction-scoped advisory lock,
so they apply one at a time and the re-check inside sees what another has committed; on
SQLite the transaction's write lock does the same.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from app.store.lexical import rebuild_lexical

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step: a version number, a short name and its statements.

    `postgres` replaces `statements` on Postgres where the two differ beyond type names;
    `then` runs after the statements, in the same transaction (a rebuild from the rows).
    """

    version: int
    name: str
    statements: tuple[str, ...]
    postgres: tuple[str, ...] | None = None
    then: Callable[[Any], Awaitable[object]] | None = None


async def _build_lexical_if_missing(database: Any) -> None:
    """Migration 3's rebuild of the lexical index, for a database that comes from version 2.

    It moved here because it reads `messages.withheld`; a database already at version 3 has
    its rows and is left alone.
    """
    if await database.fetch_val("SELECT 1 FROM message_text LIMIT 1") is None:
        await rebuild_lexical(database)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "messages, channels, roles",
        (
            """CREATE TABLE channels (
                id TEXT PRIMARY KEY,
                guild_id TEXT,
                name TEXT NOT NULL DEFAULT '',
                type INTEGER NOT NULL DEFAULT 0,
                parent_id TEXT,
                position INTEGER NOT NULL DEFAULT 0,
                permission_overwrites TEXT NOT NULL DEFAULT '[]',
                newest_synced_id BIGINT,
                backfill_before_id BIGINT,
                backfill_complete BOOLEAN NOT NULL DEFAULT FALSE,
                last_synced_at DATETIME,
                access TEXT NOT NULL DEFAULT 'ok'
            )""",
            "CREATE INDEX ix_channels_guild ON channels (guild_id)",
            "CREATE INDEX ix_channels_parent ON channels (parent_id)",
            """CREATE TABLE messages (
                id INTEGER PRIMARY KEY,
                channel_id TEXT NOT NULL REFERENCES channels (id),
                guild_id TEXT,
                author_id TEXT NOT NULL,
                author_name TEXT NOT NULL DEFAULT '',
                author_is_bot BOOLEAN NOT NULL DEFAULT FALSE,
                content TEXT NOT NULL,
                timestamp DATETIME NOT NULL,
                edited BOOLEAN DEFAULT FALSE,
                edited_at DATETIME,
                deleted BOOLEAN DEFAULT FALSE,
                message_type INTEGER NOT NULL DEFAULT 0,
                reply_to_id BIGINT,
                attachments TEXT,
                embeds TEXT,
                content_hash TEXT NOT NULL,
                index_state TEXT NOT NULL DEFAULT 'pending'
            )""",
            "CREATE INDEX ix_messages_channel ON messages (channel_id, id)",
            "CREATE INDEX ix_messages_author ON messages (author_id, id)",
            "CREATE INDEX ix_messages_index_state ON messages (index_state, id)",
            """CREATE TABLE roles (
                id TEXT PRIMARY KEY,
                guild_id TEXT NOT NULL,
                name TEXT NOT NULL DEFAULT '',
                permissions TEXT NOT NULL DEFAULT '0',
                position INTEGER NOT NULL DEFAULT 0
            )""",
            "CREATE INDEX ix_roles_guild ON roles (guild_id)",
        ),
    ),
    Migration(
        2,
        "audit log of command invocations",
        (
            # Keyed by the interaction id: a retried job updates its row instead of adding one.
            """CREATE TABLE audit_log (
                interaction_id TEXT PRIMARY KEY,
                at DATETIME NOT NULL,
                guild_id TEXT,
                channel_id TEXT NOT NULL,
                user_id TEXT NOT NULL,
                command TEXT NOT NULL,
                outcome TEXT NOT NULL,
                latency_ms INTEGER NOT NULL
            )""",
            "CREATE INDEX ix_audit_log_at ON audit_log (at)",
        ),
    ),
    Migration(
        3,
        "lexical index; author-prefixed text re-embedded",
        (
            # One row per live message, keyed by its id (see app.store.lexical).
            "CREATE VIRTUAL TABLE message_text USING fts5(channel_id UNINDEXED, scope, author, "
            "body, alt, date, ctx, tokenize='porter unicode61')",
            "CREATE INDEX ix_messages_channel_author ON messages (channel_id, author_id)",
            # What is embedded is now "author: text [photo: alt text]": embed everything again.
            "UPDATE messages SET index_state = 'pending' WHERE deleted = FALSE",
        ),
        postgres=(
            """CREATE TABLE message_text (
                id BIGINT PRIMARY KEY,
                channel_id TEXT NOT NULL,
                document TSVECTOR NOT NULL
            )""",
            "CREATE INDEX ix_message_text_document ON message_text USING GIN (document)",
            "CREATE INDEX ix_message_text_channel ON message_text (channel_id, id)",
            "CREATE INDEX ix_messages_channel_author ON messages (channel_id, author_id)",
            "UPDATE messages SET index_state = 'pending' WHERE deleted = FALSE",
        ),
        # The rebuild from the rows runs in migration 4: it reads the `withheld` column.
    ),
    Migration(
        4,
        "members' privacy: opt-outs, withheld messages, spans to fetch again",
        (
            # A member who opted out (app.store.privacy): their messages are kept without text.
            "CREATE TABLE opted_out (user_id TEXT PRIMARY KEY, at DATETIME NOT NULL)",
            "ALTER TABLE messages ADD COLUMN withheld BOOLEAN NOT NULL DEFAULT FALSE",
            # Per channel, the ids after `after_id` up to `until_id` to read from Discord again
            # (a member opted back in); `after_id` moves with each page written.
            """CREATE TABLE refetch_spans (
                channel_id TEXT PRIMARY KEY,
                after_id BIGINT NOT NULL,
                until_id BIGINT NOT NULL
            )""",
        ),
        then=_build_lexical_if_missing,
    ),
)

# The advisory lock key migrators take on Postgres (any constant shared by every process).
_PG_MIGRATION_LOCK = 7_204_311_958

_VERSION_TABLE = """CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TEXT NOT NULL
)"""

# Postgres spellings of the SQLite types above. "INTEGER PRIMARY KEY" is SQLite's rowid alias
# (64-bit); Postgres needs BIGINT for snowflakes. Times are stored as fixed-width UTC text.
_POSTGRES_TYPES = (("INTEGER PRIMARY KEY", "BIGINT PRIMARY KEY"), ("DATETIME", "TEXT"))


def render(statement: str, dialect: str) -> str:
    """A statement as the given database dialect ("sqlite" or "postgresql") spells it."""
    if dialect.startswith("postgres"):
        for sqlite_type, postgres_type in _POSTGRES_TYPES:
            statement = statement.replace(sqlite_type, postgres_type)
    return statement


async def apply_migrations(
    database: Any, migrations: Sequence[Migration] = MIGRATIONS
) -> list[int]:
    """Apply the migrations missing from `schema_version`, in order; return their versions."""
    _check_sequence(migrations)
    dialect = str(database.url.dialect)
    async with database.transaction():
        await _exclude_other_migrators(database, dialect)
        await database.execute(_VERSION_TABLE)
    rows = await database.fetch_all("SELECT version FROM schema_version")
    done = {int(row["version"]) for row in rows}
    applied: list[int] = []
    for migration in migrations:
        if migration.version in done:
            continue
        async with database.transaction():
            await _exclude_other_migrators(database, dialect)
            # Re-checked inside the transaction, so a concurrent migrator cannot apply it twice.
            already = await database.fetch_val(
                "SELECT COUNT(*) FROM schema_version WHERE version = :version",
                {"version": migration.version},
            )
            if already:
                continue
            postgres = dialect.startswith("postgres") and migration.postgres is not None
            statements = migration.postgres if postgres else migration.statements
            for statement in statements or ():
                await database.execute(render(statement, dialect))
            if migration.then is not None:
                await migration.then(database)
            await database.execute(
                "INSERT INTO schema_version (version, name, applied_at) "
                "VALUES (:version, :name, :applied_at)",
                {
                    "version": migration.version,
                    "name": migration.name,
                    "applied_at": datetime.now(UTC).isoformat(timespec="seconds"),
                },
            )
        logger.info("applied schema migration %d (%s)", migration.version, migration.name)
        applied.append(migration.version)
    return applied


async def _exclude_other_migrators(database: Any, dialect: str) -> None:
    """On Postgres, wait for any other process's migration transaction to end."""
    if dialect.startswith("postgres"):
        await database.execute(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")


def _check_sequence(migrations: Sequence[Migration]) -> None:
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migration versions must be 1..n in order, got {versions}")
