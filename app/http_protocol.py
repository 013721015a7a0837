"""uvicorn's httptools protocol, made cheaper per request in two ways; pass HttpProtocol as `http`.

Writes are coalesced: uvicorn writes a response's head and body separately,
and uvloop sends each write at once, so every answer costs two sends, and each
send wakes the client's side. Here a connection's writes are kept until the
current pass of the event loop is over and then leave in one send: a response
goes out whole, and the answers to the requests that arrived together leave
together. Under load that halves the sends and most of the cross-CPU wake-ups
behind them, which cost more than the rest of uvicorn's work on a virtual
machine; with a single request in flight it only waits for the end of the pass.

The keep-alive timeout is lazy: uvicorn arms a new timer after every response
and cancels it when the next request arrives (with uvloop, a libuv timer made
and closed per request). Here a connection notes when it went idle, and one
timer per connection, when it fires, closes the connection if it has been
idle for the whole timeout and otherwise sets itself for the rest of it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Final

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


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


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol writing through a CoalescingTransport, with a lazy keep-alive.

    Pass the class as uvicorn's `http` setting.
    """

    # When the last response finished with nothing else in flight; None while busy.
    _idle_since: float | None = None
    _idle_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

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
