"""The peers the front door is measured against (see bench.frontdoor).

    python -m bench.peers hikari|hikari-arq|flask|floor|floor-asgi

Each serves Discord interactions on 127.0.0.1:$PORT, verifies every request
against $DISCORD_PUBLIC_KEY, answers a PING itself and a command with the
deferred response (type 5):

- `hikari`: hikari's `RESTBot`, its own aiohttp interaction server on POST `/`,
  set up as hikari's README advises for production (uvloop, orjson, `python -O`;
  the launcher passes `-O`). It never calls Discord: with the public key given
  it does not fetch the application, and the PyPI update check is turned off.
  Logging is at WARNING, so aiohttp writes no access-log line per request.
- `hikari-arq`: the same, and the command listener first enqueues a
  `handle_interaction` job on arq's queue with the interaction id as job id,
  through one arq pool opened when the bot starts ($REDIS_URL).
- `flask`: a minimal Flask app on POST `/interactions` checking the raw body
  with `discord_interactions.verify_key` (401 when it fails), served by
  waitress with its defaults except `threads`.

- `floor`: not a peer but the least an endpoint on the required stack can do:
  uvicorn set up as ours is (httptools, uvloop, app.web.protocol's coalesced
  writes and direct route), answering from the protocol as ours does, that
  checks the signature with pynacl, reads the type with orjson and answers.
  No replay check, no rate limit, no metrics, no Redis: what it serves per
  second bounds what ours can.
- `floor-asgi`: the same check as a bare ASGI function under the same uvicorn,
  which takes every request through uvicorn's request cycle and a task: what
  answering from the protocol saves.

hikari answers a bad signature with 400 rather than the 401 Discord documents;
that is hikari's own behaviour and is left as it is.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Mapping
from typing import Any

import hikari
from flask import Flask, Response, jsonify, request
from starlette.types import Receive, Scope, Send

from app.jobs import HANDLE_INTERACTION, QUEUE_NAME

HOST = "127.0.0.1"
# The server is pinned to one CPU and the handler is CPU-bound, so more threads
# only contend for the GIL; a few cover the moments a thread waits on a socket.
WAITRESS_THREADS = 4
PEERS = ("hikari", "hikari-arq", "flask", "floor", "floor-asgi")


def job_payload(interaction: hikari.CommandInteraction) -> dict[str, Any]:
    """What a hikari bot hands its worker: the fields needed to answer the command later."""
    return {
        "id": str(interaction.id),
        "application_id": str(interaction.application_id),
        "type": int(interaction.type),
        "token": interaction.token,
        "guild_id": str(interaction.guild_id) if interaction.guild_id else None,
        "channel_id": str(interaction.channel.id),
        "user_id": str(interaction.user.id),
        "locale": str(interaction.locale),
        "data": {
            "id": str(interaction.command_id),
            "name": interaction.command_name,
            "options": [
                {"name": option.name, "type": int(option.type), "value": option.value}
                for option in interaction.options
            ],
        },
    }


async def defer(interaction: hikari.CommandInteraction) -> hikari.api.InteractionDeferredBuilder:
    """Answer a command with the deferred response."""
    return interaction.build_deferred_response()


class QueueingListener:
    """Enqueues each command as an arq job, then defers; owns one arq pool."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.pool: Any = None

    async def open(self, _bot: hikari.RESTBot) -> None:
        """Open the arq pool (a RESTBot startup callback)."""
        from arq import create_pool
        from arq.connections import RedisSettings

        self.pool = await create_pool(RedisSettings.from_dsn(self.redis_url))

    async def close(self, _bot: hikari.RESTBot) -> None:
        """Close the pool this listener opened (a RESTBot shutdown callback)."""
        if self.pool is not None:
            await self.pool.aclose()
            self.pool = None

    async def __call__(
        self, interaction: hikari.CommandInteraction
    ) -> hikari.api.InteractionDeferredBuilder:
        await self.pool.enqueue_job(
            HANDLE_INTERACTION,
            job_payload(interaction),
            _job_id=str(interaction.id),
            _queue_name=QUEUE_NAME,
        )
        return interaction.build_deferred_response()


def hikari_bot(public_key: str, redis_url: str | None) -> hikari.RESTBot:
    """A RESTBot that defers every command, enqueuing it first when given a Redis URL."""
    bot = hikari.RESTBot(
        # Never sent: the bot makes no REST call in this set-up.
        "unused",
        "Bot",
        public_key,
        banner=None,
        logs="WARNING",
    )
    if redis_url is None:
        bot.set_listener(hikari.CommandInteraction, defer)
    else:
        listener = QueueingListener(redis_url)
        bot.add_startup_callback(listener.open)
        bot.add_shutdown_callback(listener.close)
        bot.set_listener(hikari.CommandInteraction, listener)
    return bot


def serve_hikari(env: Mapping[str, str], *, queue: bool) -> None:
    """Run the hikari peer until SIGINT or SIGTERM."""
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    bot = hikari_bot(env["DISCORD_PUBLIC_KEY"], env["REDIS_URL"] if queue else None)
    bot.run(host=HOST, port=int(env["PORT"]), check_for_updates=False, shutdown_timeout=1.0)


def flask_app(public_key: str) -> Flask:
    """The minimal Flask interactions endpoint of discord-interactions' README."""
    from discord_interactions import (  # type: ignore[import-untyped,unused-ignore]
        InteractionResponseType,
        InteractionType,
        verify_key,
    )

    app = Flask(__name__)

    @app.post("/interactions")
    def interactions() -> Response | tuple[str, int]:
        signature = request.headers.get("X-Signature-Ed25519")
        timestamp = request.headers.get("X-Signature-Timestamp")
        if (
            signature is None
            or timestamp is None
            or not verify_key(request.get_data(), signature, timestamp, public_key)
        ):
            return "Bad request signature", 401
        if request.json is not None and request.json.get("type") == InteractionType.PING:
            return jsonify(type=InteractionResponseType.PONG)
        return jsonify(type=InteractionResponseType.DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE)

    return app


def serve_flask(env: Mapping[str, str]) -> None:
    """Serve the Flask peer under waitress until SIGINT or SIGTERM."""
    from waitress import serve  # type: ignore[import-untyped,unused-ignore]

    serve(
        flask_app(env["DISCORD_PUBLIC_KEY"]),
        host=HOST,
        port=int(env["PORT"]),
        threads=WAITRESS_THREADS,
    )


class FloorRoute:
    """Verify, read the type, answer: the front door with nothing of ours in it."""

    path = b"/interactions"
    max_body = 1 << 20
    too_large = (413, b'{"error":"request body is larger than 1 MiB"}')

    def __init__(self, public_key: str) -> None:
        from nacl.signing import VerifyKey

        self.key = VerifyKey(bytes.fromhex(public_key))

    def respond(self, headers: Mapping[bytes, bytes], body: bytes) -> tuple[int, bytes]:
        """The answer to one whole request."""
        import orjson
        from nacl.exceptions import BadSignatureError

        try:
            signature = bytes.fromhex(headers[b"x-signature-ed25519"].decode())
            self.key.verify(headers[b"x-signature-timestamp"] + body, signature)
        except (KeyError, ValueError, BadSignatureError):
            return 401, b'{"error":"invalid request signature"}'
        kind = orjson.loads(body).get("type")
        return 200, b'{"type":1}' if kind == 1 else b'{"type":5}'


class FloorApp:
    """The floor as an ASGI app; with `direct`, also its protocol's direct route."""

    def __init__(self, public_key: str, direct: bool) -> None:
        self.route = FloorRoute(public_key)
        if direct:
            self.direct_route = self.route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        body = message.get("body", b"")
        while message.get("more_body", False):
            message = await receive()
            body += message.get("body", b"")
        status, reply = self.route.respond(dict(scope["headers"]), body)
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(reply))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": reply})


def serve_floor(env: Mapping[str, str], direct: bool) -> None:
    """Serve the floor under uvicorn, configured as `python -m app web` is."""
    import uvicorn

    from app.web.protocol import UVICORN_OPTIONS

    uvicorn.run(
        FloorApp(env["DISCORD_PUBLIC_KEY"], direct),
        host=HOST,
        port=int(env["PORT"]),
        lifespan="off",
        **UVICORN_OPTIONS,
    )


def main(argv: list[str]) -> None:
    """Start the peer named on the command line."""
    name = argv[0] if len(argv) == 1 else ""
    if name not in PEERS:
        raise SystemExit(f"usage: python -m bench.peers {'|'.join(PEERS)}")
    if name == "flask":
        serve_flask(os.environ)
    elif name.startswith("floor"):
        serve_floor(os.environ, direct=name == "floor")
    else:
        serve_hikari(os.environ, queue=name == "hikari-arq")


if __name__ == "__main__":
    main(sys.argv[1:])
