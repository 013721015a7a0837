"""An app under a real uvicorn on 127.0.0.1: in the test's own event loop, or in a thread."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import uvicorn

from app.cli.redis_server import free_port
from app.web.protocol import UVICORN_OPTIONS


@asynccontextmanager
async def serving(app: Any, **options: Any) -> AsyncIterator[int]:
    """Serve `app` with the front door's uvicorn settings, bar those `options` name; the port."""
    port = free_port()
    settings: dict[str, Any] = {**UVICORN_OPTIONS, "loop": "none"}
    config = uvicorn.Config(app, host="127.0.0.1", port=port, **(settings | options))
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn offers a flag, not an event
        await asyncio.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        await task


@contextmanager
def serving_in_thread(app: Any) -> Iterator[str]:
    """Serve `app` as `python -m app web` does (uvloop, its protocol), lifespan included.

    uvicorn runs its own event loop in a thread, so synchronous tests can use an
    httpx.Client on the base URL this yields.
    """
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", **UVICORN_OPTIONS)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
