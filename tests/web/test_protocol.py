from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from typing import Any, TypeVar

import pytest
import uvicorn
import uvloop
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from app.cli.redis_server import free_port
from app.web.protocol import UVICORN_OPTIONS, CoalescingTransport, HttpProtocol, Reply
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


def run_on(loop_name: str, main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run `main()` to completion on the named event loop."""
    if loop_name == "uvloop":
        return uvloop.run(main())
    return asyncio.run(main())


def serve(loop_name: str, app: Any, scenario: Callable[[int], Awaitable[T]], **options: Any) -> T:
    """Run `scenario(port)` against `app` under uvicorn with the protocol under test."""

    async def main() -> T:
        async with serving(app, http=CountingProtocol, lifespan="off", **options) as port:
            CountingProtocol.sends.clear()
            return await scenario(port)

    return run_on(loop_name, main)


def serve_and(loop_name: str, scenario: Callable[[int], Awaitable[T]], keep_alive: float = 5) -> T:
    """Run `scenario(port)` against a small app under uvicorn with the protocol under test."""
    # A fraction of a second (uvicorn types it as int) keeps these tests short.
    return serve(loop_name, _app(), scenario, timeout_keep_alive=keep_alive)


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


class EchoRoute:
    """A direct route: echoes the body at once, or after a pause for a body starting "later"."""

    path = b"/direct"
    max_body = 64
    too_large = (413, b'{"error":"too large"}')

    def __init__(self) -> None:
        self.finished: list[bytes] = []

    def respond(self, headers: Mapping[bytes, bytes], body: bytes) -> Reply | Awaitable[Reply]:
        if body == b"boom":
            raise RuntimeError("a bug in the route")
        if body.startswith(b"later"):
            return self._later(body)
        return 200, b'{"direct":"' + body + b'","sig":"' + headers.get(b"x-sig", b"") + b'"}'

    async def _later(self, body: bytes) -> Reply:
        await asyncio.sleep(0.1)
        self.finished.append(body)
        return 202, b'{"later":"' + body + b'"}'


class DirectApp(Starlette):
    """The test app, with EchoRoute as its direct route; the ASGI /direct marks its answers."""

    def __init__(self) -> None:
        async def through_asgi(request: Request) -> Response:
            body = await request.body()
            return Response(b'{"asgi":"' + body + b'"}', media_type="application/json")

        super().__init__(routes=[*_app().routes, Route("/direct", through_asgi, methods=["POST"])])
        self.direct_route = EchoRoute()


def _post(body: bytes, *headers: bytes, target: bytes = b"/direct") -> bytes:
    head = b"POST " + target + b" HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n" % len(body)
    return head + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


def serve_direct(
    loop_name: str, scenario: Callable[[int, EchoRoute], Awaitable[T]], **options: Any
) -> T:
    """Run `scenario(port, route)` against DirectApp under uvicorn with the protocol under test."""
    app = DirectApp()
    return serve(loop_name, app, lambda port: scenario(port, app.direct_route), **options)


async def _responses(port: int, request: bytes, count: int) -> list[bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    try:
        return [await _response(reader) for _ in range(count)]
    finally:
        writer.close()
        await writer.wait_closed()


def _body(response: bytes) -> bytes:
    return response.partition(b"\r\n\r\n")[2]


def test_a_direct_reply_is_written_from_the_parser_in_one_write(loop_name: str) -> None:
    async def scenario(port: int, route: EchoRoute) -> list[bytes]:
        return await _responses(port, _post(b"hi", b"X-Sig: abc"), 1)

    [response] = serve_direct(loop_name, scenario)
    head = response.partition(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 200 ok\r\n")
    assert b"content-type: application/json" in head
    assert b"date: " in head  # uvicorn's default headers are kept
    assert b"connection: close" not in head
    assert _body(response) == b'{"direct":"hi","sig":"abc"}'
    assert CountingProtocol.sends == [response]


def test_a_reply_still_to_come_goes_out_when_ready(loop_name: str) -> None:
    async def scenario(port: int, route: EchoRoute) -> tuple[list[bytes], list[bytes]]:
        return await _responses(port, _post(b"later"), 1), route.finished

    [response], finished = serve_direct(loop_name, scenario)
    assert response.startswith(b"HTTP/1.1 202 Accepted\r\n")
    assert _body(response) == b'{"later":"later"}'
    assert finished == [b"later"]


def test_pipelined_direct_and_app_requests_are_answered_in_order(loop_name: str) -> None:
    # While the first reply is still to come, the direct requests behind it go the ASGI way.
    request = _post(b"later1") + _post(b"a") + GET_SMALL + _post(b"b")

    async def scenario(port: int, route: EchoRoute) -> list[bytes]:
        return await _responses(port, request, 4)

    bodies = [_body(r) for r in serve_direct(loop_name, scenario)]
    assert bodies == [b'{"later":"later1"}', b'{"asgi":"a"}', b'{"type":1}', b'{"asgi":"b"}']


def test_direct_requests_pipelined_behind_direct_replies_stay_direct(loop_name: str) -> None:
    request = _post(b"a") + _post(b"b") + _post(b"c") + GET_SMALL

    async def scenario(port: int, route: EchoRoute) -> list[bytes]:
        return await _responses(port, request, 4)

    bodies = [_body(r) for r in serve_direct(loop_name, scenario)]
    assert bodies == [
        b'{"direct":"a","sig":""}',
        b'{"direct":"b","sig":""}',
        b'{"direct":"c","sig":""}',
        b'{"type":1}',
    ]


@pytest.mark.parametrize(
    ("request_bytes", "expected"),
    [
        (_post(b"q", target=b"/direct?x=1"), b'{"asgi":"q"}'),
        (_post(b"e", b"Expect: 100-continue"), b'{"asgi":"e"}'),
        (b"PUT /direct HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", b"Method Not Allowed"),
    ],
)
def test_other_requests_to_the_path_go_to_the_app(
    loop_name: str, request_bytes: bytes, expected: bytes
) -> None:
    async def scenario(port: int, route: EchoRoute) -> bytes:
        return await _exchange(port, request_bytes, lambda data: data.endswith(expected))

    received = serve_direct(loop_name, scenario)
    assert received.endswith(expected)
    if b"Expect" in request_bytes:
        assert received.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK")


def test_a_declared_oversized_body_is_refused_before_it_is_sent(loop_name: str) -> None:
    async def scenario(port: int, route: EchoRoute) -> tuple[bytes, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /direct HTTP/1.1\r\nHost: x\r\nContent-Length: 65\r\n\r\n")
        refused = await _response(reader)
        # The body still comes, and is dropped; the connection serves the next request.
        writer.write(b"x" * 65 + _post(b"next"))
        following = await _response(reader)
        writer.close()
        return refused, following

    refused, following = serve_direct(loop_name, scenario)
    assert refused.startswith(b"HTTP/1.1 413 ")
    assert _body(refused) == b'{"error":"too large"}'
    assert _body(following) == b'{"direct":"next","sig":""}'


def test_a_streamed_body_is_refused_once_it_passes_the_cap(loop_name: str) -> None:
    chunked = b"20\r\n" + b"y" * 32 + b"\r\n"
    request = (
        b"POST /direct HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunked * 3
        + b"0\r\n\r\n"
        + _post(b"next")
    )

    async def scenario(port: int, route: EchoRoute) -> list[bytes]:
        return await _responses(port, request, 2)

    refused, following = serve_direct(loop_name, scenario)
    assert refused.startswith(b"HTTP/1.1 413 ")
    assert _body(following) == b'{"direct":"next","sig":""}'


@pytest.mark.parametrize(
    "request_bytes",
    [
        _post(b"bye", b"Connection: close"),
        _post(b"bye").replace(b"HTTP/1.1", b"HTTP/1.0", 1),
        _post(b"later-bye", b"Connection: close"),
    ],
)
def test_a_request_that_ends_the_connection_gets_its_reply_first(
    loop_name: str, request_bytes: bytes
) -> None:
    async def scenario(port: int, route: EchoRoute) -> bytes:
        # Read to the end of the stream: the server closes once the reply is out.
        return await _exchange(port, request_bytes, lambda data: False)

    received = serve_direct(loop_name, scenario)
    assert b"connection: close\r\n" in received.lower()
    assert _body(received) in (b'{"direct":"bye","sig":""}', b'{"later":"later-bye"}')


def test_a_failing_route_is_a_500_and_the_server_goes_on(loop_name: str) -> None:
    async def scenario(port: int, route: EchoRoute) -> tuple[bytes, list[bytes]]:
        failed = await _exchange(port, _post(b"boom"), lambda data: False)
        return failed, await _responses(port, _post(b"fine"), 1)

    failed, [fine] = serve_direct(loop_name, scenario)
    assert failed.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert failed.endswith(b"Internal Server Error")
    assert _body(fine) == b'{"direct":"fine","sig":""}'


def test_a_client_gone_before_a_later_reply_costs_nothing_else(loop_name: str) -> None:
    async def scenario(port: int, route: EchoRoute) -> tuple[list[bytes], list[bytes]]:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_post(b"later-gone"))
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        await asyncio.sleep(0.3)
        return route.finished, await _responses(port, _post(b"after"), 1)

    finished, [after] = serve_direct(loop_name, scenario)
    assert finished == [b"later-gone"]
    assert _body(after) == b'{"direct":"after","sig":""}'


def test_direct_replies_are_access_logged_as_uvicorn_logs_others(
    loop_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(port: int, route: EchoRoute) -> list[bytes]:
        return await _responses(port, _post(b"a") + _post(b"later"), 2)

    with caplog.at_level(logging.INFO, logger="uvicorn.access"):
        serve_direct(loop_name, scenario, access_log=True)
    lines = [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]
    assert [line.split(" - ", 1)[1] for line in lines] == [
        '"POST /direct HTTP/1.1" 200',
        '"POST /direct HTTP/1.1" 202',
    ]


def test_shutdown_answers_a_direct_request_being_read_then_closes(loop_name: str) -> None:
    async def main() -> bytes:
        port = free_port()
        options = {**UVICORN_OPTIONS, "loop": "none", "lifespan": "off"}
        config = uvicorn.Config(DirectApp(), host="127.0.0.1", port=port, **options)
        server = uvicorn.Server(config)
        serve = asyncio.create_task(server.serve())
        while not server.started:  # noqa: ASYNC110 - uvicorn offers a flag, not an event
            await asyncio.sleep(0.01)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        request = _post(b"half-sent")
        writer.write(request[:-4])
        await writer.drain()
        await asyncio.sleep(0.1)
        server.should_exit = True
        await asyncio.sleep(0.2)
        writer.write(request[-4:])
        received = await asyncio.wait_for(reader.read(), 5)  # to the end of the stream
        await asyncio.wait_for(serve, 5)
        writer.close()
        return received

    received = run_on(loop_name, main)
    assert b"connection: close\r\n" in received
    assert _body(received) == b'{"direct":"half-sent","sig":""}'


def test_a_wrapped_app_has_no_direct_route_and_is_served_as_asgi(loop_name: str) -> None:
    # With proxy headers on, uvicorn wraps the app: every request goes the ASGI way.
    async def scenario(port: int, route: EchoRoute) -> list[bytes]:
        return await _responses(port, _post(b"w"), 1)

    [response] = serve_direct(loop_name, scenario, proxy_headers=True)
    assert _body(response) == b'{"asgi":"w"}'
