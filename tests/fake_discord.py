"""A local HTTP server on 127.0.0.1 that plays Discord's REST API for tests.

It holds guilds, roles, members, channels, threads and messages, pages
messages and archived threads the way Discord does, answers command
registration and interaction webhooks (keeping what each interaction token
delivered), sends coherent rate-limit headers with real per-bucket
accounting, and injects faults on demand: 429s (per route or global), 5xx,
slow answers, dropped connections, 403 on a channel, 401 on a wrong token.

Every request is recorded and validated against Discord's OpenAPI spec;
`violations` collects what was wrong so a test can assert it is empty. The
webhook routes also take multipart/form-data (`payload_json` and `files[n]`, as
Discord takes uploads): the payload is validated like a JSON body, each upload
must be named by the payload's `attachments`, and what arrived is kept in
`Interaction.uploads` for a test to open.

Paging as Discord does it, for `GET /channels/{id}/messages`: `limit` 1-100
(default 50); with no cursor or with `before`, the newest messages (older
than `before`) newest first; with `after`, the `limit` messages immediately
after the cursor, also newest first (the first item is the newest of the
page, so the next `after` cursor is `page[0]["id"]`); with `around`, up to
`limit` messages centred on the cursor, newest first.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import pytest

from app.discord.snowflakes import time_snowflake
from tests.discord_spec import SpecViolation, discord_spec

API_PREFIX: Final = "/api/v10"
DEFAULT_TOKEN: Final = "fake-bot-token.for-tests.0123456789"
DEFAULT_APPLICATION_ID: Final = "1100000000000000001"
# 2024-01-01T00:00:00Z: generated history starts here unless told otherwise.
HISTORY_START: Final = 1_704_067_200.0
MESSAGE_MAX: Final = 2000
TEXT, VOICE, CATEGORY, ANNOUNCEMENT, PUBLIC_THREAD, PRIVATE_THREAD, FORUM = 0, 2, 4, 5, 11, 12, 15
THREAD_TYPES: Final = frozenset({10, PUBLIC_THREAD, PRIVATE_THREAD})
EVERYONE_PERMISSIONS: Final = (1 << 10) | (1 << 11) | (1 << 16)  # view, send, read history
EPHEMERAL: Final = 1 << 6
MAJOR: Final = ("channel_id", "guild_id", "webhook_id", "webhook_token")
# Discord's upload limit for a bot without a boosted server.
UPLOAD_MAX: Final = 10 * 1024 * 1024

JSON = dict[str, Any]


@dataclass
class RecordedRequest:
    """One request the fake received, and the status it answered (0 if it dropped it)."""

    method: str
    path: str
    template: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    time: float
    status: int = 0
    # The status a request dropped after handling would have had (0 otherwise).
    handled_status: int = 0
    # The file parts of a multipart/form-data request (its `body` is the payload_json).
    files: list[Upload] = field(default_factory=list)


@dataclass
class Upload:
    """One file part of a multipart request, and the alt text its attachment gave it."""

    part: str  # the form field, `files[n]`
    filename: str
    content_type: str
    content: bytes = field(repr=False)
    description: str | None = None


@dataclass
class _Multipart:
    """A multipart body as the route handlers receive it."""

    payload: Any
    files: list[Upload]


@dataclass
class Fault:
    """A response to serve instead of the real one, for a route key or for any route."""

    kind: str  # "429", "status", "delay", "drop"
    route: str | None = None  # "GET /channels/{channel_id}/messages"; None matches any
    status: int = 500
    retry_after: float = 0.1
    is_global: bool = False
    delay: float = 0.0
    # A "drop" fault: False closes the connection before the request is handled,
    # True after (the request took effect, but its answer never reaches the client).
    after_handling: bool = False


@dataclass
class Interaction:
    """What one interaction token delivered: the original response and follow-ups."""

    application_id: str
    original: JSON | None = None
    edits: list[JSON] = field(default_factory=list)
    followups: list[JSON] = field(default_factory=list)
    expired: bool = False
    # Every file uploaded through this token, in order of arrival.
    uploads: list[Upload] = field(default_factory=list)

    def shown(self) -> list[JSON]:
        """The messages a user sees, in order."""
        return ([self.original] if self.original else []) + self.followups


@dataclass
class _Window:
    limit: int
    remaining: int
    reset_at: float
    reset_epoch: float


class _Reply(Exception):
    def __init__(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.payload = payload
        self.headers = headers or {}


def _error(status: int, code: int, message: str) -> _Reply:
    return _Reply(status, {"code": code, "message": message})


def iso(unix: float) -> str:
    """Discord's ISO8601 timestamp form."""
    return datetime.fromtimestamp(unix, UTC).isoformat(timespec="microseconds")


class FakeDiscord:
    """Discord's REST API on loopback: a context manager, or the `fake_discord` fixture."""

    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        application_id: str = DEFAULT_APPLICATION_ID,
        bucket_limit: int = 50,
        bucket_period: float = 1.0,
        message_content_intent: bool = True,
    ) -> None:
        self.token = token
        self.application_id = application_id
        self.bucket_limit = bucket_limit
        self.bucket_period = bucket_period
        self.message_content_intent = message_content_intent
        self.requests: list[RecordedRequest] = []
        self.violations: list[str] = []
        self.faults: list[Fault] = []
        self.forbidden_channels: set[str] = set()
        self.guilds: dict[str, JSON] = {}
        self.channels: dict[str, JSON] = {}
        self.messages: dict[str, list[JSON]] = {}
        self.members: dict[tuple[str, str], JSON] = {}
        self.users: dict[str, JSON] = {}
        self.commands: dict[str | None, list[JSON]] = {}
        self.interactions: dict[str, Interaction] = {}
        self.bot_user = {
            "id": application_id,
            "username": "history-assistant",
            "global_name": None,
            "discriminator": "0",
            "avatar": None,
            "bot": True,
        }
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self._last_message_time = HISTORY_START
        self._windows: dict[str, _Window] = {}
        self._routes = [(m, _compile(t), t, h) for m, t, h in self._route_table()]
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # Lifecycle.

    def start(self) -> FakeDiscord:
        """Listen on a free port of 127.0.0.1 in a background thread."""
        server = _Server(("127.0.0.1", 0), _handler_for(self))
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> FakeDiscord:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT`."""
        assert self._server is not None, "FakeDiscord is not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def api_base(self) -> str:
        """The value for DISCORD_API_BASE."""
        return self.url + API_PREFIX

    # Building state.

    def next_id(self, unix: float | None = None) -> str:
        """A fresh snowflake, created at `unix` (default: now)."""
        low = next(self._ids) & 0x3FFFFF
        return str(time_snowflake(time.time() if unix is None else unix, low))

    def add_user(self, username: str, *, bot: bool = False, global_name: str | None = None) -> JSON:
        """A user (reused by username)."""
        with self._lock:
            for user in self.users.values():
                if user["username"] == username:
                    return user
            user = {
                "id": self.next_id(HISTORY_START - 86_400),
                "username": username,
                "global_name": global_name if global_name is not None else username.title(),
                "discriminator": "0",
                "avatar": None,
                "bot": bot,
            }
            self.users[user["id"]] = user
            return user

    def add_guild(self, name: str = "Test Server", *, owner: JSON | None = None) -> JSON:
        """A guild with its @everyone role (same id as the guild)."""
        with self._lock:
            guild_id = self.next_id(HISTORY_START - 86_400 * 30)
            owner = owner or self.add_user("owner")
            everyone = _role(guild_id, "@everyone", EVERYONE_PERMISSIONS, 0)
            guild = {
                "id": guild_id,
                "name": name,
                "icon": None,
                "owner_id": owner["id"],
                "roles": [everyone],
                "emojis": [],
                "features": [],
                "verification_level": 0,
                "premium_tier": 0,
                "preferred_locale": "en-US",
                "nsfw_level": 0,
            }
            self.guilds[guild_id] = guild
            return guild

    def add_role(
        self, guild_id: str, name: str, permissions: int = 0, *, position: int | None = None
    ) -> JSON:
        """A role; permissions given as an int, served as Discord's decimal string."""
        with self._lock:
            roles = self.guilds[guild_id]["roles"]
            role = _role(self.next_id(), name, permissions, position or len(roles))
            roles.append(role)
            return role

    def add_member(self, guild_id: str, user: JSON, roles: list[str] | None = None) -> JSON:
        """A guild member with role ids."""
        with self._lock:
            member = {
                "user": user,
                "nick": None,
                "roles": list(roles or []),
                "joined_at": iso(HISTORY_START - 86_400),
                "deaf": False,
                "mute": False,
                "flags": 0,
                "pending": False,
            }
            self.members[(guild_id, user["id"])] = member
            return member

    def add_channel(
        self,
        guild_id: str,
        name: str,
        type: int = TEXT,
        *,
        parent_id: str | None = None,
        overwrites: list[JSON] | None = None,
        position: int | None = None,
        topic: str | None = None,
    ) -> JSON:
        """A guild channel; overwrites as Discord's {id, type, allow, deny} with string bits."""
        with self._lock:
            channel: JSON = {
                "id": self.next_id(HISTORY_START - 86_400 * 7),
                "type": type,
                "guild_id": guild_id,
                "name": name,
                "position": position if position is not None else len(self.channels),
                "parent_id": parent_id,
                "permission_overwrites": [_overwrite(o) for o in overwrites or []],
                "topic": topic,
                "nsfw": False,
                "last_message_id": None,
                "rate_limit_per_user": 0,
                "flags": 0,
            }
            self.channels[channel["id"]] = channel
            self.messages[channel["id"]] = []
            return channel

    def add_thread(
        self,
        parent_id: str,
        name: str,
        *,
        private: bool = False,
        archived: bool = False,
        archive_timestamp: float | None = None,
        owner: JSON | None = None,
    ) -> JSON:
        """A thread under a text, announcement or forum channel."""
        with self._lock:
            parent = self.channels[parent_id]
            created = archive_timestamp - 3600 if archive_timestamp else HISTORY_START
            thread: JSON = {
                "id": self.next_id(created),
                "type": PRIVATE_THREAD if private else PUBLIC_THREAD,
                "guild_id": parent["guild_id"],
                "parent_id": parent_id,
                "name": name,
                "owner_id": (owner or self.bot_user)["id"],
                "last_message_id": None,
                "message_count": 0,
                "member_count": 1,
                "rate_limit_per_user": 0,
                "flags": 0,
                "thread_metadata": {
                    "archived": archived,
                    "archive_timestamp": iso(archive_timestamp or created),
                    "auto_archive_duration": 1440,
                    "locked": False,
                    **({"invitable": True} if private else {}),
                },
            }
            self.channels[thread["id"]] = thread
            self.messages[thread["id"]] = []
            return thread

    def archive_thread(self, thread_id: str, at: float) -> None:
        """Archive a thread at a given time."""
        with self._lock:
            meta = self.channels[thread_id]["thread_metadata"]
            meta["archived"] = True
            meta["archive_timestamp"] = iso(at)

    def add_message(
        self,
        channel_id: str,
        content: str,
        *,
        author: JSON | str | None = None,
        at: float | None = None,
        reply_to: JSON | None = None,
        mentions: list[JSON] | None = None,
        attachments: list[JSON] | None = None,
        embeds: list[JSON] | None = None,
        type: int = 0,
    ) -> JSON:
        """A message; without `at`, one minute after the last one added."""
        with self._lock:
            if at is None:
                at = self._last_message_time + 60.0
            self._last_message_time = max(self._last_message_time, at)
            if author is None or isinstance(author, str):
                author = self.add_user(author or "alice")
            message: JSON = {
                "id": self.next_id(at),
                "channel_id": channel_id,
                "author": author,
                "content": content,
                "timestamp": iso(at),
                "edited_timestamp": None,
                "tts": False,
                "mention_everyone": False,
                "mentions": mentions or [],
                "mention_roles": [],
                "attachments": attachments or [],
                "embeds": embeds or [],
                "components": [],
                "pinned": False,
                "type": 19 if reply_to else type,
                "flags": 0,
            }
            if reply_to is not None:
                message["message_reference"] = {
                    "type": 0,
                    "message_id": reply_to["id"],
                    "channel_id": reply_to["channel_id"],
                    "guild_id": self.channels[channel_id].get("guild_id"),
                }
                message["referenced_message"] = reply_to
            page = self.messages[channel_id]
            page.append(message)
            page.sort(key=lambda m: int(m["id"]))
            self.channels[channel_id]["last_message_id"] = page[-1]["id"]
            return message

    def add_messages(
        self,
        channel_id: str,
        count: int,
        *,
        authors: list[str] | None = None,
        start: float | None = None,
        interval: float = 60.0,
        text: Callable[[int], str] = lambda i: f"message number {i}",
    ) -> list[JSON]:
        """`count` messages in time order, authors taken in turn."""
        names = authors or ["alice", "bob", "carol"]
        begin = start if start is not None else self._last_message_time + interval
        return [
            self.add_message(
                channel_id, text(i), author=names[i % len(names)], at=begin + i * interval
            )
            for i in range(count)
        ]

    def edit_message(self, channel_id: str, message_id: str, content: str, at: float) -> JSON:
        """Change a message's content and set its edited_timestamp."""
        with self._lock:
            message = self._message(channel_id, message_id)
            message["content"] = content
            message["edited_timestamp"] = iso(at)
            return message

    def delete_message(self, channel_id: str, message_id: str) -> None:
        """Remove a message."""
        with self._lock:
            self.messages[channel_id].remove(self._message(channel_id, message_id))

    def _message(self, channel_id: str, message_id: str) -> JSON:
        for message in self.messages[channel_id]:
            if message["id"] == message_id:
                return message
        raise KeyError(message_id)

    # Faults.

    def inject_429(
        self,
        route: str | None = None,
        *,
        times: int = 1,
        retry_after: float = 0.1,
        is_global: bool = False,
    ) -> None:
        """The next `times` requests (of `route`, or any) get a 429."""
        self._inject(Fault("429", route, retry_after=retry_after, is_global=is_global), times)

    def inject_status(self, status: int = 500, route: str | None = None, *, times: int = 1) -> None:
        """The next `times` requests get this status with a Discord-style error body."""
        self._inject(Fault("status", route, status=status), times)

    def inject_delay(self, seconds: float, route: str | None = None, *, times: int = 1) -> None:
        """The next `times` requests are answered normally but only after `seconds`."""
        self._inject(Fault("delay", route, delay=seconds), times)

    def inject_drop(
        self, route: str | None = None, *, times: int = 1, after_handling: bool = False
    ) -> None:
        """The next `times` requests get their connection closed without an answer.

        With `after_handling` the request is served first (a message is posted,
        an edit applied) and only the answer is lost, as when a connection dies
        on its way back: the client cannot tell the two apart.
        """
        self._inject(Fault("drop", route, after_handling=after_handling), times)

    def forbid_channel(self, channel_id: str) -> None:
        """Every request about this channel gets 403 Missing Access."""
        with self._lock:
            self.forbidden_channels.add(channel_id)

    def expire_interaction(self, token: str) -> None:
        """The interaction token is past its 15 minutes: webhook calls get 401."""
        with self._lock:
            self._interaction(token).expired = True

    def _inject(self, fault: Fault, times: int) -> None:
        with self._lock:
            self.faults.extend([fault] * times)

    # Reading what happened.

    def interaction(self, token: str) -> Interaction:
        """What an interaction token delivered so far."""
        with self._lock:
            return self._interaction(token)

    def requests_for(self, route: str) -> list[RecordedRequest]:
        """Recorded requests of one route key, e.g. `GET /channels/{channel_id}/messages`."""
        with self._lock:
            return [r for r in self.requests if f"{r.method} {r.template}" == route]

    def max_requests_per_second(self, window: float = 1.0) -> int:
        """The most requests that arrived within any `window` seconds."""
        with self._lock:
            times = sorted(r.time for r in self.requests)
        best = 0
        start = 0
        for end, moment in enumerate(times):
            while moment - times[start] >= window:
                start += 1
            best = max(best, end - start + 1)
        return best

    # Serving.

    def _route_table(self) -> list[tuple[str, str, Callable[[JSON, JSON, Any], Any]]]:
        return [
            ("GET", "/channels/{channel_id}", self._get_channel),
            ("GET", "/channels/{channel_id}/messages", self._get_messages),
            ("GET", "/channels/{channel_id}/threads/archived/public", self._archived_public),
            ("GET", "/channels/{channel_id}/threads/archived/private", self._archived_private),
            ("GET", "/guilds/{guild_id}", self._get_guild),
            ("GET", "/guilds/{guild_id}/channels", self._get_guild_channels),
            ("GET", "/guilds/{guild_id}/roles", self._get_roles),
            ("GET", "/guilds/{guild_id}/threads/active", self._active_threads),
            ("GET", "/guilds/{guild_id}/members/{user_id}", self._get_member),
            ("GET", "/users/@me", lambda p, q, b: self.bot_user),
            ("PUT", "/applications/{application_id}/commands", self._put_commands),
            (
                "PUT",
                "/applications/{application_id}/guilds/{guild_id}/commands",
                self._put_commands,
            ),
            (
                "GET",
                "/webhooks/{webhook_id}/{webhook_token}/messages/@original",
                self._get_original,
            ),
            (
                "PATCH",
                "/webhooks/{webhook_id}/{webhook_token}/messages/@original",
                self._patch_original,
            ),
            ("POST", "/webhooks/{webhook_id}/{webhook_token}", self._post_followup),
            (
                "PATCH",
                "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}",
                self._patch_followup,
            ),
        ]

    def handle(self, method: str, raw_path: str, headers: dict[str, str], raw_body: bytes) -> Any:
        """Serve one request: (status, payload, headers), or None to drop the connection."""
        split = urlsplit(raw_path)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        path = split.path
        body, files, problem = _parse_body(raw_body, headers.get("content-type", ""))
        params: JSON = {}
        template = ""
        handler: Callable[[JSON, JSON, Any], Any] | None = None
        if path.startswith(API_PREFIX + "/"):
            for route_method, pattern, route_template, route_handler in self._routes:
                match = pattern.match(path[len(API_PREFIX) :])
                if route_method == method and match:
                    params, template, handler = match.groupdict(), route_template, route_handler
                    break
        record = RecordedRequest(method, path, template, query, headers, body, time.monotonic())
        record.files = files or []
        with self._lock:
            self.requests.append(record)
            self._check(record, problem, multipart=files is not None)
            fault = self._take_fault(f"{method} {template}")
        if fault is not None and fault.kind == "drop" and not fault.after_handling:
            return None
        if fault is not None and fault.kind == "delay":
            time.sleep(fault.delay)
            fault = None
        with self._lock:
            try:
                if handler is None:
                    raise _error(404, 0, "404: Not Found")
                served = body if files is None else _Multipart(body, files)
                reply = self._serve(
                    method, template, params, query, headers, served, fault, handler
                )
            except _Reply as exc:
                reply = exc
            if fault is not None and fault.kind == "drop":
                # Handled, but the answer is lost: the client saw no status at all.
                record.handled_status = reply.status
                return None
            record.status = reply.status
            return reply.status, reply.payload, reply.headers

    def _serve(
        self,
        method: str,
        template: str,
        params: JSON,
        query: JSON,
        headers: dict[str, str],
        body: Any,
        fault: Fault | None,
        handler: Callable[[JSON, JSON, Any], Any],
    ) -> _Reply:
        is_webhook = template.startswith("/webhooks/")
        if not is_webhook and headers.get("authorization") != f"Bot {self.token}":
            raise _error(401, 0, "401: Unauthorized")
        limit_headers = self._spend(f"{method} {template}", params, fault)
        if fault is not None and fault.kind == "status":
            raise _Reply(fault.status, {"code": 0, "message": "Internal Server Error"})
        if params.get("channel_id") in self.forbidden_channels:
            raise _Reply(403, {"code": 50001, "message": "Missing Access"}, limit_headers)
        try:
            payload = handler(params, query, body)
        except _Reply as exc:
            exc.headers.update(limit_headers)
            raise
        return _Reply(200, payload, limit_headers)

    def _check(self, record: RecordedRequest, problem: str | None, *, multipart: bool) -> None:
        where = f"{record.method} {record.path}"
        if problem is not None:
            self.violations.append(f"{where}: {problem}")
        names = [f.part for f in record.files] if multipart else None
        try:
            discord_spec().validate(
                record.method, record.path, record.body, record.query, files=names
            )
        except SpecViolation as exc:
            self.violations.append(str(exc))
        if multipart:
            self.violations.extend(f"{where}: {p}" for p in _upload_problems(record))
        if not record.headers.get("user-agent", "").startswith("DiscordBot ("):
            self.violations.append(f"{where}: User-Agent is not 'DiscordBot (URL, VERSION)'")
        auth = record.headers.get("authorization")
        if record.template.startswith("/webhooks/"):
            if auth is not None:
                self.violations.append(f"{where}: Authorization sent on an interaction webhook")
        elif auth is None or not auth.startswith("Bot "):
            self.violations.append(f"{where}: bot route without 'Authorization: Bot TOKEN'")

    def _take_fault(self, route: str) -> Fault | None:
        for index, fault in enumerate(self.faults):
            if fault.route is None or fault.route == route:
                return self.faults.pop(index)
        return None

    def _spend(self, route: str, params: JSON, fault: Fault | None) -> dict[str, str]:
        """Bucket accounting; raises the 429 of an exhausted bucket or an injected one."""
        now = time.monotonic()
        bucket = hashlib.sha1(route.encode()).hexdigest()[:16]
        major = ";".join(f"{k}={params[k]}" for k in MAJOR if k in params)
        window = self._windows.get(f"{bucket}:{major}")
        if window is None or now >= window.reset_at:
            window = _Window(
                self.bucket_limit,
                self.bucket_limit,
                now + self.bucket_period,
                time.time() + self.bucket_period,
            )
            self._windows[f"{bucket}:{major}"] = window
        if fault is not None and fault.kind == "429":
            if fault.is_global:
                raise _rate_limited(fault.retry_after, "global", {})
            window.remaining = 0
            window.reset_at = now + fault.retry_after
            window.reset_epoch = time.time() + (window.reset_at - now)
            raise _rate_limited(fault.retry_after, "user", _bucket_headers(bucket, window, now))
        if window.remaining == 0:
            raise _rate_limited(window.reset_at - now, "user", _bucket_headers(bucket, window, now))
        window.remaining -= 1
        return _bucket_headers(bucket, window, now)

    # Route handlers: (path params, query, body) -> JSON payload.

    def _channel(self, channel_id: str) -> JSON:
        channel = self.channels.get(channel_id)
        if channel is None:
            raise _error(404, 10003, "Unknown Channel")
        return channel

    def _get_channel(self, params: JSON, query: JSON, body: Any) -> JSON:
        return self._channel(params["channel_id"])

    def _get_messages(self, params: JSON, query: JSON, body: Any) -> list[JSON]:
        channel = self._channel(params["channel_id"])
        if channel["type"] in (CATEGORY, FORUM):
            raise _error(400, 50024, "Cannot execute action on this channel type")
        cursors = [k for k in ("before", "after", "around") if k in query]
        limit = int(query.get("limit", "50"))
        if len(cursors) > 1 or not 1 <= limit <= 100:
            raise _error(400, 50035, "Invalid Form Body")
        history = self.messages[channel["id"]]  # oldest first
        if "after" in query:
            after = int(query["after"])
            page = [m for m in history if int(m["id"]) > after][:limit]
        elif "around" in query:
            around = int(query["around"])
            newer = [m for m in history if int(m["id"]) > around][: limit // 2]
            older = [m for m in history if int(m["id"]) <= around]
            page = older[max(0, len(older) - (limit - len(newer))) :] + newer
        else:
            before = int(query["before"]) if "before" in query else None
            older = [m for m in history if before is None or int(m["id"]) < before]
            page = older[-limit:]
        return [self._as_seen(m) for m in reversed(page)]

    def _as_seen(self, message: JSON) -> JSON:
        """Without the message content intent Discord blanks other users' messages."""
        mentioned = any(u["id"] == self.bot_user["id"] for u in message["mentions"])
        if self.message_content_intent or message["author"].get("bot") or mentioned:
            return message
        return {**message, "content": "", "embeds": [], "attachments": [], "components": []}

    def _threads(self, parent_id: str, thread_type: int, query: JSON) -> JSON:
        self._channel(parent_id)
        limit = int(query.get("limit", "50"))
        before = datetime.fromisoformat(query["before"]) if "before" in query else None
        archived = sorted(
            (
                c
                for c in self.channels.values()
                if c.get("parent_id") == parent_id
                and c["type"] == thread_type
                and c["thread_metadata"]["archived"]
                and (
                    before is None
                    or datetime.fromisoformat(c["thread_metadata"]["archive_timestamp"]) < before
                )
            ),
            key=lambda c: str(c["thread_metadata"]["archive_timestamp"]),
            reverse=True,
        )
        return {"threads": archived[:limit], "members": [], "has_more": len(archived) > limit}

    def _archived_public(self, params: JSON, query: JSON, body: Any) -> JSON:
        return self._threads(params["channel_id"], PUBLIC_THREAD, query)

    def _archived_private(self, params: JSON, query: JSON, body: Any) -> JSON:
        return self._threads(params["channel_id"], PRIVATE_THREAD, query)

    def _guild(self, guild_id: str) -> JSON:
        guild = self.guilds.get(guild_id)
        if guild is None:
            raise _error(404, 10004, "Unknown Guild")
        return guild

    def _get_guild(self, params: JSON, query: JSON, body: Any) -> JSON:
        return self._guild(params["guild_id"])

    def _get_guild_channels(self, params: JSON, query: JSON, body: Any) -> list[JSON]:
        guild_id = self._guild(params["guild_id"])["id"]
        return sorted(
            (
                c
                for c in self.channels.values()
                if c["guild_id"] == guild_id and c["type"] not in THREAD_TYPES
            ),
            key=lambda c: (c["position"], int(c["id"])),
        )

    def _get_roles(self, params: JSON, query: JSON, body: Any) -> list[JSON]:
        roles: list[JSON] = self._guild(params["guild_id"])["roles"]
        return roles

    def _active_threads(self, params: JSON, query: JSON, body: Any) -> JSON:
        guild_id = self._guild(params["guild_id"])["id"]
        threads = [
            c
            for c in self.channels.values()
            if c["guild_id"] == guild_id
            and c["type"] in THREAD_TYPES
            and not c["thread_metadata"]["archived"]
        ]
        return {"threads": threads, "members": []}

    def _get_member(self, params: JSON, query: JSON, body: Any) -> JSON:
        self._guild(params["guild_id"])
        member = self.members.get((params["guild_id"], params["user_id"]))
        if member is None:
            raise _error(404, 10007, "Unknown Member")
        return member

    def _put_commands(self, params: JSON, query: JSON, body: Any) -> list[JSON]:
        if params["application_id"] != self.application_id:
            raise _error(403, 50001, "Missing Access")
        guild_id = params.get("guild_id")
        stored = [
            {
                "id": self.next_id(),
                "application_id": self.application_id,
                "version": self.next_id(),
                **({"guild_id": guild_id} if guild_id else {}),
                **command,
                "default_member_permissions": _permission_string(
                    command.get("default_member_permissions")
                ),
            }
            for command in body or []
        ]
        self.commands[guild_id] = stored
        return stored

    def _interaction(self, token: str) -> Interaction:
        return self.interactions.setdefault(token, Interaction(self.application_id))

    def _webhook(self, params: JSON) -> Interaction:
        if params["webhook_id"] != self.application_id:
            raise _error(404, 10015, "Unknown Webhook")
        interaction = self._interaction(params["webhook_token"])
        if interaction.expired:
            raise _error(401, 50027, "Invalid Webhook Token")
        return interaction

    def _delivered(
        self, sent: Any, flags: int = 0, *, interaction: Interaction, before: JSON | None = None
    ) -> JSON:
        """The message a webhook body makes; `before` is the message an edit replaces."""
        body, files = (sent.payload, sent.files) if isinstance(sent, _Multipart) else (sent, [])
        body = body if isinstance(body, dict) else {}
        if len(body.get("content") or "") > MESSAGE_MAX:
            raise _error(400, 50035, "Invalid Form Body")
        # An edit without `attachments` keeps the message's files; one with it replaces them.
        attachments = list((before or {}).get("attachments") or [])
        if "attachments" in body or files:
            attachments = self._attached(body.get("attachments") or [], files, attachments)
            interaction.uploads.extend(files)
        return {
            "id": self.next_id(),
            "type": 20,
            "channel_id": body.get("channel_id", "0"),
            "author": self.bot_user,
            "content": body.get("content") or "",
            "embeds": body.get("embeds") or [],
            "attachments": attachments,
            "components": body.get("components") or [],
            "mentions": [],
            "mention_roles": [],
            "mention_everyone": False,
            "pinned": False,
            "tts": False,
            "timestamp": iso(time.time()),
            "edited_timestamp": None,
            "flags": int(body.get("flags") or 0) | flags,
            "webhook_id": self.application_id,
            "allowed_mentions": body.get("allowed_mentions"),
        }

    def _attached(self, named: list[Any], files: list[Upload], kept: list[JSON]) -> list[JSON]:
        """The attachment objects of a message: new uploads by part number, kept ones by id."""
        uploads = {f.part: f for f in files}
        previous = {a["id"]: a for a in kept}
        attachments = []
        for item in named:
            if not isinstance(item, dict):
                continue
            upload = uploads.get(f"files[{item.get('id')}]")
            if upload is None:
                if item.get("id") in previous:
                    attachments.append(previous[item["id"]])
                continue
            upload.description = item.get("description")
            attachment_id = self.next_id()
            attachments.append(
                {
                    "id": attachment_id,
                    "filename": item.get("filename") or upload.filename,
                    "description": item.get("description"),
                    "content_type": upload.content_type,
                    "size": len(upload.content),
                    "url": f"{self.url}/attachments/{attachment_id}/{upload.filename}",
                    "proxy_url": f"{self.url}/attachments/{attachment_id}/{upload.filename}",
                }
            )
        return attachments

    def _get_original(self, params: JSON, query: JSON, body: Any) -> JSON:
        interaction = self._webhook(params)
        if interaction.original is None:
            raise _error(404, 10008, "Unknown Message")
        return interaction.original

    def _patch_original(self, params: JSON, query: JSON, body: Any) -> JSON:
        interaction = self._webhook(params)
        message = self._delivered(body, interaction=interaction, before=interaction.original)
        if interaction.original is not None:
            message = {**interaction.original, **message, "id": interaction.original["id"]}
            message["edited_timestamp"] = iso(time.time())
        interaction.original = message
        interaction.edits.append(body.payload if isinstance(body, _Multipart) else body)
        return message

    def _post_followup(self, params: JSON, query: JSON, body: Any) -> JSON:
        interaction = self._webhook(params)
        message = self._delivered(body, interaction=interaction)
        interaction.followups.append(message)
        return message

    def _patch_followup(self, params: JSON, query: JSON, body: Any) -> JSON:
        interaction = self._webhook(params)
        for index, sent in enumerate(interaction.followups):
            if sent["id"] == params["message_id"]:
                edit = self._delivered(body, interaction=interaction, before=sent)
                message = {**sent, **edit, "id": sent["id"]}
                message["edited_timestamp"] = iso(time.time())
                interaction.followups[index] = message
                return message
        raise _error(404, 10008, "Unknown Message")


class _Server(ThreadingHTTPServer):
    # The default backlog of 5 resets connections when a test opens dozens at once,
    # which a client would take for a network fault that never was injected.
    request_queue_size = 128
    daemon_threads = True


def _compile(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template)) + "$")


def _parse_body(raw: bytes, content_type: str) -> tuple[Any, list[Upload] | None, str | None]:
    """(body, file parts or None when not multipart, what is wrong with it or None)."""
    if content_type.startswith("multipart/form-data"):
        return _parse_multipart(raw, content_type)
    if not raw:
        return None, None, None
    try:
        return json.loads(raw), None, None
    except ValueError:
        return None, None, "body is not JSON"


def _parse_multipart(raw: bytes, content_type: str) -> tuple[Any, list[Upload], str | None]:
    """A multipart/form-data body as Discord reads it: `payload_json` and `files[n]` parts."""
    boundary = re.search(r'boundary="?([^";]+)"?', content_type)
    if boundary is None:
        return None, [], "multipart body without a boundary"
    chunks = raw.split(b"--" + boundary.group(1).encode())
    if len(chunks) < 3 or not chunks[-1].startswith(b"--"):
        return None, [], "multipart body is not closed by its boundary"
    payload: Any = None
    files: list[Upload] = []
    for chunk in chunks[1:-1]:
        head, _, content = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        content = content.removesuffix(b"\r\n")
        headers = dict(
            (k.strip().lower(), v.strip())
            for k, _, v in (line.partition(":") for line in head.decode().split("\r\n"))
        )
        disposition = dict(re.findall(r'(\w+)="([^"]*)"', headers.get("content-disposition", "")))
        name = disposition.get("name", "")
        if name == "payload_json":
            try:
                payload = json.loads(content)
            except ValueError:
                return None, files, "payload_json is not JSON"
        elif re.fullmatch(r"files\[\d+\]", name):
            part_type = headers.get("content-type", "application/octet-stream")
            files.append(Upload(name, disposition.get("filename", ""), part_type, content))
        else:
            return payload, files, f"unknown multipart part {name!r}"
    if payload is None:
        return None, files, "multipart body without payload_json"
    return payload, files, None


def _upload_problems(record: RecordedRequest) -> list[str]:
    """What Discord would refuse about the files of a multipart request."""
    named = record.body.get("attachments") if isinstance(record.body, dict) else None
    ids = {f"files[{a.get('id')}]" for a in named or [] if isinstance(a, dict)}
    problems = [f"{f.part} is not named in attachments" for f in record.files if f.part not in ids]
    problems += [f"{f.part} is empty" for f in record.files if not f.content]
    problems += [
        f"{f.part} is {len(f.content):,} bytes, over Discord's {UPLOAD_MAX:,}"
        for f in record.files
        if len(f.content) > UPLOAD_MAX
    ]
    return problems


def _role(role_id: str, name: str, permissions: int, position: int) -> JSON:
    return {
        "id": role_id,
        "name": name,
        "permissions": str(permissions),
        "position": position,
        "color": 0,
        "hoist": False,
        "managed": False,
        "mentionable": False,
        "flags": 0,
    }


def _overwrite(overwrite: JSON) -> JSON:
    return {
        "id": str(overwrite["id"]),
        "type": int(overwrite.get("type", 0)),
        "allow": str(overwrite.get("allow", 0)),
        "deny": str(overwrite.get("deny", 0)),
    }


def _permission_string(value: Any) -> str | None:
    return None if value is None else str(value)


def _bucket_headers(bucket: str, window: _Window, now: float) -> dict[str, str]:
    return {
        "X-RateLimit-Bucket": bucket,
        "X-RateLimit-Limit": str(window.limit),
        "X-RateLimit-Remaining": str(window.remaining),
        "X-RateLimit-Reset": f"{window.reset_epoch:.3f}",
        "X-RateLimit-Reset-After": f"{max(0.0, window.reset_at - now):.3f}",
    }


def _rate_limited(retry_after: float, scope: str, headers: dict[str, str]) -> _Reply:
    is_global = scope == "global"
    headers = {
        **headers,
        "Retry-After": str(math.ceil(retry_after)),
        "X-RateLimit-Scope": scope,
        **({"X-RateLimit-Global": "true"} if is_global else {}),
    }
    payload = {
        "message": "You are being rate limited.",
        "retry_after": round(retry_after, 3),
        "global": is_global,
        **({"code": 0} if is_global else {}),
    }
    return _Reply(429, payload, headers)


def _handler_for(fake: FakeDiscord) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Idle keep-alive connections end on their own once a test is over.
        timeout = 10

        def _dispatch(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            reply = fake.handle(self.command, self.path, headers, raw)
            if reply is None:
                self.close_connection = True
                return
            status, payload, extra = reply
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PUT = do_PATCH = do_POST = do_DELETE = _dispatch

        def log_message(self, format: str, *args: Any) -> None:
            """Keep test output quiet; requests are recorded instead."""

    return Handler


@pytest.fixture(name="fake_discord")
def fake_discord_fixture() -> Iterator[FakeDiscord]:
    """A started FakeDiscord, stopped after the test (import it, or list this module in
    `pytest_plugins`, to use `fake_discord` as a fixture)."""
    with FakeDiscord() as fake:
        yield fake
