"""Errors of Discord's REST API, as the rest of the project sees them."""

from __future__ import annotations

from typing import Any

from app.errors import BotError


class DiscordError(BotError):
    """Any failure talking to Discord's REST API."""


class MissingBotToken(DiscordError):
    """A bot route was called on a client that has no bot token."""


class DiscordHTTPError(DiscordError):
    """Discord refused a request with a 4xx status; `code` is Discord's JSON error code."""

    def __init__(
        self,
        status: int,
        route: str,
        code: int | None = None,
        message: str = "",
        errors: Any = None,
        *,
        text: str | None = None,
    ) -> None:
        self.status = status
        self.route = route
        self.code = code
        self.message = message
        self.errors = errors
        detail = f" (code {code})" if code is not None else ""
        super().__init__(text or f"{route}: HTTP {status} {message}{detail}".rstrip())


class DiscordUnauthorized(DiscordHTTPError):
    """401: the bot token (or an interaction token) was refused."""


class DiscordForbidden(DiscordHTTPError):
    """403: the bot lacks access or a permission."""


class DiscordNotFound(DiscordHTTPError):
    """404: unknown channel, guild, member, message or interaction token."""


class DiscordUnavailable(DiscordError):
    """Discord kept failing (5xx or connection errors) after every retry."""


class DeliveryUncertain(DiscordUnavailable):
    """The connection failed after a POST was sent: Discord may or may not have acted on it.

    A POST is not repeated (a second follow-up would show twice), and Discord offers no
    way to ask whether the first one landed.
    """


class DiscordRateLimited(DiscordError):
    """A rate limit asked for a longer wait than the client accepts, or kept repeating."""


class InvalidRequestLimit(DiscordError):
    """Too many 401/403/429 responses lately; sending more risks Cloudflare banning the IP."""
