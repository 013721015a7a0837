"""uvicorn's httptools protocol, made cheaper per request in two ways; pass HttpProtocol as `http`.

Writes are coalesced: uvicorn writes a response's head and body separately,
and uvloop sends each write at once, so every answer costs two sends, and each
send wakes the client's side. Here a connection's writes are kept until the
current pass of the event loop is over and then leave in one send: a response
goes out whole, and the answers to the requests that arrived together leave
together. Under load that halves the sends and most of the cross-CPU wake-ups
behind them, which cost more than the rest of uvicorn's work on a virtual
machine; with a single request in flight it only waits for the end of the pass.

A direct route is answered inside the protocol: the app may name one POST
route (its `direct_route`, a DirectRoute) whose replies are JSON and mostly
known as soon as the body is in, Discord's /interactions. uvicorn would build
a request cycle, start a task for it and run the app's coroutines, some 9 µs
of the 84 a PING cost that way; here, when the route replies at once, the
reply is written from the parser's callback. The app must be handed to
uvicorn unwrapped (no proxy-headers middleware): otherwise every request goes
the ASGI way, answered the same, only slower. When it replies with a coroutine (a
command waiting on Redis), that coroutine gets uvicorn's own request cycle
and task, so pipelining, disconnects and shutdown behave as they always do.
Any other request, and a direct one that arrives while an earlier request is
still being answered, takes uvicorn's path to the app unchanged.

The keep-alive timeout is lazy: uvicorn arms a new timer after every response
and cancels it when the next request arrives (with uvloop, a libuv timer made
and closed per request). Here a connection notes when it went idle, and one
timer per connection, when it fires, closes the connection if it has been
idle for the whole timeout and otherwise sets itself for the rest of it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from typing import Any, Final, Protocol, runtime_checkable

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string
from uvicorn.server import ServerState

# A direct route's answer: the status and a JSON body.
Reply = tuple[int, bytes]

_JSON_HEADERS: Final = [(b"content-type", b"application/json")]
_INTERNAL_ERROR: Final = (
    b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 21\r\nconnection: close\r\n\r\nInternal Server Error"
)


@runtime_checkable
class DirectRoute(Protocol):
    """A POST route with JSON replies that the protocol answers without an ASGI task."""

    @property
    def path(self) -> bytes:
        """The exact request target: with a query string, a request goes the ASGI way."""

    @property
    def max_body(self) -> int:
        """The largest body answered; a larger one, declared or streamed, gets `too_large`."""

    @property
    def too_large(self) -> Reply:
        """The answer to a body over `max_body`."""

    def respond(self, headers: Mapping[bytes, bytes], body: bytes) -> Reply | Awaitable[Reply]:
        """The reply to one whole request, or an awaitable of it; headers are lower-cased."""


def declared_too_large(content_length: bytes | None, limit: int) -> bool:
    """Whether a Content-Length header promises more than `limit` bytes."""
    # More digits than any real body has (or int() accepts) means too large.
    return (
        content_length is not None
        and content_length.isdigit()
        and (len(content_length) > 18 or int(content_length) > limit)
    )


class CoalescingTransport(asyncio.Transport):
    """Keeps writes until the loop's next pass, then hands them to the real transport at once.

    Everything else is the real transport's; closing sends what is kept first.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Keep `data`; the first write of a pass schedules the flush after it."""
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        """Keep every item, as `write` does."""
        for data in list_of_data:
            self.write(data)

    def flush(self) -> None:
        """Send what is kept, in one write; a closed connection drops it."""
        pending = self._pending
        if not pending:
            return
        self._pending = []
        if self._transport.is_closing():
            return
        self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        """Send what is kept, then close once it has gone out."""
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        """Drop what is kept and close at once."""
        self._pending = []
        self._transport.abort()

    def write_eof(self) -> None:
        """Send what is kept, then half-close."""
        self.flush()
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()


class _DirectRequest:
    """A request to the direct route whose body is being read."""

    __slots__ = ("answered", "chunks", "headers", "keep_alive", "size")

    def __init__(self, headers: dict[bytes, bytes], keep_alive: bool) -> None:
        self.headers = headers
        self.keep_alive = keep_alive
        self.chunks: list[bytes] = []
        self.size = 0
        # Answered before the body was all in (too large): the rest is read and dropped.
        self.answered = False


class _AwaitReply:
    """An ASGI app for one request: sends the direct route's reply once it is ready."""

    def __init__(self, pending: Awaitable[Reply]) -> None:
        self.pending = pending

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        status, body = await self.pending
        headers = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with coalesced writes, a direct route and a lazy keep-alive.

    Pass the class as uvicorn's `http` setting.
    """

    # When the last response finished with nothing else in flight; None while busy.
    _idle_since: float | None = None
    _idle_timer: asyncio.TimerHandle | None = None
    _request: _DirectRequest | None = None

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        route = getattr(self.app, "direct_route", None)
        # A concurrency limit or a root path changes what uvicorn does with every request.
        usable = self.limit_concurrency is None and not self.root_path
        self._route: DirectRoute | None = (
            route if usable and isinstance(route, DirectRoute) else None
        )

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._request = None
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def on_headers_complete(self) -> None:
        """Take a request for the direct route, when nothing before it is still unanswered."""
        route = self._route
        if (
            route is None
            or self.url != route.path
            or self.parser.get_method() != b"POST"
            or self.expect_100_continue
            or self.parser.should_upgrade()
            or (self.cycle is not None and not self.cycle.response_complete)
        ):
            super().on_headers_complete()
            return
        # Names come lower-cased; a repeated header counts by its last value.
        headers = dict(self.headers)
        keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
        request = self._request = _DirectRequest(headers, keep_alive)
        if declared_too_large(headers.get(b"content-length"), route.max_body):
            # Refused before the body is read.
            self._answer(request, route.too_large)

    def on_body(self, body: bytes) -> None:
        request = self._request
        if request is None:
            super().on_body(body)
            return
        if request.answered:
            return
        request.size += len(body)
        assert self._route is not None
        if request.size > self._route.max_body:
            request.chunks = []
            self._answer(request, self._route.too_large)
            return
        request.chunks.append(body)

    def on_message_complete(self) -> None:
        request = self._request
        if request is None:
            super().on_message_complete()
            return
        self._request = None
        if request.answered:
            return
        route = self._route
        assert route is not None
        chunks = request.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        try:
            reply = route.respond(request.headers, body)
        except Exception:
            self.logger.exception("Exception in the direct route")
            self.transport.write(_INTERNAL_ERROR)
            self.transport.close()
            return
        if isinstance(reply, tuple):
            self._answer(request, reply)
        else:
            self._answer_later(request, reply)

    def _answer(self, request: _DirectRequest, reply: Reply) -> None:
        """Write a reply as uvicorn would, with its default headers (the date)."""
        request.answered = True
        status, body = reply
        content = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            content += (name, b": ", value, b"\r\n")
        content += (
            b"content-type: application/json\r\ncontent-length: ",
            str(len(body)).encode(),
            b"\r\n" if request.keep_alive else b"\r\nconnection: close\r\n",
            b"\r\n",
            body,
        )
        self.transport.write(b"".join(content))
        if self.access_log:
            self._fill_scope()
            self.access_logger.info(
                '%s - "%s %s HTTP/%s" %d',
                get_client_addr(self.scope),
                "POST",
                get_path_with_query_string(self.scope),
                self.scope["http_version"],
                status,
            )
        if not request.keep_alive:
            self.transport.close()
        self.on_response_complete()

    def _answer_later(self, request: _DirectRequest, pending: Awaitable[Reply]) -> None:
        """Hand a reply still to come to a request cycle of uvicorn's, as if the app gave it."""
        self._fill_scope()
        cycle = RequestResponseCycle(
            scope=self.scope,
            transport=self.transport,
            flow=self.flow,
            logger=self.logger,
            access_logger=self.access_logger,
            access_log=self.access_log,
            default_headers=self.server_state.default_headers,
            message_event=asyncio.Event(),
            expect_100_continue=False,
            keep_alive=request.keep_alive,
            on_response=self.on_response_complete,
        )
        cycle.more_body = False
        self.cycle = cycle
        self._start_asgi_task(cycle, _AwaitReply(pending))

    def _fill_scope(self) -> None:
        # What uvicorn's on_headers_complete puts in the scope, for a direct request.
        assert self._route is not None
        http_version = self.parser.get_http_version()
        if http_version != "1.1":
            self.scope["http_version"] = http_version
        self.scope["method"] = "POST"
        self.scope["path"] = self._route.path.decode("ascii")
        self.scope["raw_path"] = self._route.path
        self.scope["query_string"] = b""

    def shutdown(self) -> None:
        """As uvicorn's, except that a direct request being read is answered, then closed."""
        request = self._request
        if request is not None and not request.answered:
            request.keep_alive = False
            return
        super().shutdown()

    def _unset_keepalive_if_required(self) -> None:
        # uvicorn calls this when data arrives: the connection is busy, not idle.
        self._idle_since = None

    def on_response_complete(self) -> None:
        """As uvicorn's, except that going idle is noted rather than timed by a new timer."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self._idle_since = self.loop.time()
        if self._idle_timer is None:
            self._idle_timer = self.loop.call_at(
                self._idle_since + self.timeout_keep_alive, self._check_idle
            )

    def _check_idle(self) -> None:
        self._idle_timer = None
        if self._idle_since is None or self.transport.is_closing():
            # Busy: the response in flight notes the next idle moment and sets a timer.
            return
        deadline = self._idle_since + self.timeout_keep_alive
        if self.loop.time() >= deadline:
            self.timeout_keep_alive_handler()
        else:
            self._idle_timer = self.loop.call_at(deadline, self._check_idle)


# How the front door runs uvicorn, beside the app, host, port and lifespan.
UVICORN_OPTIONS: Final[Mapping[str, Any]] = {
    "loop": "uvloop",
    "http": HttpProtocol,
    "ws": "none",
    "access_log": False,
    "log_config": None,
    "server_header": False,
    # Nothing reads the client's address, so uvicorn need not rewrite it per request.
    "proxy_headers": False,
}
