"""The web process: POST /interactions, the health endpoints and GET /metrics."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final

import redis.asyncio as aioredis
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from app.errors import SettingsError
from app.interactions import responses
from app.interactions.admission import Admission
from app.interactions.endpoint import InteractionEndpoint
from app.interactions.verify import SignatureVerifier
from app.ops.windows import MinuteWindow, WindowFlusher, stop_task
from app.settings import Settings
from app.web.metrics import WebMetrics
from app.web.protocol import DirectRoute, Reply, declared_too_large
from health import HealthChecker

HealthFactory = Callable[[aioredis.Redis], HealthChecker]

logger = logging.getLogger(__name__)

MAX_BODY_BYTES: Final = 1 << 20

_JSON_HEADERS: Final = [(b"content-type", b"application/json")]
_TOO_LARGE: Final = responses.error("request body is larger than 1 MiB")
_NOT_READY: Final = responses.error("the service is starting or stopping")
_METHOD: Final = responses.error("only POST is allowed here")
_NOT_STARTED: Final = {"status": "unavailable", "checks": {}, "failing": ["not started"]}
_NO_KEY: Final = responses.error(
    "DISCORD_PUBLIC_KEY is not set: copy it from the Discord developer portal into the"
    " DISCORD_PUBLIC_KEY environment variable to accept interactions"
)


class _State:
    """What the lifespan opens and the handlers use."""

    redis: aioredis.Redis | None = None
    endpoint: InteractionEndpoint | None = None
    checker: HealthChecker | None = None


class InteractionsRoute:
    """POST /interactions around InteractionEndpoint: the protocol's direct route, and ASGI.

    `python -m app web` serves it through app.web.protocol.HttpProtocol, which calls
    `respond` from the parser's callback; any other server (and a request the protocol
    leaves to the app) comes in through `__call__`, which skips Request-object overhead.
    """

    path: Final = b"/interactions"
    too_large: Final = (413, _TOO_LARGE)

    def __init__(self, state: _State, configured: bool, max_body: int = MAX_BODY_BYTES) -> None:
        self.state = state
        self.configured = configured
        self.max_body = max_body

    def respond(self, headers: Mapping[bytes, bytes], body: bytes) -> Reply | Awaitable[Reply]:
        """The reply to a whole POST, or an awaitable of it while a command is admitted."""
        if not self.configured:
            return 503, _NO_KEY
        endpoint = self.state.endpoint
        if endpoint is None:
            return 503, _NOT_READY
        signature = headers.get(b"x-signature-ed25519")
        timestamp = headers.get(b"x-signature-timestamp")
        return endpoint.respond(
            body,
            None if signature is None else signature.decode("latin-1"),
            None if timestamp is None else timestamp.decode("latin-1"),
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            return await _send(send, 405, _METHOD, [(b"allow", b"POST")])
        # Names come lower-cased; a repeated header counts by its last value.
        headers = dict(scope["headers"])
        # Refuse an oversized body before reading it; without a length, cap while streaming.
        if declared_too_large(headers.get(b"content-length"), self.max_body):
            return await _send(send, *self.too_large)
        body = await _read_body(receive, self.max_body)
        if body is None:
            return await _send(send, *self.too_large)
        reply = self.respond(headers, body)
        status, payload = reply if isinstance(reply, tuple) else await reply
        await _send(send, status, payload)


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    message: Message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body if len(body) <= limit else None
    chunks = [body]
    size = len(body)
    while message.get("more_body", False):
        message = await receive()
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def _send(
    send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())]
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class WebApp(Starlette):
    """Starlette, except that /interactions is answered before its middleware and router.

    Discord's requests are most of the traffic and the route needs neither, so they skip
    about ten microseconds of per-request dispatch (a PING costs some 70 in all). The
    route is also the app's `direct_route`, for app.web.protocol.HttpProtocol.
    """

    def __init__(self, interactions: InteractionsRoute, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.interactions = interactions
        self.direct_route: DirectRoute = interactions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/interactions":
            await self.interactions(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def create_app(
    settings: Settings,
    *,
    redis: aioredis.Redis | None = None,
    clock: Callable[[], float] = time.time,
    registry: CollectorRegistry | None = None,
    health_checker: HealthFactory | None = None,
) -> WebApp:
    """The web app; opens (and later closes) a Redis client unless one is handed in."""
    if redis is None and settings.redis_url is None:
        raise SettingsError("REDIS_URL: the web process needs the URL of the Redis queue")
    state = _State()
    registry = registry if registry is not None else CollectorRegistry()
    metrics = WebMetrics(registry)
    make_checker = health_checker or (lambda client: HealthChecker(client, settings.data_dir))
    verifier = (
        SignatureVerifier(settings.discord_public_key, settings.signature_max_age, clock)
        if settings.discord_public_key is not None
        else None
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        client = redis
        if client is None:
            assert settings.redis_url is not None
            client = aioredis.Redis.from_url(
                settings.redis_url,
                socket_timeout=settings.redis_timeout,
                socket_connect_timeout=settings.redis_timeout,
            )
        state.redis = client
        state.checker = make_checker(client)
        flusher = WindowFlusher(MinuteWindow(client, clock), "web", metrics.snapshot, clock=clock)
        flushing = asyncio.create_task(flusher.run())
        admission: Admission | None = None
        if verifier is not None:
            admission = Admission(
                client,
                rate_limit_per_minute=settings.rate_limit_per_minute,
                timeout=settings.redis_timeout,
                clock=clock,
                queue_limit=settings.queue_limit,
            )
            state.endpoint = InteractionEndpoint(
                verifier, admission, observer=metrics.interaction_done
            )
        else:
            logger.warning("DISCORD_PUBLIC_KEY is not set: /interactions answers 503")
        # What start-up made lives as long as the process: out of the collector's sight,
        # full collections stop walking it, which keeps them off the latency tail.
        gc.freeze()
        try:
            yield
        finally:
            await stop_task(flushing)
            try:
                await flusher.flush()
            except (RedisError, OSError) as exc:
                logger.warning("the last request counters were not written: %s", exc)
            state.endpoint = None
            state.redis = None
            state.checker = None
            if admission is not None:
                await admission.aclose()
            if redis is None:
                await client.aclose()

    async def health(request: Request) -> Response:
        """Every check; 503 when this instance cannot take interactions (see README)."""
        checker = state.checker
        if checker is None:
            return JSONResponse(_NOT_STARTED, status_code=503)
        report = await checker.run()
        body = report.body()
        body["failing"] = sorted(n for n, c in report.checks.items() if not c["ok"])
        return JSONResponse(body, status_code=200 if report.serving else 503)

    async def ready(request: Request) -> Response:
        """Only the checks that decide whether interactions can be taken: Redis and memory."""
        checker = state.checker
        if checker is None:
            return JSONResponse(_NOT_STARTED, status_code=503)
        report = await checker.run_critical()
        return JSONResponse(report.body(), status_code=200 if report.serving else 503)

    async def metrics_page(request: Request) -> Response:
        """The Prometheus exposition of this process's metrics."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    interactions = InteractionsRoute(state, configured=verifier is not None)
    return WebApp(
        interactions,
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/health/live", _live, methods=["GET"]),
            Route("/health/ready", ready, methods=["GET"]),
            Route("/metrics", metrics_page, methods=["GET"]),
        ],
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error},
    )


async def _live(request: Request) -> Response:
    """The process is up and its event loop answers."""
    return JSONResponse({"status": "ok"})


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)
