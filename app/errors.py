"""The project's exceptions: one root, subclasses only where a caller must tell them apart."""

from __future__ import annotations


class BotError(Exception):
    """Root of every error this project raises on purpose."""


class SettingsError(BotError):
    """A configuration value is missing or malformed; the message names the variable."""


class StateLockedError(BotError):
    """Another process already owns the SQLite file and the Chroma directory."""
