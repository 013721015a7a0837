"""The project's exceptions: one abstract root, subclasses only where a caller must tell them apart.

Who reads an error's text decides its class. A `CommandError` is written for
the Discord member who ran the command and is the only kind whose text the
worker shows in Discord; every other failure answers the member with a short
generic message and an error id, and is logged in full for the owner. A
`UsageError` (and a `SettingsError`) is written for the owner at the command
line or in the logs: what to set or run to fix it.
"""

from __future__ import annotations

from typing import Any


class BotError(Exception):
    """Root of every error this project raises on purpose; never raised itself."""

    def __new__(cls, *args: Any, **kwargs: Any) -> BotError:
        if cls is BotError:
            raise TypeError("BotError is abstract: raise the subclass that says who reads it")
        return super().__new__(cls, *args, **kwargs)


class CommandError(BotError):
    """A command cannot be answered as asked; the text is for the member and is shown to them."""


class UsageError(BotError):
    """The owner asked for something that cannot run as configured; the text says what to do."""


class SettingsError(UsageError):
    """A configuration value is missing or malformed; the message names the variable."""


class StateLockedError(BotError):
    """Another process already owns the SQLite file and the Chroma directory."""
