"""What /stats reads: messages per week and the counts of a period, on SQLite and Postgres."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from app.discord.snowflakes import time_snowflake
from app.store.db import Store
from app.store.models import AuthorCount, StoredMessage, WeekCount

# Monday 2024-05-06, 00:00 UTC.
MONDAY = datetime(2024, 5, 6, tzinfo=UTC)


def at(when: datetime, *, channel: str = "c1", author: str = "u1", n: int = 0) -> StoredMessage:
    """A message written at `when` (its id dates it too)."""
    return StoredMessage(
        id=time_snowflake(when.timestamp(), n),
        channel_id=channel,
        guild_id="g1",
        author_id=author,
        author_name=author.upper(),
        content=f"message at {when.isoformat()}",
        timestamp=when,
    )


async def test_messages_are_counted_per_week_starting_monday(store: Store) -> None:
    times = [
        MONDAY,  # the first second of a week
        MONDAY + timedelta(days=6, hours=23, minutes=59),  # its last minute, a Sunday
        MONDAY + timedelta(days=7),  # next Monday
        MONDAY + timedelta(days=22),  # a Wednesday two weeks on; the week between is quiet
        MONDAY + timedelta(days=23),
    ]
    await store.save_page("c1", [at(t, n=i) for i, t in enumerate(times)])
    await store.save_page("c2", [at(MONDAY + timedelta(days=1), channel="c2")])
    await store.save_page("c3", [at(MONDAY + timedelta(days=8), channel="c3")])

    weeks = await store.messages_per_week(["c1", "c2"])
    assert weeks == [
        WeekCount(date(2024, 5, 6), 3),
        WeekCount(date(2024, 5, 13), 1),
        WeekCount(date(2024, 5, 27), 2),
    ]
    assert await store.messages_per_week([]) == []
    assert await store.messages_per_week(["nothing"]) == []


async def test_deleted_messages_are_not_counted(store: Store) -> None:
    first, second = at(MONDAY, n=1), at(MONDAY + timedelta(hours=1), n=2)
    await store.save_page("c1", [first, second])
    await store.mark_deleted("c1", [second.id])
    assert await store.messages_per_week(["c1"]) == [WeekCount(date(2024, 5, 6), 1)]


async def test_a_period_narrows_the_weeks_and_the_counts(store: Store) -> None:
    old = [at(MONDAY - timedelta(days=400 + i), author="u1", n=i) for i in range(5)]
    recent = [at(MONDAY + timedelta(days=i), author="u2", n=10 + i) for i in range(3)]
    recent += [at(MONDAY + timedelta(days=3, hours=i), author="u3", n=20 + i) for i in range(2)]
    await store.save_page("c1", sorted(old + recent, key=lambda m: m.id))
    since = MONDAY - timedelta(days=30)

    everything = await store.channel_stats(["c1"])
    assert everything.count == 10
    assert everything.top_authors[0] == AuthorCount("u1", "U1", 5)

    period = await store.channel_stats(["c1"], since=since)
    assert period.count == 5
    assert period.first == MONDAY and period.last == MONDAY + timedelta(days=3, hours=1)
    assert period.top_authors == (AuthorCount("u2", "U2", 3), AuthorCount("u3", "U3", 2))

    assert await store.messages_per_week(["c1"], since=since) == [WeekCount(date(2024, 5, 6), 5)]
    assert [w.message_count for w in await store.messages_per_week(["c1"])] == [5, 5]
    future = MONDAY + timedelta(days=100)
    assert (await store.channel_stats(["c1"], since=future)).count == 0
    assert await store.messages_per_week(["c1"], since=future) == []
