"""/privacy end to end: signed at the front door, answered by the real worker (real models),
against the fake Discord. After an opt-out no command returns, quotes or names the member's
messages, a sync stores them without text, and after an opt-in and a sync they are back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.cli.foreground import sync
from app.interactions.commands import FIND_RELATED, SUMMARIZE_FROM_HERE
from app.settings import Settings
from app.state import State
from app.web.application import create_app
from tests.fake_discord import EPHEMERAL, EVERYONE_PERMISSIONS, FakeDiscord
from tests.signing import Signer, encode
from tests.workers.conftest import delivered, drain, interaction, link, worker_env

pytestmark = pytest.mark.slow

ALT = "a whiteboard with the ops rotation schedule"
LATER = "one more thing: the vpn certificate expires in march"
# What must never reach anyone while Olivia is opted out (her words, her name).
HERS = ("Olivia", "olivia", "Tuesday", "rotated", "09:00", "whiteboard", "certificate")


@pytest.fixture
def signer() -> Signer:
    return Signer()


@pytest.fixture
async def door(settings: Settings, signer: Signer) -> AsyncIterator[httpx.AsyncClient]:
    """The real front door (signature, option checks, the queue) on the worker's Redis."""
    web_settings = Settings.from_env(
        {
            **worker_env(settings),
            "DISCORD_PUBLIC_KEY": signer.public_key_hex,
            "RATE_LIMIT_PER_MINUTE": "1000",
        }
    )
    app = create_app(web_settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://bot") as client,
    ):
        yield client


async def answer(
    door: httpx.AsyncClient, signer: Signer, settings: Settings, *items: dict[str, Any]
) -> dict[str, Any]:
    """Post each interaction signed, as Discord would; then let the worker answer them all."""
    for item in items:
        body = encode(item)
        response = await door.post("/interactions", content=body, headers=signer.headers(body))
        assert response.status_code == 200, response.text
        assert response.json()["type"] == 5
    return await drain(settings)


def context_menu(
    fake: FakeDiscord, name: str, target: dict[str, Any], guild_id: str
) -> dict[str, Any]:
    """A message context-menu command run on `target`, with Discord's resolved copy of it."""
    item = interaction(
        fake,
        name,
        guild_id=guild_id,
        channel_id=target["channel_id"],
        permissions=EVERYONE_PERMISSIONS,
    )
    item["data"] = {
        "id": "5500000000000000002",
        "name": name,
        "type": 3,
        "target_id": target["id"],
        "resolved": {"messages": {target["id"]: target}},
    }
    return item


async def resync(settings: Settings, server: dict[str, Any]) -> None:
    guild = server["guild"]["id"]
    summary = await sync(
        Settings.from_env({**worker_env(settings), "SYNC_GUILD_IDS": guild}), [guild], []
    )
    assert not isinstance(summary, str)


async def stored(settings: Settings, author_id: str) -> tuple[list[tuple[str, bool]], int]:
    """Her rows (content, withheld), and how many of them have a vector in the index."""
    state = await State.open(settings, "test")
    try:
        rows = await state.store.database.fetch_all(
            "SELECT id, content, withheld FROM messages WHERE author_id = :a ORDER BY id",
            {"a": author_id},
        )
        vector = await asyncio.to_thread(state.index.encode, "staging database password")
        ids = [int(r["id"]) for r in rows]
        vectors = await asyncio.to_thread(state.index.similarities, vector, ids)
    finally:
        await state.close()
    return [(str(r["content"]), bool(r["withheld"])) for r in rows], len(vectors)


async def test_after_an_opt_out_no_command_returns_quotes_or_names_the_member(
    fake_discord: FakeDiscord,
    server: dict[str, Any],
    settings: Settings,
    door: httpx.AsyncClient,
    signer: Signer,
) -> None:
    guild, general = server["guild"]["id"], server["general"]["id"]
    planted = server["planted"]
    olivia = planted["author"]
    photo = fake_discord.add_message(
        general,
        "for the record",
        author=olivia,
        attachments=[
            {
                "id": "7700000000000000001",
                "filename": "board.png",
                "size": 1000,
                "url": "https://cdn.discordapp.com/attachments/1/2/board.png",
                "proxy_url": "https://media.discordapp.net/attachments/1/2/board.png",
                "content_type": "image/png",
                "description": ALT,
            }
        ],
    )
    reply = fake_discord.add_message(general, "good to know, thanks", reply_to=planted)
    await resync(settings, server)
    assert (await stored(settings, olivia["id"]))[1] == 2
    ids = {"guild_id": guild, "channel_id": general, "permissions": EVERYONE_PERMISSIONS}

    # She opts out: privately, and her vectors are gone before the answer.
    opt_out = interaction(fake_discord, "privacy", {"choice": "opt-out"}, **ids, user=olivia)
    body = encode(opt_out)
    deferred = await door.post("/interactions", content=body, headers=signer.headers(body))
    assert deferred.json() == {"type": 5, "data": {"flags": EPHEMERAL}}
    assert (await drain(settings))[opt_out["id"]] == "ok"
    assert "Done: you are opted out. Your 2 messages" in delivered(fake_discord, opt_out)
    assert await stored(settings, olivia["id"]) == ([("", True), ("", True)], 0)

    # Everything another member can ask, about her words, her photo or her by name.
    before_hers = fake_discord.messages[general][
        [m["id"] for m in fake_discord.messages[general]].index(planted["id"]) - 1
    ]
    asked = [
        interaction(fake_discord, "search", {"query": "staging database password"}, **ids),
        interaction(fake_discord, "search", {"query": "ops rotation schedule photo"}, **ids),
        interaction(fake_discord, "search", {"query": "staging", "author": olivia["id"]}, **ids),
        interaction(
            fake_discord,
            "ask",
            {"question": "When do we change the staging DB credentials?"},
            **ids,
        ),
        interaction(fake_discord, "summarize", {"count": 50}, **ids),
        interaction(fake_discord, "stats", {}, **ids),
        context_menu(fake_discord, FIND_RELATED, planted, guild),
        context_menu(fake_discord, FIND_RELATED, reply, guild),
        context_menu(fake_discord, SUMMARIZE_FROM_HERE, planted, guild),
        context_menu(fake_discord, SUMMARIZE_FROM_HERE, before_hers, guild),
    ]
    results = await answer(door, signer, settings, *asked)
    assert results[asked[2]["id"]] == "no_match"
    assert results[asked[6]["id"]] == results[asked[8]["id"]] == "unavailable"
    for item in asked:
        text = delivered(fake_discord, item)
        assert text, item["data"]["name"]
        for word in HERS:
            assert word not in text, (item["data"]["name"], word, text)
        assert link(server, planted) not in text and link(server, photo) not in text
    stats = fake_discord.interaction(asked[5]["token"]).shown()
    for attachment in stats[0].get("attachments", []):
        assert "Olivia" not in str(attachment.get("description"))
    assert fake_discord.violations == []

    # A sync reads her messages again, and a new one: all stored without text.
    fake_discord.add_message(general, LATER, author=olivia)
    await resync(settings, server)
    assert await stored(settings, olivia["id"]) == ([("", True)] * 3, 0)
    status = interaction(fake_discord, "privacy", {"choice": "status"}, **ids, user=olivia)
    await answer(door, signer, settings, status)
    assert delivered(fake_discord, status).startswith("You are opted out since ")

    # She opts back in: the text comes back from Discord at the next sync, not before.
    opt_in = interaction(fake_discord, "privacy", {"choice": "opt-in"}, **ids, user=olivia)
    await answer(door, signer, settings, opt_in)
    assert delivered(fake_discord, opt_in).startswith(
        "Done: you are opted in again. Your 3 messages in 1 channel come back"
    )
    assert (await stored(settings, olivia["id"]))[0] == [("", True)] * 3
    await resync(settings, server)
    rows, vectors = await stored(settings, olivia["id"])
    assert [c for c, _ in rows] == [planted["content"], "for the record", LATER]
    assert vectors == 3
    again = interaction(fake_discord, "search", {"query": "staging database password"}, **ids)
    by_name = interaction(
        fake_discord, "search", {"query": "ops rotation schedule", "author": olivia["id"]}, **ids
    )
    results = await answer(door, signer, settings, again, by_name)
    lines = delivered(fake_discord, again).splitlines()
    assert lines[1].startswith("**1.** Olivia") and link(server, planted) in lines[1]
    assert link(server, photo) in delivered(fake_discord, by_name)
    assert fake_discord.violations == []
