"""Store reads and writes against a real SQLite file."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from app.discord.snowflakes import snowflake_time, time_snowflake
from app.store.db import Store
from app.store.models import (
    PUBLIC_THREAD,
    Attachment,
    AuthorCount,
    ChannelAccess,
    ChannelRecord,
    IndexState,
    PermissionOverwrite,
    RoleRecord,
    StoredMessage,
)

GUILD = "900000000000000001"
BASE = time_snowflake(datetime(2024, 5, 1, tzinfo=UTC).timestamp())


def msg(
    n: int,
    *,
    channel: str = "c1",
    content: str | None = None,
    author: str = "u1",
    name: str = "Alice",
    bot: bool = False,
) -> StoredMessage:
    """The n-th message of a test channel: ids grow with n, times follow the ids."""
    message_id = BASE + (n << 22)
    return StoredMessage(
        id=message_id,
        channel_id=channel,
        guild_id=GUILD,
        author_id=author,
        author_name=name,
        author_is_bot=bot,
        content=f"message {n}" if content is None else content,
        timestamp=datetime.fromtimestamp(snowflake_time(message_id), UTC),
    )


def mid(n: int) -> int:
    return BASE + (n << 22)


async def test_save_page_sorts_new_edited_unchanged(store: Store) -> None:
    first = await store.save_page("c1", [msg(1), msg(2), msg(3)])
    assert first.new == (mid(1), mid(2), mid(3))
    assert first.edited == first.unchanged == ()
    await store.mark_indexed([mid(1), mid(2), mid(3)])

    edited_at = datetime(2024, 5, 2, 12, 0, tzinfo=UTC)
    changed = replace(msg(2, content="message 2, corrected"), edited=True, edited_at=edited_at)
    second = await store.save_page("c1", [msg(1), changed, msg(3), msg(4)])
    assert second.new == (mid(4),)
    assert second.edited == (mid(2),)
    assert second.unchanged == (mid(1), mid(3))
    assert second.changed == (mid(4), mid(2))

    [stored] = await store.get_messages([mid(2)])
    assert stored.content == "message 2, corrected"
    assert stored.edited and stored.edited_at == edited_at
    assert stored.index_state is IndexState.PENDING
    assert stored.content_hash == changed.content_hash
    pending = [m.id for m in await store.pending_index(10)]
    assert pending == [mid(2), mid(4)]  # unchanged rows kept their indexed state


async def test_import_twice_changes_nothing(store: Store) -> None:
    page = [msg(n) for n in range(1, 8)]
    await store.save_page("c1", page)
    again = await store.save_page("c1", page)
    assert again.new == again.edited == ()
    assert again.unchanged == tuple(m.id for m in page)


async def test_edit_without_new_text_keeps_index_state(store: Store) -> None:
    await store.save_page("c1", [msg(1, content="")])
    await store.mark_indexed([mid(1)])
    # An attachment is part of the message's text, under blank content or beside text.
    with_file = replace(msg(1, content=""), attachments=(Attachment("a1", "plan.pdf"),))
    result = await store.save_page("c1", [with_file])
    assert result.edited == (mid(1),)
    assert (await store.get_messages([mid(1)]))[0].index_state is IndexState.PENDING

    photo = Attachment("a2", "photo.jpg", url="https://cdn.example/a2?ex=1")
    await store.save_page("c1", [replace(msg(2), attachments=(photo,))])
    await store.mark_indexed([mid(1), mid(2)])
    # Discord signs attachment URLs for a while only: a new URL is not new text.
    moved = replace(photo, url="https://cdn.example/a2?ex=2")
    result = await store.save_page("c1", [replace(msg(2), attachments=(moved,))])
    assert result.edited == (mid(2),)
    [stored] = await store.get_messages([mid(2)])
    assert stored.attachments == (moved,)
    assert stored.index_state is IndexState.INDEXED


async def test_cursor_fields_are_written_with_the_page(store: Store) -> None:
    await store.save_page("c1", [msg(5), msg(6)], newest_id=mid(6), backfill_before=mid(5))
    state = await store.channel_state("c1")
    assert state is not None
    assert (state.newest_synced_id, state.backfill_before_id) == (mid(6), mid(5))
    assert not state.backfill_complete
    assert state.last_synced_at is not None
    assert state.access is ChannelAccess.OK

    await store.save_page("c1", [msg(4)], backfill_before=mid(4), backfill_complete=True)
    state = await store.channel_state("c1")
    assert state is not None
    assert (state.newest_synced_id, state.backfill_before_id) == (mid(6), mid(4))
    assert state.backfill_complete
    channel = await store.get_channel("c1")
    assert channel is not None and channel.guild_id == GUILD


async def test_failed_page_leaves_neither_messages_nor_cursor(store: Store) -> None:
    await store.save_page("c1", [msg(1)], newest_id=mid(1), backfill_before=mid(1))
    # Three INSERT chunks; the last message breaks NOT NULL, after the cursor and two chunks.
    page = [msg(n) for n in range(2, 121)]
    page.append(replace(msg(121), author_id=None))  # type: ignore[arg-type]
    with pytest.raises(Exception, match=r"(?i)not.null"):
        await store.save_page("c1", page, newest_id=mid(121))
    assert await store.count_live(["c1"]) == 1
    state = await store.channel_state("c1")
    assert state is not None and state.newest_synced_id == mid(1)

    broken = replace(msg(50, channel="c2"), author_id=None)  # type: ignore[arg-type]
    with pytest.raises(Exception, match=r"(?i)not.null"):
        await store.save_page("c2", [broken], newest_id=mid(50))
    assert await store.channel_state("c2") is None


async def test_page_must_belong_to_its_channel(store: Store) -> None:
    with pytest.raises(ValueError, match="channel c2"):
        await store.save_page("c1", [msg(1), msg(2, channel="c2")])
    assert await store.count_live() == 0


async def test_deleted_messages_never_come_back(store: Store) -> None:
    await store.save_page("c1", [msg(n) for n in range(1, 6)])
    await store.mark_indexed([mid(n) for n in range(1, 6)])
    await store.mark_deleted("c1", [mid(3)])
    await store.mark_deleted("c2", [mid(4)])  # another channel's id list touches nothing here

    assert [m.id for m in await store.get_messages([mid(2), mid(3)])] == [mid(2)]
    assert mid(3) not in [m.id for m in await store.neighbours("c1", mid(2))]
    assert mid(3) not in [m.id for m in await store.recent_messages("c1", 10)]
    assert mid(3) not in await store.live_ids_since("c1", 0)
    assert (await store.channel_stats(["c1"])).count == 4
    assert await store.count_live(["c1"]) == 4
    batches = [[m.id for m in batch] async for batch in store.iter_live_messages(batch=2)]
    assert batches == [[mid(1), mid(2)], [mid(4), mid(5)]]
    assert await store.pending_index(10) == []

    assert await store.pending_removal(10) == [mid(3)]
    await store.mark_removed([mid(3)])
    assert await store.pending_removal(10) == []
    await store.reset_index_state()
    assert [m.id for m in await store.pending_index(10)] == [mid(n) for n in (1, 2, 4, 5)]
    assert await store.get_messages([mid(3)]) == []


async def test_deleted_message_seen_again_is_revived(store: Store) -> None:
    await store.save_page("c1", [msg(1), msg(2)])
    await store.mark_deleted("c1", [mid(2)])
    result = await store.save_page("c1", [msg(1), msg(2)])
    assert result.edited == (mid(2),)
    [revived] = await store.get_messages([mid(2)])
    assert revived.index_state is IndexState.PENDING and not revived.deleted


async def test_index_state_transitions(store: Store) -> None:
    await store.save_page("c1", [msg(1), msg(2), msg(3)])
    assert await store.count_live(index_state=IndexState.PENDING) == 3
    read = await store.pending_index(2)
    assert [m.id for m in read] == [mid(1), mid(2)]

    # Message 2 is edited while the indexer embeds what it read: it must stay pending.
    await store.save_page("c1", [msg(2, content="message 2 v2")])
    await store.mark_indexed(
        [m.id for m in read], expected_hashes={m.id: m.content_hash for m in read}
    )
    assert [m.id for m in await store.pending_index(10)] == [mid(2), mid(3)]
    assert await store.count_live(index_state=IndexState.INDEXED) == 1

    await store.mark_indexed([mid(2), mid(3)])
    assert await store.pending_index(10) == []
    await store.mark_deleted("c1", [mid(1)])
    await store.mark_indexed([mid(1)])  # a deleted row is never marked indexed
    assert await store.pending_removal(10) == [mid(1)]

    await store.reset_index_state()
    assert await store.count_live(index_state=IndexState.PENDING) == 2
    assert await store.pending_removal(10) == [mid(1)]


async def test_neighbours_recent_and_windows(store: Store) -> None:
    await store.save_page("c1", [msg(n, bot=n == 4) for n in range(1, 10)])
    await store.save_page("c2", [msg(n, channel="c2") for n in range(10, 13)])

    around = await store.neighbours("c1", mid(5))
    assert [m.id for m in around] == [mid(n) for n in (3, 4, 5, 6, 7)]
    assert [m.author_is_bot for m in around] == [False, True, False, False, False]
    assert [m.id for m in await store.neighbours("c1", mid(1), before=3, after=1)] == [
        mid(1),
        mid(2),
    ]
    assert [m.id for m in await store.neighbours("c1", mid(9), before=1, after=5)] == [
        mid(8),
        mid(9),
    ]
    await store.mark_deleted("c1", [mid(5)])
    assert [m.id for m in await store.neighbours("c1", mid(5), before=1, after=1)] == [
        mid(4),
        mid(6),
    ]
    await store.mark_deleted("c1", [mid(1)])
    assert [m.id for m in await store.neighbours("c1", mid(1), before=2, after=2)] == [
        mid(2),
        mid(3),
    ]

    recent = await store.recent_messages("c1", 3)
    assert [m.id for m in recent] == [mid(7), mid(8), mid(9)]
    assert [m.timestamp for m in recent] == sorted(m.timestamp for m in recent)
    assert list(await store.live_ids_since("c1", mid(7))) == [mid(8), mid(9)]
    assert (await store.live_ids_since("c1", mid(7)))[mid(8)] == msg(8).content_hash


async def test_channel_stats(store: Store) -> None:
    page = [
        msg(1, author="u1", name="alice"),
        msg(2, author="u2", name="Bob"),
        msg(3, author="u1", name="alice"),
        msg(4, author="u3", name="Cara"),
        msg(5, author="u1", name="Alice K"),
        msg(6, author="u2", name="Bob"),
    ]
    await store.save_page("c1", page)
    await store.save_page("c2", [msg(7, channel="c2", author="u3", name="Cara")])

    stats = await store.channel_stats(["c1"], top=2)
    assert stats.count == 6
    assert stats.first == page[0].timestamp and stats.last == page[-1].timestamp
    assert stats.top_authors == (AuthorCount("u1", "Alice K", 3), AuthorCount("u2", "Bob", 2))

    both = await store.channel_stats(["c1", "c2"])
    assert both.count == 7
    assert both.top_authors[-1] == ("u3", "Cara", 2)
    empty = await store.channel_stats(["nothing"])
    assert (empty.count, empty.first, empty.last, empty.top_authors) == (0, None, None, ())


async def test_channels_keep_sync_state_across_upserts(store: Store) -> None:
    overwrite = PermissionOverwrite(id=GUILD, type=0, allow=0, deny=1 << 10)
    big = PermissionOverwrite(id="r2", type=0, allow=(1 << 70) | 1024, deny=0)
    general = ChannelRecord("c1", GUILD, "general", position=1, permission_overwrites=(overwrite,))
    thread = ChannelRecord("t1", GUILD, "a thread", type=PUBLIC_THREAD, parent_id="c1")
    await store.upsert_channels([general, thread, ChannelRecord("c0", GUILD, "rules")])
    await store.save_page("c1", [msg(1)], newest_id=mid(1))

    renamed = replace(general, name="chat", permission_overwrites=(overwrite, big))
    await store.upsert_channels([renamed])
    assert await store.get_channel("c1") == renamed
    state = await store.channel_state("c1")
    assert state is not None and state.newest_synced_id == mid(1)
    assert [c.id for c in await store.channels_for_guild(GUILD)] == ["c0", "t1", "c1"]
    assert await store.threads_of("c1") == [thread]
    assert (await store.threads_of("c1"))[0].is_thread
    assert await store.get_channel("nope") is None

    await store.set_channel_access("c1", ChannelAccess.NO_ACCESS)
    state = await store.channel_state("c1")
    assert state is not None and state.access is ChannelAccess.NO_ACCESS


async def test_replace_roles(store: Store) -> None:
    admin = RoleRecord("r1", GUILD, "Admins", permissions=(1 << 3) | (1 << 45), position=3)
    everyone = RoleRecord(GUILD, GUILD, "@everyone", permissions=1024, position=0)
    await store.replace_roles(GUILD, [admin, everyone])
    await store.replace_roles("other", [RoleRecord("r9", "other", "x", 0)])
    assert await store.roles_for_guild(GUILD) == [everyone, admin]

    await store.replace_roles(GUILD, [everyone])
    assert await store.roles_for_guild(GUILD) == [everyone]
    assert len(await store.roles_for_guild("other")) == 1
    with pytest.raises(ValueError, match="guild other"):
        await store.replace_roles(GUILD, [RoleRecord("r9", "other", "x", 0)])


async def test_large_batches_round_trip(store: Store) -> None:
    page = [msg(n, author=f"u{n % 7}") for n in range(1, 1201)]
    result = await store.save_page("c1", page)
    assert len(result.new) == 1200
    assert await store.count_live(["c1"]) == 1200
    fetched = await store.get_messages([m.id for m in page])
    assert fetched == page
    await store.mark_indexed(m.id for m in page)
    assert await store.count_live(index_state=IndexState.INDEXED) == 1200
