"""One typed settings object, read from the environment and validated once at start-up."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from app.errors import SettingsError

DEFAULT_API_BASE = "https://discord.com/api/v10"
# Jobs the queue may hold before new commands are answered "busy". Every queued
# /ask must be answered within its token's 15 minutes: the bundled model answers
# one in about a second on an idle 2-core machine, but a flood on a busy one was
# measured (bench.load) at about 8 s per answer, and 100 x 8 s still fits.
DEFAULT_QUEUE_LIMIT = 100

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_SNOWFLAKE = re.compile(r"[0-9]{1,20}")


@dataclass(frozen=True)
class Settings:
    """Everything the processes need to know, with the names of DESIGN.md."""

    data_dir: Path = Path("data")
    discord_application_id: str | None = None
    discord_public_key: str | None = None
    discord_bot_token: str | None = field(default=None, repr=False)
    discord_api_base: str = DEFAULT_API_BASE
    sync_guild_ids: tuple[str, ...] = ()
    redis_url: str | None = None
    database_url: str = ""
    chroma_path: Path = Path("data/chroma")
    chroma_url: str | None = None
    model_path: Path | None = None
    model_cache_dir: Path = Path("data/models")
    host: str = "0.0.0.0"  # noqa: S104 - a server behind Fly's or the owner's proxy
    port: int = 8080
    metrics_port: int = 9091
    log_level: str = "INFO"
    log_format: str = "json"
    # Front door
    rate_limit_per_minute: int = 5
    signature_max_age: float = 300.0
    redis_timeout: float = 1.0
    queue_limit: int = DEFAULT_QUEUE_LIMIT
    # Sync
    sync_interval: int = 600
    sync_recheck_days: int = 7
    # Generation
    llm_threads: int = 2
    llm_context: int = 4096
    answer_deadline: float = 120.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Build and validate settings from a mapping of environment variables."""
        env = {k: v.strip() for k, v in environ.items() if v.strip() != ""}
        data_dir = Path(env.get("DATA_DIR", "data"))
        app_id = env.get("DISCORD_APPLICATION_ID")
        if app_id is not None and not _SNOWFLAKE.fullmatch(app_id):
            raise SettingsError("DISCORD_APPLICATION_ID: must be the numeric application id")
        public_key = env.get("DISCORD_PUBLIC_KEY")
        if public_key is not None and not _HEX64.fullmatch(public_key):
            raise SettingsError("DISCORD_PUBLIC_KEY: must be 64 hexadecimal characters")
        guilds = tuple(g.strip() for g in env.get("SYNC_GUILD_IDS", "").split(",") if g.strip())
        for guild in guilds:
            if not _SNOWFLAKE.fullmatch(guild):
                raise SettingsError(f"SYNC_GUILD_IDS: {guild!r} is not a numeric guild id")
        chroma_url = env.get("CHROMA_URL")
        model_path = env.get("MODEL_PATH")
        log_format = env.get("LOG_FORMAT", "json")
        if log_format not in ("json", "text"):
            raise SettingsError("LOG_FORMAT: must be 'json' or 'text'")
        return cls(
            data_dir=data_dir,
            discord_application_id=app_id,
            discord_public_key=public_key.lower() if public_key else None,
            discord_bot_token=env.get("DISCORD_BOT_TOKEN"),
            discord_api_base=_url(
                env, "DISCORD_API_BASE", DEFAULT_API_BASE, ("http", "https")
            ).rstrip("/"),
            sync_guild_ids=guilds,
            redis_url=_optional_url(env, "REDIS_URL", ("redis", "rediss", "unix")),
            database_url=_url(
                env,
                "DATABASE_URL",
                f"sqlite:///{data_dir / 'bot.db'}",
                ("sqlite", "postgresql", "postgres"),
            ),
            chroma_path=Path(env.get("CHROMA_PATH", str(data_dir / "chroma"))),
            chroma_url=_optional_url(env, "CHROMA_URL", ("http", "https")) if chroma_url else None,
            model_path=Path(model_path) if model_path else None,
            model_cache_dir=Path(env.get("MODEL_CACHE_DIR", str(data_dir / "models"))),
            host=env.get("HOST", "0.0.0.0"),  # noqa: S104
            port=_int(env, "PORT", 8080, 1, 65535),
            metrics_port=_int(env, "METRICS_PORT", 9091, 1, 65535),
            log_level=_choice(env, "LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR")),
            log_format=log_format,
            rate_limit_per_minute=_int(env, "RATE_LIMIT_PER_MINUTE", 5, 1, 100_000),
            signature_max_age=_float(env, "SIGNATURE_MAX_AGE", 300.0, 1.0, 86_400.0),
            redis_timeout=_float(env, "REDIS_TIMEOUT", 1.0, 0.05, 1.4),
            queue_limit=_int(env, "QUEUE_LIMIT", DEFAULT_QUEUE_LIMIT, 0, 1_000_000),
            sync_interval=_int(env, "SYNC_INTERVAL", 600, 60, 86_400),
            sync_recheck_days=_int(env, "SYNC_RECHECK_DAYS", 7, 0, 3650),
            llm_threads=_int(env, "LLM_THREADS", 2, 1, 256),
            llm_context=_int(env, "LLM_CONTEXT", 4096, 512, 131_072),
            answer_deadline=_float(env, "ANSWER_DEADLINE", 120.0, 1.0, 840.0),
        )

    @property
    def has_discord_credentials(self) -> bool:
        """Whether the web process can verify interactions at all."""
        return self.discord_public_key is not None

    def missing_discord_variables(self) -> list[str]:
        """The Discord variables still unset, for the start-up hint."""
        pairs = [
            ("DISCORD_APPLICATION_ID", self.discord_application_id),
            ("DISCORD_PUBLIC_KEY", self.discord_public_key),
            ("DISCORD_BOT_TOKEN", self.discord_bot_token),
        ]
        return [name for name, value in pairs if value is None]

    def secrets(self) -> list[str]:
        """Values that must never appear in a log line."""
        return [s for s in (self.discord_bot_token,) if s]


def _url(env: Mapping[str, str], name: str, default: str, schemes: tuple[str, ...]) -> str:
    value = env.get(name, default)
    try:
        parts = urlsplit(value)
    except ValueError as exc:
        raise SettingsError(f"{name}: not a valid URL ({exc})") from None
    if parts.scheme not in schemes:
        raise SettingsError(
            f"{name}: must start with one of {', '.join(s + '://' for s in schemes)}"
        )
    if parts.scheme in ("http", "https", "redis", "rediss", "postgresql", "postgres") and not (
        parts.hostname
    ):
        raise SettingsError(f"{name}: the URL has no host")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise SettingsError(f"{name}: the URL has an invalid port") from None
    return value


def _optional_url(env: Mapping[str, str], name: str, schemes: tuple[str, ...]) -> str | None:
    if name not in env:
        return None
    return _url(env, name, "", schemes)


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}: must be a whole number, got {raw!r}") from None
    if not low <= value <= high:
        raise SettingsError(f"{name}: must be between {low} and {high}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}: must be a number, got {raw!r}") from None
    if not low <= value <= high:
        raise SettingsError(f"{name}: must be between {low} and {high}, got {value}")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name, default).upper()
    if value not in choices:
        raise SettingsError(f"{name}: must be one of {', '.join(choices)}")
    return value
