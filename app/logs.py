"""Logging set-up for the entry points: one JSON line per event, secrets scrubbed."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
from collections.abc import Iterable

# The interaction id travels from web into the worker's log lines through this.
interaction_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "interaction_id", default=None
)

# Discord bot tokens and interaction tokens, wherever they appear (URLs, headers).
_TOKEN_PATTERNS = [
    re.compile(r"(Bot\s+)[A-Za-z0-9._\-]{20,}"),
    re.compile(r"(/webhooks/\d+/)[A-Za-z0-9._\-]{20,}"),
    re.compile(r"(['\"]token['\"]\s*:\s*['\"])[^'\"]+"),
]
_REDACTED = "[redacted]"
_RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class SecretFilter(logging.Filter):
    """Replaces known secret values and token-shaped strings in every record."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if len(s) >= 8]

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, _REDACTED)
        for pattern in _TOKEN_PATTERNS:
            text = pattern.sub(lambda m: m.group(1) + _REDACTED, text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg = self.scrub(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        record.exc_info = None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with any `extra=` fields and the interaction id."""

    _second = -1
    _stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:
            # Formatting the date once a second, not once a line (the handler lock serialises).
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        entry: dict[str, object] = {
            "time": f"{self._stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        interaction_id = interaction_id_var.get()
        if interaction_id is not None:
            entry["interaction_id"] = interaction_id
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_text:
            entry["error"] = record.exc_text
        return json.dumps(entry, default=str)


def configure_logging(level: str = "INFO", fmt: str = "json", secrets: Iterable[str] = ()) -> None:
    """Install the one stderr handler; called by entry points only."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(SecretFilter(secrets))
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # No line shows thread or process names; not looking them up spares every record.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # uvicorn's access log would repeat our own per-request line.
    logging.getLogger("uvicorn.access").disabled = True
    for noisy in (
        "httpx",
        "httpcore",
        "chromadb",
        "sentence_transformers",
        "urllib3",
        "onnx_model",
        "onnx_model_bert",
        "fusion_base",
        "databases",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)
