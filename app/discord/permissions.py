"""Discord's permission bits, by name, as hikari keeps them in one place.

Permissions travel as decimal strings of a bit set; these are the bits the
assistant reads (who may view a channel's history, who may run /sync) and
names when it prints a command's requirements.
"""

from __future__ import annotations

from typing import Final

ADMINISTRATOR: Final = 1 << 3
MANAGE_CHANNELS: Final = 1 << 4
MANAGE_GUILD: Final = 1 << 5
VIEW_CHANNEL: Final = 1 << 10
MANAGE_MESSAGES: Final = 1 << 13
READ_MESSAGE_HISTORY: Final = 1 << 16
MANAGE_THREADS: Final = 1 << 34
# Every bit Discord defines lies below 1 << 64; the owner and administrators hold them all.
ALL_PERMISSIONS: Final = (1 << 64) - 1
# What reading a channel's history takes.
READ_ACCESS: Final = VIEW_CHANNEL | READ_MESSAGE_HISTORY

# Names for printing a command's required permissions; other bits print as numbers.
NAMES: Final = {
    ADMINISTRATOR: "ADMINISTRATOR",
    MANAGE_CHANNELS: "MANAGE_CHANNELS",
    MANAGE_GUILD: "MANAGE_GUILD",
    VIEW_CHANNEL: "VIEW_CHANNEL",
    MANAGE_MESSAGES: "MANAGE_MESSAGES",
    READ_MESSAGE_HISTORY: "READ_MESSAGE_HISTORY",
}
