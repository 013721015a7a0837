"""The Discord REST client: one shared connection pool, rate limits, retries, typed calls."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Protocol

import httpx

from app import PROJECT_URL, __version__
from app.discord import routes
from app.discord.errors import (
    DeliveryUncertain,
    DiscordForbidden,
    DiscordHTTPError,
    DiscordNotFound,
    DiscordRateLimited,
    DiscordUnauthorized,
    DiscordUnavailable,
    InvalidRequestLimit,
    MissingBotToken,
)
from app.discord.files import File, multipart
from app.discord.ratelimit import Clock, InvalidRequestCounter, RateLimiter, Sleep
from app.discord.routes import CompiledRoute
from app.discord.shared_limits import Limits, SharedLimits

logger = logging.getLogger(__name__)

JSONObject = dict[str, Any]
QueryValue = str | int | bool

USER_AGENT: Final = f"DiscordBot ({PROJECT_URL}, {__version__})"
MESSAGES_PAGE_MAX: Final = 100
# Only these errors guarantee a request never reached Discord, so only they are
# safe to retry for a POST (a second follow-up would show twice).
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class RestObserver(Protocol):
    """Receives what metrics could count; status 0 means the connection failed."""

    def request_done(self, route: str, status: int, seconds: float) -> None:
        """One HTTP exchange finished."""

    def rate_limit_wait(self, route: str, seconds: float) -> None:
        """A request waited for a rate limit before being sent."""


class NullObserver:
    """Counts nothing."""

    def request_done(self, route: str, status: int, seconds: float) -> None:
        """Ignore a finished request."""

    def rate_limit_wait(self, route: str, seconds: float) -> None:
        """Ignore a rate-limit wait."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard the client tries before giving up."""

    max_retries: int = 5
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    # A bucket or global 429 asking for more than this is reported, not waited out.
    max_rate_limit_wait: float = 300.0
    max_rate_limited: int = 10

    def backoff(self, retry: int) -> float:
        """Seconds before retry number `retry` (0-based): exponential with jitter."""
        exponential: float = self.backoff_base * 2**retry
        return min(self.backoff_cap, exponential) + random.uniform(0, self.backoff_base)


class DiscordRest:
    """Calls Discord's REST API the way Discord asks clients to behave."""

    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        client: httpx.AsyncClient | None = None,
        observer: RestObserver | None = None,
        retry: RetryPolicy | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        invalid_requests: InvalidRequestCounter | None = None,
        timeout: float = 30.0,
        shared_limits: SharedLimits | None = None,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._token = token
        self._client_owner = client is None
        self._client = client or httpx.AsyncClient(timeout=timeout)
        self._observer: RestObserver = observer or NullObserver()
        self._retry = retry or RetryPolicy()
        self._clock = clock
        self._sleep = sleep
        # This process's limiter, and the one other processes on the token share, if any.
        self._limiter = Limits(RateLimiter(clock, sleep), shared_limits)
        self._invalid = invalid_requests or InvalidRequestCounter()

    async def __aenter__(self) -> DiscordRest:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool if this client opened it."""
        if self._client_owner:
            await self._client.aclose()

    async def request(
        self,
        route: CompiledRoute,
        *,
        body: Any = None,
        query: Mapping[str, QueryValue | None] | None = None,
        files: Sequence[File] = (),
    ) -> Any:
        """Send one request, waiting out rate limits and retrying failures; return its JSON.

        With `files`, the body goes as multipart/form-data with the files attached.
        """
        headers = self._headers(route)
        params = _query_params(query)
        url = self._base_url + route.path
        failures = 0
        limited = 0
        while True:
            if self._invalid.exhausted(self._clock()):
                raise InvalidRequestLimit(
                    f"{self._invalid.count(self._clock())} invalid Discord responses "
                    f"in {self._invalid.period:.0f} s: refusing {route.method} "
                    f"{route.template} to avoid a Cloudflare ban of this IP"
                )
            waited, ticket = await self._limiter.acquire(route)
            if waited > 0:
                self._observer.rate_limit_wait(route.template, waited)
            started = self._clock()
            try:
                response = await self._send(route, url, headers, params, body, files)
            finally:
                await self._limiter.release(ticket)
            if isinstance(response, httpx.TransportError):
                self._observer.request_done(route.template, 0, self._clock() - started)
                failure = f"{route.method} {route.template}: {type(response).__name__}"
                if isinstance(response, httpx.UnsupportedProtocol):
                    raise DiscordUnavailable(failure) from response
                if route.method == "POST" and not isinstance(response, _NOT_SENT):
                    raise DeliveryUncertain(failure) from response
                await self._back_off(route, failures, type(response).__name__)
                failures += 1
                continue
            self._observer.request_done(
                route.template, response.status_code, self._clock() - started
            )
            await self._limiter.update(route, response.headers)
            status = response.status_code
            if status < 300:
                return None if status == 204 or not response.content else response.json()
            if status == 429:
                limited += 1
                await self._rate_limited(route, response, limited)
                continue
            if status in (401, 403):
                self._invalid.record(self._clock())
            if status >= 500:
                await self._back_off(route, failures, f"HTTP {status}")
                failures += 1
                continue
            raise _http_error(route, response)

    async def _send(
        self,
        route: CompiledRoute,
        url: str,
        headers: Mapping[str, str],
        params: Mapping[str, str],
        body: Any,
        files: Sequence[File],
    ) -> httpx.Response | httpx.TransportError:
        """One exchange; a connection failure is returned, for the retry loop to judge."""
        content = multipart(body or {}, files) if files else {"json": body}
        try:
            return await self._client.request(
                route.method, url, headers=headers, params=params, **content
            )
        except httpx.TransportError as exc:
            return exc

    async def _back_off(self, route: CompiledRoute, failures: int, reason: str) -> None:
        if failures >= self._retry.max_retries:
            raise DiscordUnavailable(
                f"{route.method} {route.template}: {reason} after {self._retry.max_retries} retries"
            )
        delay = self._retry.backoff(failures)
        logger.warning(
            "Discord %s %s failed (%s); retry %d/%d in %.2f s",
            route.method,
            route.template,
            reason,
            failures + 1,
            self._retry.max_retries,
            delay,
        )
        await self._sleep(delay)

    async def _rate_limited(self, route: CompiledRoute, response: httpx.Response, n: int) -> None:
        payload = _json_or_empty(response)
        scope = response.headers.get("x-ratelimit-scope", "")
        is_global = (
            bool(payload.get("global"))
            or response.headers.get("x-ratelimit-global", "").lower() == "true"
            or scope == "global"
        )
        # 429s of a shared resource are not held against the client by Cloudflare.
        if scope != "shared":
            self._invalid.record(self._clock())
        retry_after = _retry_after(payload, response.headers)
        await self._limiter.rate_limited(route, retry_after, is_global=is_global)
        kind = "global" if is_global else f"bucket ({scope or 'unknown'} scope)"
        if retry_after > self._retry.max_rate_limit_wait or n > self._retry.max_rate_limited:
            raise DiscordRateLimited(
                f"{route.method} {route.template}: {kind} rate limit, retry after "
                f"{retry_after:.2f} s (429 number {n}); giving up"
            )
        logger.warning(
            "Discord %s %s: 429 %s rate limit, retrying after %.3f s",
            route.method,
            route.template,
            kind,
            retry_after,
        )

    def _headers(self, route: CompiledRoute) -> dict[str, str]:
        headers = {"User-Agent": USER_AGENT}
        if route.route.is_interaction_webhook:
            return headers
        if self._token is None:
            raise MissingBotToken(
                f"{route.method} {route.template} needs the bot token: set DISCORD_BOT_TOKEN"
            )
        headers["Authorization"] = f"Bot {self._token}"
        return headers

    # Typed calls, one per operation the project uses.

    async def get_channel_messages(
        self,
        channel_id: int | str,
        *,
        before: int | str | None = None,
        after: int | str | None = None,
        limit: int = MESSAGES_PAGE_MAX,
    ) -> list[JSONObject]:
        """One page of a channel's messages, newest first (also with `after`)."""
        if not 1 <= limit <= MESSAGES_PAGE_MAX:
            raise ValueError(f"limit must be 1-{MESSAGES_PAGE_MAX}, not {limit}")
        if before is not None and after is not None:
            raise ValueError("Discord takes only one of before and after")
        route = routes.GET_CHANNEL_MESSAGES.compile(channel_id=channel_id)
        query = {"before": _opt_str(before), "after": _opt_str(after), "limit": limit}
        result: list[JSONObject] = await self.request(route, query=query)
        return result

    async def get_channel(self, channel_id: int | str) -> JSONObject:
        """A channel or thread object."""
        return await self._object(routes.GET_CHANNEL.compile(channel_id=channel_id))

    async def get_guild(self, guild_id: int | str) -> JSONObject:
        """A guild object, with its roles."""
        return await self._object(routes.GET_GUILD.compile(guild_id=guild_id))

    async def get_guild_channels(self, guild_id: int | str) -> list[JSONObject]:
        """Every channel of a guild (threads excluded) with its permission overwrites."""
        return await self._list(routes.GET_GUILD_CHANNELS.compile(guild_id=guild_id))

    async def get_guild_roles(self, guild_id: int | str) -> list[JSONObject]:
        """Every role of a guild, permissions as decimal strings."""
        return await self._list(routes.GET_GUILD_ROLES.compile(guild_id=guild_id))

    async def get_active_threads(self, guild_id: int | str) -> JSONObject:
        """The guild's unarchived threads: `{"threads": [...], "members": [...]}`."""
        return await self._object(routes.GET_ACTIVE_THREADS.compile(guild_id=guild_id))

    async def get_public_archived_threads(
        self, channel_id: int | str, before: str | None = None, limit: int | None = None
    ) -> JSONObject:
        """One page of archived public threads: `threads`, `members`, `has_more`."""
        route = routes.GET_PUBLIC_ARCHIVED_THREADS.compile(channel_id=channel_id)
        return await self._object(route, {"before": before, "limit": limit})

    async def get_private_archived_threads(
        self, channel_id: int | str, before: str | None = None, limit: int | None = None
    ) -> JSONObject:
        """One page of archived private threads: `threads`, `members`, `has_more`."""
        route = routes.GET_PRIVATE_ARCHIVED_THREADS.compile(channel_id=channel_id)
        return await self._object(route, {"before": before, "limit": limit})

    async def get_guild_member(self, guild_id: int | str, user_id: int | str) -> JSONObject:
        """A member of a guild, with role ids."""
        route = routes.GET_GUILD_MEMBER.compile(guild_id=guild_id, user_id=user_id)
        return await self._object(route)

    async def get_current_user(self) -> JSONObject:
        """The bot's own user."""
        return await self._object(routes.GET_CURRENT_USER.compile())

    async def bulk_overwrite_commands(
        self,
        application_id: int | str,
        commands: Sequence[Mapping[str, Any]],
        guild_id: int | str | None = None,
    ) -> list[JSONObject]:
        """Replace every global (or one guild's) command; return what Discord stored."""
        if guild_id is None:
            route = routes.PUT_GLOBAL_COMMANDS.compile(application_id=application_id)
        else:
            route = routes.PUT_GUILD_COMMANDS.compile(
                application_id=application_id, guild_id=guild_id
            )
        result: list[JSONObject] = await self.request(route, body=[dict(c) for c in commands])
        return result

    async def edit_original_response(
        self,
        application_id: int | str,
        token: str,
        body: Mapping[str, Any],
        files: Sequence[File] = (),
    ) -> JSONObject:
        """Replace an interaction's deferred ("thinking...") message, with `files` attached."""
        route = routes.PATCH_ORIGINAL_RESPONSE.compile(
            webhook_id=application_id, webhook_token=token
        )
        result: JSONObject = await self.request(route, body=dict(body), files=files)
        return result

    async def create_followup(
        self, application_id: int | str, token: str, body: Mapping[str, Any]
    ) -> JSONObject:
        """Send a further message for an interaction (Discord always returns it)."""
        route = routes.POST_FOLLOWUP.compile(webhook_id=application_id, webhook_token=token)
        result: JSONObject = await self.request(route, body=dict(body))
        return result

    async def edit_followup(
        self, application_id: int | str, token: str, message_id: str, body: Mapping[str, Any]
    ) -> JSONObject:
        """Replace a follow-up message sent earlier for an interaction."""
        route = routes.PATCH_FOLLOWUP.compile(
            webhook_id=application_id, webhook_token=token, message_id=message_id
        )
        result: JSONObject = await self.request(route, body=dict(body))
        return result

    async def _object(
        self, route: CompiledRoute, query: Mapping[str, QueryValue | None] | None = None
    ) -> JSONObject:
        result: JSONObject = await self.request(route, query=query)
        return result

    async def _list(self, route: CompiledRoute) -> list[JSONObject]:
        result: list[JSONObject] = await self.request(route)
        return result


def _query_params(query: Mapping[str, QueryValue | None] | None) -> dict[str, str]:
    params: dict[str, str] = {}
    for name, value in (query or {}).items():
        if value is None:
            continue
        params[name] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return params


def _opt_str(value: int | str | None) -> str | None:
    return None if value is None else str(value)


def _json_or_empty(response: httpx.Response) -> JSONObject:
    try:
        payload = response.json()
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


def _retry_after(payload: Mapping[str, Any], headers: Mapping[str, str]) -> float:
    """Seconds to wait after a 429: the body's precise value, else the header's whole seconds."""
    for value in (payload.get("retry_after"), headers.get("retry-after")):
        if value is None:
            continue
        try:
            return max(0.0, float(value))
        except (TypeError, ValueError):
            continue
    return 1.0


def _http_error(route: CompiledRoute, response: httpx.Response) -> DiscordHTTPError:
    """Translate a 4xx response into the project's error for it."""
    payload = _json_or_empty(response)
    status = response.status_code
    where = f"{route.method} {route.template}"
    code = payload.get("code") if isinstance(payload.get("code"), int) else None
    message = str(payload.get("message", response.reason_phrase))
    errors = payload.get("errors")
    if status == 401:
        text = (
            f"{where}: the interaction token was refused (expired or unknown)"
            if route.route.is_interaction_webhook
            else "the bot token was refused: check DISCORD_BOT_TOKEN"
        )
        return DiscordUnauthorized(status, where, code, message, errors, text=text)
    if status == 403:
        return DiscordForbidden(status, where, code, message, errors)
    if status == 404:
        return DiscordNotFound(status, where, code, message, errors)
    return DiscordHTTPError(status, where, code, message, errors)
