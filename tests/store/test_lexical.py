"""The lexical index on a real SQLite file: written with the rows, searched with BM25."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from app.discord.snowflakes import time_snowflake
from app.store import lexical_search
from app.store.db import Store
from app.store.lexical_search import IndexStats
from app.store.migrations import MIGRATIONS
from app.store.models import Attachment, IndexState, StoredMessage, format_time

START = datetime(2023, 5, 8, 13, 56, tzinfo=UTC)


def message(
    n: int, text: str, *, author: str = "Ana", minutes: float | None = None, **extra: object
) -> StoredMessage:
    at = START + timedelta(minutes=n if minutes is None else minutes)
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


async def found(store: Store, words: list[str], channels: tuple[str, ...] = ("c1",)) -> list[int]:
    return [i for i, _ in await store.lexical_search(list(channels), words, 10)]


async def test_a_saved_page_is_searchable_by_its_words_at_once(store: Store) -> None:
    page = [message(1, "the grafana dashboard is down"), message(2, "lunch at noon?")]
    await store.save_page("c1", page)
    # The message first; its neighbour holds it as context, weighted less.
    assert await found(store, ["grafana"]) == [page[0].id, page[1].id]
    # Porter stemming: "dashboards" finds "dashboard".
    assert (await found(store, ["dashboards"]))[0] == page[0].id
    assert await found(store, ["pizza"]) == []


async def test_search_stays_in_the_channels_it_is_given(store: Store) -> None:
    here = message(1, "the launch codename is heron")
    there = message(2, "the launch codename is secret", channel="c2")
    await store.save_page("c1", [here])
    await store.save_page("c2", [there])
    assert await found(store, ["launch", "codename"]) == [here.id]
    assert sorted(await found(store, ["launch"], ("c1", "c2"))) == sorted([here.id, there.id])
    assert await store.lexical_search([], ["launch"], 10) == []


async def test_query_syntax_in_words_is_only_text(store: Store) -> None:
    await store.save_page("c1", [message(1, 'he said "NEAR" and AND OR NOT * ^ : -x')])
    for words in (["NEAR("], ['"'], ["AND"], ["*"], ["col:umn"], ["-x"], ["^"], ["NOT", "OR"]):
        # Never an FTS5 syntax error, whatever a member types.
        await store.lexical_search(["c1"], words, 10)
    assert await found(store, ["NEAR"]) != []


async def test_context_holds_the_neighbours_within_a_conversation(store: Store) -> None:
    question = message(1, "how was the charity race?", author="Ben")
    answer = message(2, "it was amazing, we raised a lot", author="Ana")
    # Hours later: another conversation, not context.
    later = message(3, "anyone seen my keys?", author="Ben", minutes=300)
    await store.save_page("c1", [question, answer, later])
    # The reply is found through the question before it, below the question itself.
    assert await found(store, ["charity", "race"]) == [question.id, answer.id]
    assert later.id not in await found(store, ["raised"])
    assert await found(store, ["keys"]) == [later.id]


async def test_a_reply_carries_the_message_it_answers(store: Store) -> None:
    original = message(1, "which port does the grafana server use?", author="Ben")
    filler = [message(n, f"unrelated chatter {n}", minutes=n * 200) for n in range(2, 5)]
    reply = message(5, "3000", minutes=1000, reply_to_id=original.id)
    await store.save_page("c1", [original, *filler, reply])
    assert reply.id in await found(store, ["grafana", "port"])


async def test_edits_and_deletions_show_at_once(store: Store) -> None:
    first = message(1, "the picnic is at the lake")
    second = message(2, "bring sunscreen")
    third = message(3, "and snacks")
    await store.save_page("c1", [first, second, third])
    await store.save_page("c1", [replace(first, content="the budget review moved to monday")])
    # Gone from the message and from its neighbour's context alike.
    assert await found(store, ["picnic"]) == []
    assert await found(store, ["budget"]) == [first.id, second.id]
    await store.mark_deleted("c1", [second.id])
    assert second.id not in await found(store, ["sunscreen", "budget", "snacks"])
    # The neighbours now see each other as context.
    assert third.id in await found(store, ["budget"])


async def test_alt_text_dates_and_authors_are_searchable(store: Store) -> None:
    photo = message(
        1,
        "look what I made",
        author="Melanie",
        attachments=(Attachment("a1", "p.jpg", description="a painting of a sunset over a lake"),),
    )
    await store.save_page("c1", [photo, message(2, "wow")])
    assert photo.id in await found(store, ["sunset", "painting"])
    assert (await found(store, ["melanie"]))[0] == photo.id
    assert photo.id in await found(store, ["may", "2023"])


async def test_filters_by_author_and_time(store: Store) -> None:
    early = message(1, "deploy plan v1", author="Ana")
    late = message(100, "deploy plan v2", author="Ben")
    await store.save_page("c1", [early, late])
    assert [
        i for i, _ in await store.lexical_search(["c1"], ["deploy"], 10, author_ids=["u-ben"])
    ] == [late.id]
    after = time_snowflake((START + timedelta(minutes=50)).timestamp())
    assert [i for i, _ in await store.lexical_search(["c1"], ["deploy"], 10, after_id=after)] == [
        late.id
    ]
    assert [i for i, _ in await store.lexical_search(["c1"], ["deploy"], 10, before_id=after)] == [
        early.id
    ]


async def test_authors_and_neighbours_for_fusion(store: Store) -> None:
    a, b = message(1, "hi", author="Ana"), message(2, "hello", author="Ben")
    c = message(3, "much later", author="Ana", minutes=500)
    await store.save_page("c1", [a, b, c])
    assert await store.channel_authors(["c1"]) == {"u-ana": "Ana", "u-ben": "Ben"}
    facts = await store.search_facts([a.id, b.id, c.id, 404])
    assert {i: f.neighbours for i, f in facts.items()} == {a.id: (b.id,), b.id: (a.id,), c.id: ()}
    assert (facts[c.id].channel_id, facts[c.id].author_id) == ("c1", "u-ana")
    assert facts[c.id].timestamp == c.timestamp


async def test_the_migration_builds_the_index_for_an_existing_database(
    database_url: str,
) -> None:
    url = database_url
    async with Store(Store.from_url(url).database, MIGRATIONS[:2]) as old:
        await old.migrate()
        await old.database.execute(
            "INSERT INTO channels (id, guild_id, name) VALUES ('c1', 'g1', 'general')"
        )
        stored = message(1, "the old grafana note")
        await old.database.execute(
            "INSERT INTO messages (id, channel_id, guild_id, author_id, author_name, content, "
            "timestamp, content_hash, index_state) VALUES (:id, 'c1', 'g1', 'u-ana', 'Ana', "
            ":content, :ts, 'x', 'indexed')",
            {"id": stored.id, "content": stored.content, "ts": format_time(stored.timestamp)},
        )
    async with Store.from_url(url) as store:
        # Migration 4 builds it (it reads the column `withheld` that 4 adds).
        assert await store.migrate() == [3, 4]
        assert await found(store, ["grafana"]) == [stored.id]
        # What is embedded changed ("author: text"): every live row is embedded again.
        assert (await store.get_messages([stored.id]))[0].index_state is IndexState.PENDING


async def test_search_stays_in_the_channels_however_many_are_permitted(store: Store) -> None:
    # The index narrows by naming the channels (few), by naming the ones left out (few
    # left out) or not at all (the SQL filter alone): each way returns exactly the same.
    posted = {}
    for n in range(30):
        posted[f"c{n}"] = message(n, f"release notes for channel {n}", channel=f"c{n}")
        await store.save_page(f"c{n}", [posted[f"c{n}"]])
    for permitted in (3, 25, 10, 30):
        channels = [f"c{n}" for n in range(permitted)]
        hits = await store.lexical_search(channels, ["release", "notes"], 50)
        assert sorted(i for i, _ in hits) == sorted(posted[c].id for c in channels)
    # A channel new since the channels were listed is not left out by the index, and the
    # SQL filter still keeps its messages out.
    late = [message(40 + n, "release notes, the secret ones", channel="c99") for n in range(20)]
    await store.save_page("c99", late)
    channels = [f"c{n}" for n in range(25)]
    hits = await store.lexical_search(channels, ["release", "notes", "secret"], 50)
    assert {i for i, _ in hits} <= {posted[c].id for c in channels}


async def test_common_words_give_way_to_rare_ones(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Scaled down: a word in more than 5 rows (and a tenth of them) is common.
    monkeypatch.setattr(lexical_search, "COMMON_FLOOR", 5)
    # Hours apart, so no message is another's context.
    builds = [message(n, f"deploy finished build {n}", minutes=n * 120) for n in range(30)]
    grafana = message(31, "deploy the grafana alerts", minutes=31 * 120)
    await store.save_page("c1", [*builds, grafana])
    # "deploy" is in every row: only the rare word is searched.
    assert await found(store, ["deploy", "grafana"]) == [grafana.id]
    # Every word common: a row must hold them all.
    hits = await store.lexical_search(["c1"], ["deploy", "build"], 50)
    assert sorted(i for i, _ in hits) == sorted(m.id for m in builds)
    # Below the floor nothing is dropped.
    monkeypatch.setattr(lexical_search, "COMMON_FLOOR", 2000)
    store._index_stats = IndexStats()
    assert len(await found(store, ["deploy", "grafana"])) == 10


def test_index_stats_answer_only_what_they_know() -> None:
    now = [0.0]
    counts = IndexStats(ttl=60, clock=lambda: now[0])
    assert counts.more_than("deploy", 10) is None
    counts.remember("deploy", 11, cap=11)  # counted with LIMIT 11: at least 11
    counts.remember("grafana", 2, cap=11)  # exactly 2
    assert counts.more_than("deploy", 10) is True
    assert counts.more_than("deploy", 20) is None  # "at least 11" cannot say
    assert counts.more_than("grafana", 10) is False
    assert counts.more_than("grafana", 1) is True
    now[0] = 61.0
    assert counts.more_than("grafana", 10) is None
    assert counts.total() is None
    counts.remember_total(500)
    assert counts.total() == 500
