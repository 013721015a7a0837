"""A channel's messages from an id on: what "Summarize from here" and `/summarize since` read."""

from __future__ import annotations

from app.store.db import Store
from tests.store.test_db import mid, msg


async def test_messages_from_an_id_the_first_or_the_latest(store: Store) -> None:
    await store.save_page("c1", [msg(n) for n in range(1, 11)])
    await store.save_page("c2", [msg(n, channel="c2") for n in range(11, 14)])

    # From a message on, it included, oldest first; the first `limit` of them.
    found = await store.messages_from("c1", mid(4), 3)
    assert [m.id for m in found] == [mid(4), mid(5), mid(6)]
    assert [m.id for m in await store.messages_from("c1", mid(4), 100)] == [
        mid(n) for n in range(4, 11)
    ]
    # With `latest`, the range ends now: the last `limit` of it, still oldest first.
    latest = await store.messages_from("c1", mid(4), 3, latest=True)
    assert [m.id for m in latest] == [mid(8), mid(9), mid(10)]
    assert [m.id for m in await store.messages_from("c1", 0, 2, latest=True)] == [mid(9), mid(10)]
    # Another channel's messages and an id past the end give nothing of c1.
    assert [m.channel_id for m in await store.messages_from("c2", 0, 10)] == ["c2"] * 3
    assert await store.messages_from("c1", mid(11), 10) == []
    assert await store.messages_from("nowhere", 0, 10) == []


async def test_messages_from_skip_deleted_messages(store: Store) -> None:
    await store.save_page("c1", [msg(n) for n in range(1, 6)])
    await store.mark_deleted("c1", [mid(2), mid(4)])
    assert [m.id for m in await store.messages_from("c1", mid(2), 10)] == [mid(3), mid(5)]
    assert [m.id for m in await store.messages_from("c1", 0, 2, latest=True)] == [mid(3), mid(5)]
