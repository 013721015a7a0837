"""Discord ids (snowflakes): the creation time each one carries, and the id for a time.

A snowflake's upper 42 bits are milliseconds since Discord's epoch, so ids
sort by creation time and a time can be turned into an id bound for queries
("messages after this date").
"""

from __future__ import annotations

from typing import Final

# Discord's epoch, the first millisecond of 2015, in Unix milliseconds.
DISCORD_EPOCH_MS: Final = 1_420_070_400_000


def snowflake_time(snowflake: str | int) -> float:
    """Unix time in seconds at which a Discord id was created."""
    return ((int(snowflake) >> 22) + DISCORD_EPOCH_MS) / 1000.0


def time_snowflake(unix_seconds: float, low: int = 0) -> int:
    """The smallest (or `low`-offset) Discord id created at the given Unix time."""
    return (int(unix_seconds * 1000) - DISCORD_EPOCH_MS) << 22 | low
