"""Members' privacy in the store: opting out empties every trace of a member's text, at once
and for every later write; opting back in queues their messages to be read again."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from app.discord.snowflakes import time_snowflake
from app.store.db import Store
from app.store.models import Attachment, Embed, IndexState, StoredMessage
from app.store.privacy import RefetchSpan

START = datetime(2023, 5, 8, 13, 56, tzinfo=UTC)


def message(n: int, text: str, author: str = "Ana", **extra: object) -> StoredMessage:
    at = START + timedelta(minutes=n)
    return StoredMessage(
        id=time_snowflake(at.timestamp(), n),
        channel_id=str(extra.pop("channel", "c1")),
        guild_id="g1",
        author_id=f"u-{author.lower()}",
        author_name=author,
        content=text,
        timestamp=at,
        **extra,  # type: ignore[arg-type]
    )


async def found(store: Store, *words: str, channels: tuple[str, ...] = ("c1",)) -> list[int]:
    return [i for i, _ in await store.lexical_search(list(channels), list(words), 10)]


async def lexical_text(store: Store) -> str:
    """Every word the lexical index holds, whatever the engine."""
    if store.is_sqlite:
        rows = await store.database.fetch_all(
            "SELECT author || ' ' || body || ' ' || alt || ' ' || ctx AS t FROM message_text"
        )
    else:
        rows = await store.database.fetch_all("SELECT document::text AS t FROM message_text")
    return " ".join(str(r["t"]) for r in rows).lower()


def conversation() -> list[StoredMessage]:
    ana = message(
        2,
        "my flamingo password is hunter2",
        attachments=(Attachment("a1", "flamingo.png", description="pink flamingo"),),
        embeds=(Embed(title="flamingo club", description="members only"),),
    )
    return [
        message(1, "what is everyone's password?", author="Ben"),
        ana,
        message(3, "nice, thanks", author="Cy"),
        message(4, "unrelated chatter about lunch", author="Ben"),
        message(5, "that bird is great", author="Cy", reply_to_id=ana.id),
        message(6, "also a later note", author="Ana"),
    ]


async def test_opting_out_empties_the_member_and_every_trace_of_their_words(
    store: Store,
) -> None:
    page = conversation()
    await store.save_page("c1", page)
    await store.mark_indexed([m.id for m in page])
    assert "flamingo" in await lexical_text(store)

    result = await store.opt_out("u-ana")

    assert not result.already and result.cleared == 2
    assert sorted(result.vector_ids) == [page[1].id, page[5].id]
    rows = await store.database.fetch_all(
        "SELECT content, attachments, embeds, withheld, index_state FROM messages "
        "WHERE author_id = 'u-ana'"
    )
    assert [(r["content"], r["attachments"], r["embeds"]) for r in rows] == [("", "[]", "[]")] * 2
    assert all(r["withheld"] for r in rows)
    assert {r["index_state"] for r in rows} == {IndexState.PENDING_REMOVAL.value}
    # Not their own rows, nor their words in the neighbours' and the reply's context.
    words = await lexical_text(store)
    assert "flamingo" not in words and "hunter2" not in words and "ana" not in words
    assert await found(store, "flamingo") == []
    assert await found(store, "hunter2") == []
    assert set(await found(store, "bird")) == {page[4].id, page[3].id}
    # Their vectors are queued for removal; nothing of theirs is embedded again.
    assert sorted(await store.pending_removal(10)) == [page[1].id, page[5].id]
    assert [m.id for m in await store.pending_index(10)] == []


async def test_reads_never_return_a_withheld_message_with_text_nor_name_it(
    store: Store,
) -> None:
    page = conversation()
    await store.save_page("c1", page)
    await store.opt_out("u-ana")
    others = [m.id for m in page if m.author_id != "u-ana"]
    assert [m.id for m in await store.recent_messages("c1", 10)] == others
    assert [m.id for m in await store.messages_from("c1", page[0].id, 10)] == others
    assert [m.id for m in await store.neighbours("c1", page[2].id, 2, 2)] == others[:4]
    batches = [m.id async for batch in store.iter_live_messages() for m in batch]
    assert batches == others
    assert await store.channel_authors(["c1"]) == {"u-ben": "Ben", "u-cy": "Cy"}
    # No one's neighbour, and no facts of its own for fusion.
    facts = await store.search_facts([m.id for m in page])
    assert facts.keys() == set(others)
    assert facts[page[0].id].neighbours == (page[2].id,)
    # By id it is there, without text, and says so.
    (withheld,) = await store.get_messages([page[1].id])
    assert withheld.withheld and withheld.index_text == ""
    assert await store.withheld_ids([m.id for m in page]) == {page[1].id, page[5].id}
    # Counted, never named.
    stats = await store.channel_stats(["c1"])
    assert stats.count == 6
    assert [a.author_id for a in stats.top_authors] == ["u-ben", "u-cy"]
    assert await store.count_live(["c1"]) == 6


async def test_later_writes_store_an_opted_out_member_without_text(store: Store) -> None:
    page = conversation()
    await store.opt_out("u-ana")
    # A sync, a recheck or an import: the same save_page.
    result = await store.save_page("c1", page)
    assert len(result.new) == 6
    again = await store.save_page("c1", [replace(page[1], content="edited flamingo")])
    assert again.unchanged == (page[1].id,)
    (stored,) = await store.get_messages([page[1].id])
    assert stored.withheld and stored.content == "" and not stored.attachments
    assert stored.index_state is IndexState.REMOVED
    assert await found(store, "flamingo") == []
    assert "hunter2" not in await lexical_text(store)
    assert page[1].id not in {m.id for m in await store.pending_index(10)}


async def test_reindex_never_embeds_a_withheld_message(store: Store) -> None:
    await store.save_page("c1", conversation())
    await store.opt_out("u-ana")
    await store.reset_index_state()
    assert {m.author_id for m in await store.pending_index(10)} == {"u-ben", "u-cy"}


async def test_the_first_opt_out_holds_and_status_says_since_when(store: Store) -> None:
    first = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)
    assert (await store.privacy_status("u-ana")).since is None
    await store.save_page("c1", conversation())
    done = await store.opt_out("u-ana", at=first)
    again = await store.opt_out("u-ana")
    assert done.since == again.since == first
    assert again.already and again.cleared == 0
    status = await store.privacy_status("u-ana")
    assert status.since == first and status.withheld == 2
    listed = await store.opted_out_members()
    assert [(o.user_id, o.at, o.name, o.withheld) for o in listed] == [("u-ana", first, "Ana", 2)]


async def test_opting_in_queues_each_channel_span_and_a_refetched_page_restores_text(
    store: Store,
) -> None:
    page = conversation()
    elsewhere = message(7, "flamingo in the other channel", channel="c2")
    await store.save_page("c1", page)
    await store.save_page("c2", [elsewhere])
    await store.opt_out("u-ana")

    result = await store.opt_in("u-ana")

    assert result.was_opted_out and (result.messages, result.channels) == (3, 2)
    assert (await store.privacy_status("u-ana")).since is None
    span = await store.refetch_span("c1")
    assert span == RefetchSpan("c1", page[1].id - 1, page[5].id)
    # Still withheld until Discord gives the text back.
    assert await found(store, "hunter2") == []
    # The text comes back from a page read again, and the span moves with it.
    saved = await store.save_refetched_page("c1", page[:3], span, page[2].id)
    assert saved.edited == (page[1].id,)
    assert await store.refetch_span("c1") == RefetchSpan("c1", page[2].id, page[5].id)
    (restored,) = await store.get_messages([page[1].id])
    assert not restored.withheld and restored.content == page[1].content
    assert not restored.edited and restored.index_state is IndexState.PENDING
    hits = await found(store, "hunter2")
    assert hits[0] == page[1].id and page[2].id in hits
    # The last page ends the span.
    span = await store.refetch_span("c1")
    assert span is not None
    await store.save_refetched_page("c1", page[3:], span, page[5].id)
    assert await store.refetch_span("c1") is None
    assert await store.withheld_ids([m.id for m in page]) == set()


async def test_a_span_widened_meanwhile_is_not_moved_by_the_walk_that_read_it(
    store: Store,
) -> None:
    page = conversation()
    await store.save_page("c1", page)
    await store.opt_out("u-cy")
    await store.opt_in("u-cy")
    read = await store.refetch_span("c1")
    assert read == RefetchSpan("c1", page[2].id - 1, page[4].id)
    # Ana opts in too before the walk writes its first page: her span is earlier.
    await store.opt_out("u-ana")
    await store.opt_in("u-ana")
    widened = RefetchSpan("c1", page[1].id - 1, page[5].id)
    assert await store.refetch_span("c1") == widened
    await store.save_refetched_page("c1", page[2:5], read, page[4].id)
    assert await store.refetch_span("c1") == widened


async def test_opting_out_a_member_with_many_messages_rewrites_few_ranges(store: Store) -> None:
    # Ana writes every third message of 1,500: her rows and their neighbours are rewritten.
    page = [
        message(
            n, f"note {n} zebra" if n % 3 == 0 else f"reply {n}", "Ana" if n % 3 == 0 else "Ben"
        )
        for n in range(1, 1501)
    ]
    for start in range(0, len(page), 100):
        await store.save_page("c1", page[start : start + 100])
    result = await store.opt_out("u-ana")
    assert result.cleared == 500
    assert await found(store, "zebra") == []
    assert len(await found(store, "reply")) == 10
