"""Benchmark: embedding throughput (torch vs ONNX vs the Embedder's pick) and filtered search.

Run with ``HF_HUB_OFFLINE=1 python -m bench.embedding [--vectors 100000]``. It prints
two tables and ``main()`` returns the figures as a dict. The 100k-vector Chroma
directory is kept (``--chroma-dir``) so that later runs skip building it.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from app.retrieval.embedder import Embedder, Vectors, default_model_dir
from app.retrieval.index import COLLECTION, MessageIndex, open_chroma

CHANNELS = 50  # each channel holds 2% of the rows, as in DESIGN.md's measurements
_VOCABULARY = (
    "the a to and of is in it you that for on with this i we be are have just do not can lol "
    "deploy server build release bug fix merge branch test docker redis python rust meeting "
    "tomorrow today anyone know how why when where what thanks please check link issue PR "
    "review works broken error crash log config update version api token channel bot message "
    "sync model cache memory cpu latency database query index vector weekend game lunch coffee"
)


def chat_messages(n: int, seed: int = 0) -> list[str]:
    """Chat-like messages: mostly short, some paragraphs, a few past the 256-token limit."""
    rng = random.Random(seed)
    vocabulary = _VOCABULARY.split()
    out = []
    for _ in range(n):
        x = rng.random()
        if x < 0.35:
            words = rng.randint(1, 6)
        elif x < 0.85:
            words = rng.randint(6, 20)
        elif x < 0.97:
            words = rng.randint(20, 60)
        else:
            words = rng.randint(60, 200)
        text = " ".join(rng.choice(vocabulary) for _ in range(words))
        out.append(text.capitalize() + rng.choice([".", "?", "!", "", " :)"]))
    return out


def _rate(embedder: Embedder, texts: list[str], repeats: int = 2) -> tuple[float, Vectors]:
    embedder.encode(texts[:64])  # warm-up
    best = 0.0
    vectors = embedder.encode(texts[:1])
    for _ in range(repeats):
        start = time.perf_counter()
        vectors = embedder.encode(texts)
        best = max(best, len(texts) / (time.perf_counter() - start))
    return best, vectors


def bench_encode(n: int, cache_dir: Path) -> dict[str, Any]:
    """Messages per second for each engine and batch size, and agreement with torch."""
    texts = chat_messages(n)
    model_dir = default_model_dir()
    rows: dict[str, Any] = {}
    torch_rate, reference = _rate(Embedder(model_dir, backend="torch").load(), texts)
    rows["torch bs32 (plain sentence-transformers)"] = {"per_s": torch_rate, "min_cosine": 1.0}
    for batch_size in (8, 16, 32, 64):
        onnx = Embedder(model_dir, cache_dir=cache_dir, backend="onnx", batch_size=batch_size)
        rate, vectors = _rate(onnx.load(), texts)
        cosine = float((vectors * reference).sum(axis=1).min())
        rows[f"onnx bs{batch_size}"] = {"per_s": rate, "min_cosine": cosine}
    picked = Embedder(model_dir, cache_dir=cache_dir).load()
    rate, vectors = _rate(picked, texts)
    rows[f"Embedder() default -> {picked.backend} bs{picked.batch_size}"] = {
        "per_s": rate,
        "min_cosine": float((vectors * reference).sum(axis=1).min()),
    }
    print(f"\nencode throughput, {n} chat messages")
    for name, row in rows.items():
        print(f"  {name:44s} {row['per_s']:7.0f}/s   min cosine vs torch {row['min_cosine']:.7f}")
    return rows


def _build(index_dir: Path, count: int) -> None:
    client = open_chroma(index_dir, None)
    collection = client.get_or_create_collection(
        COLLECTION, configuration={"hnsw": {"space": "cosine"}}, embedding_function=None
    )
    if collection.count() >= count:
        return
    rng = np.random.default_rng(0)
    # Clustered unit vectors, so that neighbourhoods look like topics, not noise.
    centres = rng.normal(size=(2000, 384)).astype(np.float32)
    start = time.perf_counter()
    for first in range(collection.count(), count, 5000):
        ids = range(first, min(first + 5000, count))
        vectors = centres[rng.integers(0, len(centres), len(ids))]
        vectors = vectors + rng.normal(scale=0.7, size=vectors.shape).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        metadatas: list[Any] = [
            {"channel_id": str(1000 + i % CHANNELS), "guild_id": "1", "author_id": str(i % 97)}
            | {"timestamp": 1_600_000_000 + i}
            for i in ids
        ]
        collection.add(ids=[str(i) for i in ids], embeddings=vectors, metadatas=metadatas)
    print(f"built {count} vectors at {count / (time.perf_counter() - start):.0f}/s")


def _percentiles(samples: list[float]) -> dict[str, float]:
    ms = np.array(samples) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95))}


def bench_query(count: int, queries: int, index_dir: Path, cache_dir: Path) -> dict[str, Any]:
    """Query latency for 1, 5 and 40 permitted channels, with and without query embedding."""
    _build(index_dir, count)
    embedder = Embedder(default_model_dir(), cache_dir=cache_dir).load()
    index = MessageIndex(open_chroma(index_dir, None), embedder)
    collection = open_chroma(index_dir, None).get_collection(COLLECTION, embedding_function=None)
    texts = chat_messages(queries, seed=1)
    vectors = embedder.encode(texts)
    rows: dict[str, Any] = {}
    for permitted in (1, 5, 40):
        channels = [str(1000 + c) for c in range(permitted)]
        where: dict[str, Any] = (
            {"channel_id": channels[0]} if permitted == 1 else {"channel_id": {"$in": channels}}
        )

        def baseline(i: int, where: dict[str, Any] = where) -> object:
            return collection.query(
                query_embeddings=vectors[i : i + 1],
                n_results=8,
                where=where,
                include=["metadatas", "distances"],
            )

        def by_vector(i: int, channels: list[str] = channels) -> object:
            return index.query(vectors[i], channel_ids=channels, k=8)

        def by_text(i: int, channels: list[str] = channels) -> object:
            return index.query(texts[i], channel_ids=channels, k=8)

        cases: dict[str, Callable[[int], object]] = {
            "where only (baseline)": baseline,
            "MessageIndex.query(vector)": by_vector,
            "MessageIndex.query(text), embed included": by_text,
        }
        for name, call in cases.items():
            samples = []
            for i in range(queries):
                start = time.perf_counter()
                call(i)
                samples.append(time.perf_counter() - start)
            rows[f"{permitted:2d} channel(s): {name}"] = _percentiles(samples[5:])
    unfiltered = []
    for i in range(queries):
        start = time.perf_counter()
        index.query(vectors[i], channel_ids=None, k=8)
        unfiltered.append(time.perf_counter() - start)
    rows["unfiltered k=8"] = _percentiles(unfiltered[5:])
    print(f"\nquery latency, {count} vectors, {CHANNELS} channels of 2% each, k=8")
    for name, row in rows.items():
        print(f"  {name:55s} p50 {row['p50_ms']:7.1f} ms   p95 {row['p95_ms']:7.1f} ms")
    return rows


async def _build_store(store_path: Path, count: int) -> None:
    """The messages behind the synthetic vectors, with their lexical index, built once."""
    from datetime import UTC, datetime

    from app.discord.snowflakes import snowflake_time
    from app.store.db import Store
    from app.store.models import StoredMessage

    async with Store.from_url(f"sqlite:///{store_path}") as store:
        await store.migrate()
        if await store.count_live() >= count:
            return
        texts = chat_messages(count, seed=2)
        start = time.perf_counter()
        for channel in range(CHANNELS):
            ids = list(range(channel, count, CHANNELS))
            for first in range(0, len(ids), 100):
                page = [
                    StoredMessage(
                        id=i,
                        channel_id=str(1000 + channel),
                        guild_id="1",
                        author_id=str(i % 97),
                        author_name=f"member{i % 97}",
                        content=texts[i],
                        timestamp=datetime.fromtimestamp(snowflake_time(i), UTC),
                    )
                    for i in ids[first : first + 100]
                ]
                await store.save_page(str(1000 + channel), page)
        print(
            f"stored {count} messages with their lexical index at "
            f"{count / (time.perf_counter() - start):.0f}/s"
        )


def bench_hybrid(count: int, queries: int, index_dir: Path, cache_dir: Path) -> dict[str, Any]:
    """The whole search a /search or /ask runs: words and vectors, fused, embed included."""
    import asyncio

    from app.retrieval.search import Retriever
    from app.store.db import Store

    _build(index_dir, count)
    store_path = index_dir.parent / f"store-{count}.db"
    asyncio.run(_build_store(store_path, count))
    embedder = Embedder(default_model_dir(), cache_dir=cache_dir).load()
    index = MessageIndex(open_chroma(index_dir, None), embedder)
    texts = chat_messages(queries, seed=1)

    async def run() -> dict[str, Any]:
        rows: dict[str, Any] = {}
        async with Store.from_url(f"sqlite:///{store_path}") as store:
            retriever = Retriever(store, index)
            for permitted in (1, 5, 40):
                channels = {str(1000 + c) for c in range(permitted)}
                samples = []
                for text in texts:
                    start = time.perf_counter()
                    await retriever.search(text, channels, 10)
                    samples.append(time.perf_counter() - start)
                rows[f"{permitted:2d} channel(s): Retriever.search, k=10"] = _percentiles(
                    samples[5:]
                )
        return rows

    rows = asyncio.run(run())
    print(f"\nhybrid search latency, {count} messages (BM25 + vectors, fused), embed included")
    for name, row in rows.items():
        print(f"  {name:55s} p50 {row['p50_ms']:7.1f} ms   p95 {row['p95_ms']:7.1f} ms")
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run both benchmarks, print the tables and return the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    scratch = Path(tempfile.gettempdir())
    parser.add_argument("--chroma-dir", type=Path, default=scratch / "bench-embedding-chroma")
    parser.add_argument("--cache-dir", type=Path, default=scratch / "bench-embedding-models")
    parser.add_argument("--skip-encode", action="store_true")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    if not args.skip_encode:
        results["encode"] = bench_encode(args.messages, args.cache_dir)
    index_dir = args.chroma_dir / str(args.vectors)
    results["query"] = bench_query(args.vectors, args.queries, index_dir, args.cache_dir)
    results["hybrid"] = bench_hybrid(args.vectors, args.queries, index_dir, args.cache_dir)
    return results


if __name__ == "__main__":
    main()
