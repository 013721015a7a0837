"""An app under a real uvicorn on 127.0.0.1, inside the test's own event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn

from app.http_protocol import HttpProtocol
from app.redis_server import free_port


@asynccontextmanager
async def serving(app: Any, **options: Any) -> AsyncIterator[int]:
    """Serve `app` (with the front door's protocol unless `http` says otherwise); the port."""
    port = free_port()
    settings: dict[str, Any] = {"loop": "none", "http": HttpProtocol, "ws": "none"}
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", **(settings | options)
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn offers a flag, not an event
        await asyncio.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        await task
