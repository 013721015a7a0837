from __future__ import annotations

import numpy as np

from app.retrieval.scan import ChannelMatrix, ChannelVectors


def matrix(ids: list[int], seed: int) -> ChannelMatrix:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(len(ids), 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return ChannelMatrix(np.asarray(ids, dtype=np.int64), vectors)


def test_exact_top_k_across_channels_and_loads_each_channel_once() -> None:
    data = {"a": matrix(list(range(0, 50)), 1), "b": matrix(list(range(100, 130)), 2)}
    loads: list[list[str]] = []

    def load(channels: list[str], limit: int) -> dict[str, ChannelMatrix] | None:
        loads.append(channels)
        return {c: data[c] for c in channels}

    vectors = ChannelVectors(load)
    query = matrix([0], 3).vectors[0]
    hits = vectors.search(query, frozenset({"a", "b"}), 5)
    assert hits is not None
    everything = [
        (float(v @ query), int(i), c)
        for c, m in data.items()
        for i, v in zip(m.ids, m.vectors, strict=True)
    ]
    expected = sorted(everything, key=lambda s: -s[0])[:5]
    assert [(i, c) for i, _, c in hits] == [(i, c) for _, i, c in expected]
    vectors.search(query, frozenset({"a"}), 3)
    assert loads == [["a", "b"]]
    vectors.invalidate(["a"])
    vectors.search(query, frozenset({"a"}), 3)
    assert loads == [["a", "b"], ["a"]]


def test_channels_over_the_limit_are_not_copied() -> None:
    def load(channels: list[str], limit: int) -> dict[str, ChannelMatrix] | None:
        assert limit == 10
        return None

    assert (
        ChannelVectors(load, max_rows=10).search(np.ones(8, np.float32), frozenset("a"), 3) is None
    )
