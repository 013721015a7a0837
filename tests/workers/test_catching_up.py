"""Catching up and the message menu, end to end: signed interactions through the web app, the
real worker and models, the fake Discord.

/summarize's `since` and its whole-thread default, "Summarize from here" and "Find related"
(related messages with links, never the target itself, never a channel the member cannot
read), and a member who opted out: their messages are neither quoted, named nor found.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from app.interactions.commands import FIND_RELATED, SUMMARIZE_FROM_HERE
from app.retrieval.query import WHEN_FORMATS
from app.settings import Settings
from app.store.db import Store
from app.web.application import create_app
from tests.fake_discord import EVERYONE_PERMISSIONS, FakeDiscord
from tests.signing import Signer, encode
from tests.workers.conftest import delivered, drain, interaction, link
from tests.workers.test_answers import sync_again

pytestmark = pytest.mark.slow

EPHEMERAL = 1 << 6
RELATED = "Ops reminder: we rotate the staging database password every Tuesday morning."
HIDDEN = "Mods: the staging database password rotation schedule is kept in the vault."


async def through_the_door(settings: Settings, items: list[dict[str, Any]]) -> list[Any]:
    """Post each interaction, signed, to the web app on the test's Redis; return its answers."""
    signer = Signer()
    app = create_app(
        Settings.from_env(
            {"REDIS_URL": settings.redis_url or "", "DISCORD_PUBLIC_KEY": signer.public_key_hex}
        )
    )
    answers = []
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://web") as http,
    ):
        for item in items:
            body = encode(item)
            response = await http.post("/interactions", content=body, headers=signer.headers(body))
            assert response.status_code == 200, response.text
            answers.append(response.json())
    return answers


def menu(
    fake: FakeDiscord, name: str, target: dict[str, Any], guild_id: str, **extra: Any
) -> dict[str, Any]:
    """A message context-menu command on `target` (a fake Discord message), as Discord sends it."""
    payload = interaction(fake, name, guild_id=guild_id, channel_id=target["channel_id"], **extra)
    payload["data"] = {
        "id": "5500000000000000002",
        "name": name,
        "type": 3,
        "target_id": target["id"],
        "resolved": {"messages": {target["id"]: dict(target)}},
    }
    return payload


async def test_find_related_links_like_messages_but_not_the_target_or_a_hidden_channel(
    fake_discord: FakeDiscord, server: dict[str, Any], settings: Settings
) -> None:
    guild = server["guild"]["id"]
    ops = fake_discord.add_channel(guild, "ops")
    related = fake_discord.add_message(ops["id"], RELATED, author="oscar")
    hidden = fake_discord.add_message(server["mods"]["id"], HIDDEN, author="mod")
    await sync_again(fake_discord, server, settings)
    target = server["planted"]
    member = menu(fake_discord, FIND_RELATED, target, guild, permissions=EVERYONE_PERMISSIONS)
    moderator = menu(
        fake_discord,
        FIND_RELATED,
        target,
        guild,
        roles=[server["mod_role"]["id"]],
        permissions=EVERYONE_PERMISSIONS,
    )
    answers = await through_the_door(settings, [member, moderator])
    # Deferred privately: the answer may quote channels others cannot read.
    assert answers == [{"type": 5, "data": {"flags": EPHEMERAL}}] * 2
    results = await drain(settings)
    assert results[member["id"]] == results[moderator["id"]] == "ok"

    text = delivered(fake_discord, member)
    lines = text.splitlines()
    assert lines[0].startswith("**Messages like** “Heads up: the staging database password")
    assert link(server, related) in lines[1]
    assert "in #ops" in lines[1]
    # The target is the question, not an answer.
    assert link(server, target) not in text
    # Nothing of a channel this member cannot read.
    assert server["mods"]["id"] not in text
    assert "vault" not in text
    # A moderator may read #mods, and there it is: the gate is real.
    assert link(server, hidden) in delivered(fake_discord, moderator)
    shown = fake_discord.interaction(member["token"]).shown()
    assert all(m["allowed_mentions"] == {"parse": []} for m in shown)
    assert fake_discord.violations == []


async def test_summarize_from_here_summarises_the_target_and_what_follows(
    fake_discord: FakeDiscord, server: dict[str, Any], settings: Settings
) -> None:
    general = fake_discord.messages[server["general"]["id"]]
    target, last = general[-6], general[-1]
    here = menu(
        fake_discord,
        SUMMARIZE_FROM_HERE,
        target,
        server["guild"]["id"],
        permissions=EVERYONE_PERMISSIONS,
    )
    assert await through_the_door(settings, [here]) == [{"type": 5}]
    assert (await drain(settings))[here["id"]] == "ok"
    text = delivered(fake_discord, here)
    header, summary = text.split("\n", 1)
    assert header.startswith("**Summary of the 6 messages from this one on**")
    assert f"from [here]({link(server, target)}) to [here]({link(server, last)})" in header
    assert summary.strip()
    assert fake_discord.violations == []


async def test_summarize_since_takes_only_the_messages_since_then(
    fake_discord: FakeDiscord, server: dict[str, Any], settings: Settings
) -> None:
    general = server["general"]["id"]
    now = time.time()
    recent = [
        fake_discord.add_message(general, text, author="dana", at=now - hours * 3600)
        for hours, text in [
            (30, "older than a day: the venue for the offsite is booked"),
            (5, "the offsite moved to the lake house"),
            (4, "bring swimwear to the offsite"),
            (3, "the bus leaves at 8 from the office"),
            (2, "lunch at the offsite is vegetarian"),
        ]
    ]
    await sync_again(fake_discord, server, settings)
    ids = {"guild_id": server["guild"]["id"], "channel_id": general}
    since = interaction(fake_discord, "summarize", {"since": "24h"}, **ids)
    capped = interaction(fake_discord, "summarize", {"since": "24h", "count": 2}, **ids)
    bad = interaction(fake_discord, "summarize", {"since": "last tuesday"}, **ids)
    answers = await through_the_door(settings, [since, capped, bad])
    assert answers[:2] == [{"type": 5}, {"type": 5}]
    # A bad value is refused at the door, privately, with what is accepted.
    assert answers[2]["type"] == 4
    assert answers[2]["data"]["flags"] & EPHEMERAL
    assert answers[2]["data"]["content"] == f"`since` is not a time I can read ({WHEN_FORMATS})."

    results = await drain(settings)
    assert results[since["id"]] == results[capped["id"]] == "ok"
    assert bad["id"] not in results
    header = delivered(fake_discord, since).split("\n", 1)[0]
    assert header.startswith("**Summary of the 4 messages since ")
    assert f"from [here]({link(server, recent[1])}) to [here]({link(server, recent[-1])})" in header
    # `count` caps the range at its latest messages.
    header = delivered(fake_discord, capped).split("\n", 1)[0]
    assert header.startswith("**Summary of the last 2 messages since ")
    assert f"from [here]({link(server, recent[3])})" in header
    assert fake_discord.violations == []


async def test_summarize_in_a_thread_summarises_the_whole_thread(
    fake_discord: FakeDiscord, server: dict[str, Any], settings: Settings
) -> None:
    thread = fake_discord.add_thread(server["general"]["id"], "release planning")
    posts = fake_discord.add_messages(thread["id"], 52, text=lambda i: f"checklist item {i} done")
    await sync_again(fake_discord, server, settings)
    ids = {"guild_id": server["guild"]["id"], "channel_id": thread["id"]}
    whole = interaction(fake_discord, "summarize", **ids)
    counted = interaction(fake_discord, "summarize", {"count": 10}, **ids)
    assert await through_the_door(settings, [whole, counted]) == [{"type": 5}] * 2
    results = await drain(settings)
    assert results[whole["id"]] == results[counted["id"]] == "ok"
    # More than the 50 a channel gets by default: the whole thread, from its first message.
    header = delivered(fake_discord, whole).split("\n", 1)[0]
    assert header.startswith("**Summary of this thread's 52 messages**")
    assert f"from [here]({link(server, posts[0])})" in header
    # An explicit count still counts.
    header = delivered(fake_discord, counted).split("\n", 1)[0]
    assert header.startswith("**Summary of the last 10 messages**")
    assert fake_discord.violations == []


async def test_a_member_who_opted_out_is_neither_found_quoted_nor_named(
    fake_discord: FakeDiscord, server: dict[str, Any], settings: Settings
) -> None:
    guild = server["guild"]["id"]
    ops = fake_discord.add_channel(guild, "ops")
    related = fake_discord.add_message(ops["id"], RELATED, author="oscar")
    await sync_again(fake_discord, server, settings)
    olivia = server["planted"]["author"]["id"]
    async with Store.from_url(settings.database_url) as store:
        await store.opt_out(olivia)
    # Olivia's own message: Discord still shows its text, but it is not available.
    on_hers = menu(fake_discord, FIND_RELATED, server["planted"], guild)
    from_hers = menu(fake_discord, SUMMARIZE_FROM_HERE, server["planted"], guild)
    # Oscar's message is like Olivia's: related messages must leave hers out.
    on_his = menu(fake_discord, FIND_RELATED, related, guild, permissions=EVERYONE_PERMISSIONS)
    general = interaction(
        fake_discord, "summarize", {"count": 25}, guild_id=guild, channel_id=server["general"]["id"]
    )
    items = [on_hers, from_hers, on_his, general]
    await through_the_door(settings, items)
    results = await drain(settings)
    assert results[on_hers["id"]] == results[from_hers["id"]] == "unavailable"
    for item in (on_hers, from_hers):
        assert delivered(fake_discord, item) == "That message is not available to me."
    assert results[on_his["id"]] in ("ok", "no_match")
    assert results[general["id"]] == "ok"
    for item in items:
        text = delivered(fake_discord, item)
        assert link(server, server["planted"]) not in text
        assert "Olivia" not in text
        assert "09:00" not in text
    assert fake_discord.violations == []
