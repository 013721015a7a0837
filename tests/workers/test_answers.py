"""/ask, /search and /summarize end to end: real worker, real models, the fake Discord."""

from __future__ import annotations

from typing import Any

import pytest

from app.settings import Settings
from tests.fake_discord import EVERYONE_PERMISSIONS, FakeDiscord
from tests.workers.conftest import delivered, interaction, link, run_worker

pytestmark = pytest.mark.slow


async def test_a_planted_fact_asked_in_other_words_comes_back_with_its_link(
    fake_discord: FakeDiscord, server: dict[str, Any], settings: Settings
) -> None:
    ask = interaction(
        fake_discord,
        "ask",
        {"question": "When do we change the staging DB credentials?"},
        guild_id=server["guild"]["id"],
        channel_id=server["general"]["id"],
        permissions=EVERYONE_PERMISSIONS,
    )
    results = await run_worker(settings, [ask])
    assert results[ask["id"]] in ("ok", "cut_short")
    text = delivered(fake_discord, ask)
    answer, sources = text.split("**Sources**")
    assert answer.strip()
    assert link(server, server["planted"]) in sources
    shown = fake_discord.interaction(ask["token"])
    assert all(m["allowed_mentions"] == {"parse": []} for m in shown.shown() + shown.edits)
    assert fake_discord.violations == []


async def test_a_hidden_channel_never_reaches_a_member_without_access(
    fake_discord: FakeDiscord, server: dict[str, Any], settings: Settings
) -> None:
    ids = {"guild_id": server["guild"]["id"], "channel_id": server["general"]["id"]}
    question = {"question": "What is the launch codename?", "scope": "server"}
    member = interaction(fake_discord, "ask", question, **ids, permissions=EVERYONE_PERMISSIONS)
    search = interaction(
        fake_discord,
        "search",
        {"query": "launch codename"},
        **ids,
        permissions=EVERYONE_PERMISSIONS,
    )
    moderator = interaction(
        fake_discord,
        "ask",
        question,
        **ids,
        roles=[server["mod_role"]["id"]],
        permissions=EVERYONE_PERMISSIONS,
    )
    await run_worker(settings, [member, search, moderator])
    for item in (member, search):
        text = delivered(fake_discord, item)
        assert server["mods"]["id"] not in text
        assert "BLUEHERON" not in text
    # The same question from a member who may read #mods does find it: the gate is real.
    assert link(server, server["secret"]) in delivered(fake_discord, moderator)


async def test_search_lists_the_best_match_with_its_jump_link(
    fake_discord: FakeDiscord, server: dict[str, Any], settings: Settings
) -> None:
    search = interaction(
        fake_discord,
        "search",
        {"query": "staging database password rotation", "limit": 3},
        guild_id=server["guild"]["id"],
        channel_id=server["general"]["id"],
        permissions=EVERYONE_PERMISSIONS,
    )
    assert (await run_worker(settings, [search]))[search["id"]] == "ok"
    lines = delivered(fake_discord, search).splitlines()
    assert lines[1].startswith("**1.** Olivia")
    assert link(server, server["planted"]) in lines[1]
    assert len(lines) <= 4


async def test_summarize_summarises_the_recent_messages(
    fake_discord: FakeDiscord, server: dict[str, Any], settings: Settings
) -> None:
    summarize = interaction(
        fake_discord,
        "summarize",
        {"count": 30},
        guild_id=server["guild"]["id"],
        channel_id=server["general"]["id"],
        permissions=EVERYONE_PERMISSIONS,
    )
    assert (await run_worker(settings, [summarize]))[summarize["id"]] == "ok"
    text = delivered(fake_discord, summarize)
    assert text.startswith("**Summary of the last 30 messages**")
    assert len(text.split("\n", 1)[1].strip()) > 0
