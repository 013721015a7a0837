"""The Chroma message index with the real model, on a real Chroma directory under tmp_path and
on a real Chroma server (`chroma run`, see tests/engines.py): every index test runs on both."""

from __future__ import annotations

import gc
import random
import socket
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from app.retrieval.embedder import Embedder, default_model_dir
from app.retrieval.index import (
    COLLECTION,
    OVERFETCH_MIN,
    Hit,
    IndexItem,
    MessageIndex,
    VectorIndexError,
    close_chroma,
    open_chroma,
)
from app.retrieval.scan import ChannelVectors
from tests.engines import ChromaServer

if TYPE_CHECKING:
    from chromadb.api import ClientAPI

pytestmark = pytest.mark.slow

PLANTED = "The staging database migration is scheduled for Friday at 5pm."
FILLER = [
    "Who wants to play some games tonight?",
    "I pushed a fix for the login page CSS.",
    "Coffee machine on floor 3 is broken again.",
    "Has anyone seen the new trailer?",
    "Reminder: submit your expense reports by Monday.",
    "The cat knocked my mug off the desk lol",
    "Can someone review my PR for the billing service?",
    "Happy birthday Sam!",
    "The weather is great for a bike ride today.",
    "Does the API support pagination yet?",
]
WORDS = [
    *("deploy", "server", "build", "release", "bug", "fix", "merge", "branch", "test"),
    *("docker", "redis", "python", "meeting", "tomorrow", "lunch", "coffee", "pizza"),
    *("music", "game", "cache", "memory", "latency", "database", "query", "vector"),
]


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Embedder]:
    yield Embedder(default_model_dir(), cache_dir=tmp_path_factory.mktemp("models")).load()


@pytest.fixture(params=["embedded", pytest.param("server", marks=pytest.mark.servers)])
def open_client(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[], ClientAPI]]:
    """Opens clients of the test's Chroma: a directory under tmp_path, or the session's Chroma
    server, emptied first. Every client opened is closed after the test."""
    path: Path | None = tmp_path / "chroma"
    url = None
    if request.param == "server":
        server: ChromaServer = request.getfixturevalue("chroma_server")
        server.clear()
        path, url = None, server.url
    opened: list[ClientAPI] = []

    def open_client() -> ClientAPI:
        opened.append(open_chroma(path, url))
        return opened[-1]

    yield open_client
    for client in opened:
        close_chroma(client)


@pytest.fixture
def index(open_client: Callable[[], ClientAPI], embedder: Embedder) -> MessageIndex:
    return MessageIndex(open_client(), embedder)


def item(i: int, text: str, channel: str = "10", ts: int = 1_700_000_000) -> IndexItem:
    return IndexItem(id=i, text=text, channel_id=channel, guild_id="1", author_id="7", timestamp=ts)


def chatter(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 12))) for _ in range(n)]


def test_upsert_count_query_delete(index: MessageIndex) -> None:
    big = 2**62 + 5  # snowflakes exceed 32 bits
    index.upsert([item(i, text) for i, text in enumerate(FILLER, start=1)] + [item(big, PLANTED)])
    assert index.count() == len(FILLER) + 1
    hits = index.query("when do we migrate the staging DB?", channel_ids=None, k=3)
    assert len(hits) == 3
    assert hits[0] == Hit(id=big, similarity=hits[0].similarity, channel_id="10")
    assert hits[0].similarity > 0.5
    assert [h.similarity for h in hits] == sorted((h.similarity for h in hits), reverse=True)
    index.upsert([item(big, "Pizza party on the roof!")])  # same id replaces
    assert index.count() == len(FILLER) + 1
    assert index.query(PLANTED, channel_ids=None, k=1)[0].id != big
    index.delete([big, 999_999])
    assert index.count() == len(FILLER)
    assert big not in {h.id for h in index.query("pizza party", channel_ids=None, k=20)}


def test_query_accepts_a_vector(index: MessageIndex, embedder: Embedder) -> None:
    index.upsert([item(1, PLANTED), item(2, FILLER[0])])
    (vector,) = embedder.encode(["staging migration on Friday"])
    assert index.query(vector, channel_ids=["10"], k=1)[0].id == 1
    with pytest.raises(VectorIndexError, match="dimensions"):
        index.query(np.zeros(12, dtype=np.float32), channel_ids=None, k=1)


def test_collection_is_cosine_without_chroma_embedding_function(
    open_client: Callable[[], ClientAPI],
) -> None:
    client = open_client()
    MessageIndex(client, Embedder(default_model_dir()))
    config = client.get_collection(COLLECTION, embedding_function=None).configuration_json
    assert config["hnsw"]["space"] == "cosine"
    assert (config.get("embedding_function") or {}).get("name") in (None, "")


def test_filter_never_leaks_other_channels(index: MessageIndex, embedder: Embedder) -> None:
    # The best matches all sit in channel 10; the user may only see 20 and 30.
    index.upsert([item(1, PLANTED, "10"), item(2, PLANTED + " Really!", "10")])
    index.upsert([item(100 + i, t, "20" if i % 2 else "30") for i, t in enumerate(FILLER)])
    hits = index.query("staging database migration", channel_ids=["20", "30"], k=4)
    assert len(hits) == 4
    assert {h.channel_id for h in hits} <= {"20", "30"}
    assert index.query("staging database migration", channel_ids=["404"], k=4) == []
    assert index.query("staging database migration", channel_ids=[], k=4) == []


def test_filter_falls_back_when_permitted_channel_is_rare(index: MessageIndex) -> None:
    # More on-topic rows elsewhere than the over-fetch window, so the where query must run.
    crowd = [item(1000 + i, f"{PLANTED} ({i})", "10") for i in range(OVERFETCH_MIN + 20)]
    rare = [item(5000 + i, text, "20") for i, text in enumerate(FILLER[:5])]
    index.upsert(crowd + rare)
    hits = index.query(PLANTED, channel_ids=["20", "21"], k=3)
    assert len(hits) == 3
    assert all(h.channel_id == "20" for h in hits)
    # No hit survived, so the same channels now go straight to the filtered query.
    assert index.query(PLANTED, channel_ids=["21", "20"], k=3) == hits
    single = index.query(PLANTED, channel_ids=["20"], k=10)
    assert sorted(h.id for h in single) == [5000 + i for i in range(5)]


def test_channels_too_large_to_copy_still_get_their_nearest(
    index: MessageIndex, embedder: Embedder
) -> None:
    # Copies hold at most 10 vectors, so the channel cannot be scanned: the wide
    # over-fetch, then Chroma's filter, must find its nearest all the same.
    index._vectors = ChannelVectors(index._load_channels, max_rows=10)
    crowd = [item(1000 + i, f"{PLANTED} ({i})", "10") for i in range(OVERFETCH_MIN + 20)]
    texts = chatter(40, seed=5)
    index.upsert(crowd + [item(5000 + i, text, "20") for i, text in enumerate(texts)])
    query = embedder.encode([PLANTED])[0]
    exact = np.argsort(-(embedder.encode(texts) @ query))[:5]
    for _ in range(2):  # the first search, then the one that skips the over-fetch
        hits = index.query(PLANTED, channel_ids=["20"], k=5)
        assert [h.id for h in hits] == [5000 + int(i) for i in exact]


def test_filtered_results_are_the_exact_top_k(index: MessageIndex, embedder: Embedder) -> None:
    texts = chatter(300, seed=3)
    channels = [str(10 + i % 15) for i in range(len(texts))]
    index.upsert([item(i, t, c) for i, (t, c) in enumerate(zip(texts, channels, strict=True))])
    vectors = embedder.encode(texts)
    rng = random.Random(4)
    for query in chatter(12, seed=5):
        permitted = rng.sample(sorted(set(channels)), rng.choice([1, 3, 12]))
        hits = index.query(query, channel_ids=permitted, k=5)
        scores = vectors @ embedder.encode([query])[0]
        allowed = [i for i, c in enumerate(channels) if c in permitted]
        expected = sorted(allowed, key=lambda i: -scores[i])[:5]
        assert {h.channel_id for h in hits} <= set(permitted)
        np.testing.assert_allclose(
            [h.similarity for h in hits], [scores[i] for i in expected], atol=1e-4
        )


def test_reset_empties_the_index(index: MessageIndex) -> None:
    index.upsert([item(1, PLANTED), item(2, FILLER[0])])
    index.reset()
    assert index.count() == 0
    assert index.query(PLANTED, channel_ids=None, k=3) == []
    index.upsert([item(3, PLANTED)])
    assert [h.id for h in index.query(PLANTED, channel_ids=["10"], k=3)] == [3]


def test_reopened_client_sees_the_same_data(
    open_client: Callable[[], ClientAPI], embedder: Embedder
) -> None:
    first = MessageIndex(open_client(), embedder)
    first.upsert([item(i, t) for i, t in enumerate([PLANTED, *FILLER], start=1)])
    expected = first.query("staging migration", channel_ids=None, k=3)
    del first
    again = MessageIndex(open_client(), embedder)
    assert again.count() == len(FILLER) + 1
    assert again.query("staging migration", channel_ids=None, k=3) == expected


async def test_async_wrappers(index: MessageIndex) -> None:
    await index.aupsert([item(1, PLANTED), item(2, FILLER[1], "20")])
    assert await index.acount() == 2
    hits = await index.aquery("staging migration", channel_ids=["20"], k=2)
    assert [h.id for h in hits] == [2]
    await index.adelete([2])
    assert await index.acount() == 1
    await index.areset()
    assert await index.acount() == 0


def test_open_chroma_needs_a_path_or_a_reachable_url() -> None:
    with pytest.raises(VectorIndexError):
        open_chroma(None, None)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(VectorIndexError, match="CHROMA_URL"):
        open_chroma(None, f"http://127.0.0.1:{port}")


def test_repeated_texts_get_the_vectors_of_their_own_text(
    index: MessageIndex, embedder: Embedder
) -> None:
    texts = ["ok", "thanks!", "ok", "the build is red again", "thanks!", "ok"]
    index.upsert([item(i, t) for i, t in enumerate(texts)])
    stored = index._collection.get(ids=[str(i) for i in range(len(texts))], include=["embeddings"])
    vectors = stored["embeddings"]
    assert vectors is not None
    by_id = dict(zip(stored["ids"], list(vectors), strict=True))
    for i, text in enumerate(texts):
        expected = embedder.encode([text])[0]
        assert float(np.dot(by_id[str(i)], expected)) > 0.99999


def test_a_write_to_a_rare_channel_is_seen_by_the_next_search(index: MessageIndex) -> None:
    crowd = [item(1000 + i, f"{PLANTED} ({i})", "10") for i in range(OVERFETCH_MIN + 20)]
    rare = [item(5000 + i, text, "20") for i, text in enumerate(FILLER[:5])]
    index.upsert(crowd + rare)
    before = index.query(PLANTED, channel_ids=["20"], k=1)
    assert before[0].id != 7777
    # The channel's vectors are now copied for exact search; a write must replace the copy.
    index.upsert([item(7777, PLANTED, "20")])
    assert index.query(PLANTED, channel_ids=["20"], k=1)[0].id == 7777
    index.delete([7777])
    assert index.query(PLANTED, channel_ids=["20"], k=1) == before


def test_a_reader_keeps_answering_while_another_process_rebuilds(
    open_client: Callable[[], ClientAPI], embedder: Embedder
) -> None:
    # Two MessageIndex objects on one Chroma stand for two workers on one Chroma server.
    rebuilder, reader = MessageIndex(open_client(), embedder), MessageIndex(open_client(), embedder)
    rebuilder.upsert([item(i, text) for i, text in enumerate(FILLER, start=1)])
    assert len(reader.query("coffee machine", channel_ids=["10"], k=3)) == 3
    # A reindex drops the collection and builds it again under the same name.
    rebuilder.reset()
    rebuilder.upsert([item(99, PLANTED)])
    # The reader's handle names a collection that is gone: it reopens it by name.
    hits = reader.query("when do we migrate the staging DB?", channel_ids=["10"], k=3)
    assert [h.id for h in hits] == [99]
    assert reader.count() == 1
    reader.upsert([item(100, "a message synced meanwhile")])
    assert rebuilder.count() == 2


def test_closing_a_server_client_closes_its_connections(
    chroma_server: ChromaServer, embedder: Embedder
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        client = open_chroma(None, chroma_server.url)
        assert MessageIndex(client, embedder).count() >= 0
        close_chroma(client)
        del client
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
