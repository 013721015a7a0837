"""The contract between the web process and the worker: queue, job names, ids."""

from __future__ import annotations

# arq's default queue; web writes jobs into it without importing the worker.
QUEUE_NAME = "arq:queue"
JOB_KEY_PREFIX = "arq:job:"
RESULT_KEY_PREFIX = "arq:result:"

HANDLE_INTERACTION = "handle_interaction"
SYNC_GUILDS = "sync_guilds"
RUN_SYNC = "run_sync"
RUN_ASK = "run_ask"

# Discord's epoch, for reading the creation time out of a snowflake id.
DISCORD_EPOCH_MS = 1_420_070_400_000
# An interaction token lives 15 minutes; after that no reply can be delivered.
INTERACTION_TOKEN_LIFETIME = 15 * 60


def snowflake_time(snowflake: str | int) -> float:
    """Unix time in seconds at which a Discord id was created."""
    return ((int(snowflake) >> 22) + DISCORD_EPOCH_MS) / 1000.0


def time_snowflake(unix_seconds: float, low: int = 0) -> int:
    """The smallest (or `low`-offset) Discord id created at the given Unix time."""
    return (int(unix_seconds * 1000) - DISCORD_EPOCH_MS) << 22 | low
