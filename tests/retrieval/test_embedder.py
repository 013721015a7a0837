"""The embedder with the real all-MiniLM-L6-v2 model: shapes, norms, and ONNX against torch."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from app.retrieval.embedder import Embedder, EmbedderError, default_model_dir

pytestmark = pytest.mark.slow

TEXTS = [
    "",
    "ok",
    "Anyone know why the deploy failed last night?",
    "Ünïcödé, emoji 🎉 and 中文 in one message",
    "The release notes mention a memory leak in the cache layer. " * 50,  # past 256 tokens
    "lunch?",
    "We moved the standup to 10:30 because of the all-hands.",
]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def embedder(cache_dir: Path) -> Iterator[Embedder]:
    yield Embedder(default_model_dir(), cache_dir=cache_dir).load()


@pytest.fixture(scope="module")
def torch_embedder() -> Iterator[Embedder]:
    yield Embedder(default_model_dir(), backend="torch").load()


def test_vectors_are_384_float32_unit_vectors(embedder: Embedder) -> None:
    vectors = embedder.encode(TEXTS)
    assert embedder.dimensions == 384
    assert vectors.shape == (len(TEXTS), 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedder.encode([]).shape == (0, 384)


def test_auto_picks_onnx_and_matches_torch(embedder: Embedder, torch_embedder: Embedder) -> None:
    assert embedder.backend == "onnx"
    assert torch_embedder.backend == "torch"
    cosine = (embedder.encode(TEXTS) * torch_embedder.encode(TEXTS)).sum(axis=1)
    assert cosine.min() >= 0.9999


def test_batches_keep_input_order(embedder: Embedder) -> None:
    together = embedder.encode(TEXTS)
    alone = np.stack([embedder.encode([text])[0] for text in TEXTS])
    np.testing.assert_allclose(together, alone, atol=1e-5)


@pytest.mark.parametrize("threads", [1, 3])
def test_batches_spread_over_threads_give_the_same_vectors(
    embedder: Embedder, cache_dir: Path, threads: int
) -> None:
    texts = [f"{text} #{i}" for i in range(7) for text in TEXTS]  # 49 texts: uneven batches
    spread = Embedder(default_model_dir(), cache_dir=cache_dir, threads=threads).load()
    assert spread.threads == threads
    np.testing.assert_allclose(spread.encode(texts), embedder.encode(texts), atol=1e-5)


def test_similar_sentences_are_closer(embedder: Embedder) -> None:
    a, b, c = embedder.encode(
        ["The build is broken on main", "CI fails on the main branch", "I had pizza for lunch"]
    )
    assert float(a @ b) > float(a @ c) + 0.2


def test_concurrent_encodes_agree(embedder: Embedder) -> None:
    expected = embedder.encode(TEXTS)
    results: list[np.ndarray] = []

    def work() -> None:
        results.append(embedder.encode(TEXTS))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4
    for result in results:
        np.testing.assert_allclose(result, expected, atol=1e-6)


def test_a_query_does_not_wait_for_a_large_encode_to_finish(embedder: Embedder) -> None:
    large = [f"message {i}: who broke the deploy, and when?" for i in range(1500)]  # seconds
    big = threading.Thread(target=embedder.encode, args=(large,))
    big.start()
    try:
        time.sleep(0.2)  # well into it
        query = embedder.encode(["who fixed the deploy?"])
        assert big.is_alive(), "the query was answered only after the large encode"
    finally:
        big.join()
    np.testing.assert_allclose(query, embedder.encode(["who fixed the deploy?"]), atol=1e-6)


def test_exported_file_is_reused(embedder: Embedder, cache_dir: Path) -> None:
    (exported,) = cache_dir.glob("*.onnx")
    before = exported.stat().st_mtime_ns
    again = Embedder(default_model_dir(), cache_dir=cache_dir, backend="onnx").load()
    assert again.backend == "onnx"
    assert exported.stat().st_mtime_ns == before
    # Besides the export, only the lock that lets workers starting together export once.
    assert sorted(cache_dir.iterdir()) == sorted([exported, cache_dir / ".export.lock"])


def test_outdated_exports_are_removed_and_other_files_kept(
    embedder: Embedder, cache_dir: Path
) -> None:
    (exported,) = cache_dir.glob("*.onnx")
    outdated = cache_dir / "all-MiniLM-L6-v2-0123456789abcdef.onnx"
    outdated.write_bytes(b"an export from an earlier version")
    unrelated = cache_dir / "notes.onnx"
    unrelated.write_bytes(b"not ours")
    try:
        Embedder(default_model_dir(), cache_dir=cache_dir, backend="onnx").load()
        assert not outdated.exists()
        assert exported.exists() and unrelated.exists()
    finally:
        unrelated.unlink()


def test_encode_before_load_is_an_error() -> None:
    with pytest.raises(EmbedderError, match="load"):
        Embedder(default_model_dir()).encode(["hi"])


def test_onnx_without_cache_dir_is_an_error() -> None:
    with pytest.raises(EmbedderError, match="cache_dir"):
        Embedder(default_model_dir(), backend="onnx").load()
