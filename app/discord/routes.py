"""Discord REST routes: method plus path template, and the major parameters that split buckets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from urllib.parse import quote

# Discord keeps separate buckets per value of these; every other parameter shares one.
MAJOR_PARAMETERS: Final = ("channel_id", "guild_id", "webhook_id", "webhook_token")


@dataclass(frozen=True, slots=True)
class Route:
    """One operation of Discord's API, as in its OpenAPI spec (`GET /channels/{channel_id}`)."""

    method: str
    template: str

    @property
    def key(self) -> str:
        """The route's identity for bucket lookup: method and template."""
        return f"{self.method} {self.template}"

    @property
    def is_interaction_webhook(self) -> bool:
        """Interaction replies authenticate by their token, not the bot token."""
        return self.template.startswith("/webhooks/")

    def compile(self, **params: str | int) -> CompiledRoute:
        """Fill the template with concrete, URL-quoted values."""
        path = self.template
        for name, value in params.items():
            placeholder = "{" + name + "}"
            if placeholder not in path:
                raise ValueError(f"{self.key} has no parameter {name}")
            path = path.replace(placeholder, quote(str(value), safe=""))
        if "{" in path:
            raise ValueError(f"{self.key}: missing parameters in {path}")
        major = ";".join(f"{n}={params[n]}" for n in MAJOR_PARAMETERS if n in params)
        return CompiledRoute(self, path, major)


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    """A route with its parameters filled in."""

    route: Route
    path: str
    major: str

    @property
    def method(self) -> str:
        """The HTTP method."""
        return self.route.method

    @property
    def template(self) -> str:
        """The path template: what logs and metrics show, never the concrete path."""
        return self.route.template


GET_CHANNEL = Route("GET", "/channels/{channel_id}")
GET_CHANNEL_MESSAGES = Route("GET", "/channels/{channel_id}/messages")
GET_PUBLIC_ARCHIVED_THREADS = Route("GET", "/channels/{channel_id}/threads/archived/public")
GET_PRIVATE_ARCHIVED_THREADS = Route("GET", "/channels/{channel_id}/threads/archived/private")
GET_GUILD = Route("GET", "/guilds/{guild_id}")
GET_GUILD_CHANNELS = Route("GET", "/guilds/{guild_id}/channels")
GET_GUILD_ROLES = Route("GET", "/guilds/{guild_id}/roles")
GET_ACTIVE_THREADS = Route("GET", "/guilds/{guild_id}/threads/active")
GET_GUILD_MEMBER = Route("GET", "/guilds/{guild_id}/members/{user_id}")
GET_CURRENT_USER = Route("GET", "/users/@me")
PUT_GLOBAL_COMMANDS = Route("PUT", "/applications/{application_id}/commands")
PUT_GUILD_COMMANDS = Route("PUT", "/applications/{application_id}/guilds/{guild_id}/commands")
PATCH_ORIGINAL_RESPONSE = Route(
    "PATCH", "/webhooks/{webhook_id}/{webhook_token}/messages/@original"
)
POST_FOLLOWUP = Route("POST", "/webhooks/{webhook_id}/{webhook_token}")
PATCH_FOLLOWUP = Route("PATCH", "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}")
