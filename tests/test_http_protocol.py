from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest
import uvloop
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from app.http_protocol import CoalescingTransport, HttpProtocol
from tests.serving import serving

T = TypeVar("T")


class RecordingTransport(asyncio.Transport):
    """The real transport's part in the unit tests: records what reaches it."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.events: list[str] = []
        self.closing = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))
        self.events.append("write")

    def close(self) -> None:
        self.closing = True
        self.events.append("close")

    def abort(self) -> None:
        self.closing = True
        self.events.append("abort")

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 9)}.get(name, default)


async def _next_pass() -> None:
    # The flush was scheduled by the first write; one pass of the loop runs it.
    await asyncio.sleep(0)


async def test_writes_in_one_pass_leave_as_one_write_after_it() -> None:
    real = RecordingTransport()
    transport = CoalescingTransport(real, asyncio.get_running_loop())
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    transport.write(b"")
    transport.writelines([b'{"type"', bytearray(b":1}")])
    assert real.writes == []
    assert transport.get_write_buffer_size() == 29
    await _next_pass()
    assert real.writes == [b'HTTP/1.1 200 OK\r\n\r\n{"type":1}']
    assert transport.get_write_buffer_size() == 0
    transport.write(b"next")
    await _next_pass()
    assert real.writes[1:] == [b"next"]


async def test_close_sends_what_is_kept_first_and_abort_drops_it() -> None:
    loop = asyncio.get_running_loop()
    real = RecordingTransport()
    transport = CoalescingTransport(real, loop)
    transport.write(b"last words")
    transport.close()
    assert real.writes == [b"last words"]
    assert real.events == ["write", "close"]
    await _next_pass()
    assert real.writes == [b"last words"]

    real = RecordingTransport()
    transport = CoalescingTransport(real, loop)
    transport.write(b"never sent")
    transport.abort()
    await _next_pass()
    assert real.events == ["abort"]


async def test_a_connection_closed_before_the_flush_gets_nothing() -> None:
    real = RecordingTransport()
    transport = CoalescingTransport(real, asyncio.get_running_loop())
    transport.write(b"too late")
    real.closing = True
    await _next_pass()
    assert real.writes == []
    assert transport.is_closing()
    assert transport.get_extra_info("peername") == ("127.0.0.1", 9)


class CountingTransport(asyncio.Transport):
    """Stands between the coalescing transport and the socket's, recording each write."""

    def __init__(self, transport: asyncio.Transport, sends: list[bytes]) -> None:
        super().__init__()
        self._transport = transport
        self._sends = sends

    def write(self, data: Any) -> None:
        self._sends.append(bytes(data))
        self._transport.write(data)

    def close(self) -> None:
        self._transport.close()

    def abort(self) -> None:
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size()


class CountingProtocol(HttpProtocol):
    """The protocol under test, with every write that reaches the socket recorded."""

    sends: list[bytes] = []

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CountingTransport(transport, CountingProtocol.sends))


def _app() -> Starlette:
    async def small(request: Request) -> Response:
        return Response(b'{"type":1}', media_type="application/json")

    async def large(request: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for index in range(64):
                yield bytes([65 + index % 26]) * 65536

        return StreamingResponse(chunks(), media_type="application/octet-stream")

    async def slow(request: Request) -> Response:
        await asyncio.sleep(0.8)
        return Response(b"late", media_type="text/plain")

    return Starlette(routes=[Route("/small", small), Route("/large", large), Route("/slow", slow)])


@pytest.fixture(params=["asyncio", "uvloop"])
def loop_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def serve_and(loop_name: str, scenario: Callable[[int], Awaitable[T]], keep_alive: float = 5) -> T:
    """Run `scenario(port)` against a small app under uvicorn with the protocol under test."""

    async def main() -> T:
        # A fraction of a second (uvicorn types it as int) keeps these tests short.
        async with serving(
            _app(), http=CountingProtocol, lifespan="off", timeout_keep_alive=keep_alive
        ) as port:
            CountingProtocol.sends.clear()
            return await scenario(port)

    if loop_name == "uvloop":
        return uvloop.run(main())
    return asyncio.run(main())


async def _exchange(port: int, request: bytes, done: Callable[[bytes], bool]) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    received = b""
    try:
        while not done(received):
            chunk = await asyncio.wait_for(reader.read(1 << 20), 10)
            if not chunk:
                break
            received += chunk
    finally:
        writer.close()
        await writer.wait_closed()
    return received


GET_SMALL = b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n"


def test_a_response_reaches_the_socket_in_one_write(loop_name: str) -> None:
    received = serve_and(
        loop_name,
        lambda port: _exchange(port, GET_SMALL, lambda data: data.endswith(b'{"type":1}')),
    )
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert CountingProtocol.sends == [received]


def test_pipelined_requests_are_answered_in_order(loop_name: str) -> None:
    request = GET_SMALL * 3
    received = serve_and(
        loop_name,
        lambda port: _exchange(port, request, lambda data: data.count(b'{"type":1}') == 3),
    )
    assert received.count(b"HTTP/1.1 200 OK\r\n") == 3
    assert b"".join(CountingProtocol.sends) == received


def test_connection_close_delivers_the_whole_response_before_closing(loop_name: str) -> None:
    request = b"GET /small HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    # Read to the end of the stream: the server closes once the response is out.
    received = serve_and(loop_name, lambda port: _exchange(port, request, lambda data: False))
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert received.endswith(b'{"type":1}')


def test_a_large_streamed_response_arrives_intact(loop_name: str) -> None:
    size = 64 * 65536

    def complete(data: bytes) -> bool:
        _, _, body = data.partition(b"\r\n\r\n")
        return body.endswith(b"0\r\n\r\n")

    request = b"GET /large HTTP/1.1\r\nHost: x\r\n\r\n"
    received = serve_and(loop_name, lambda port: _exchange(port, request, complete))
    head, _, chunked = received.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    body = b""
    while True:
        length_line, _, rest = chunked.partition(b"\r\n")
        length = int(length_line, 16)
        if length == 0:
            break
        body += rest[:length]
        chunked = rest[length + 2 :]
    assert len(body) == size
    assert body == b"".join(bytes([65 + i % 26]) * 65536 for i in range(64))


async def _response(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.startswith(b"content-length")
    )
    return head + await asyncio.wait_for(reader.readexactly(length), 5)


async def _idle_until_closed(port: int) -> tuple[bytes, float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(GET_SMALL)
    answer = await _response(reader)
    idle_from = time.monotonic()
    closed = await asyncio.wait_for(reader.read(1), 5)
    writer.close()
    return answer + closed, time.monotonic() - idle_from


def test_an_idle_connection_is_closed_after_the_keep_alive_timeout(loop_name: str) -> None:
    answer, idle = serve_and(loop_name, _idle_until_closed, keep_alive=0.3)
    assert answer.endswith(b'{"type":1}')  # and then the end of the stream
    assert 0.25 <= idle < 1.5


async def _busy_for(port: int, seconds: float) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answered = 0
    ends = time.monotonic() + seconds
    while time.monotonic() < ends:
        writer.write(GET_SMALL)
        assert (await _response(reader)).endswith(b'{"type":1}')
        answered += 1
        await asyncio.sleep(0.1)
    writer.close()
    return answered


def test_a_connection_in_use_outlives_many_keep_alive_timeouts(loop_name: str) -> None:
    # Idle gaps of 0.1 s under a 0.3 s timeout, for 1.5 s: the timer fires early, re-sets.
    answered = serve_and(loop_name, lambda port: _busy_for(port, 1.5), keep_alive=0.3)
    assert answered >= 10


def test_a_request_slower_than_the_timeout_is_still_answered(loop_name: str) -> None:
    async def scenario(port: int) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        # The first response arms the timer; the slow request is in flight when it fires.
        writer.write(GET_SMALL)
        await _response(reader)
        writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = await _response(reader)
        writer.close()
        return answer

    assert serve_and(loop_name, scenario, keep_alive=0.3).endswith(b"late")
