"""FakeDiscord itself: paging as Discord pages, state helpers, intent switch, request checks."""

from __future__ import annotations

import httpx
import pytest

from app.discord.errors import DiscordNotFound, DiscordUnauthorized
from app.discord.rest import DiscordRest, RetryPolicy
from tests.fake_discord import (
    ANNOUNCEMENT,
    CATEGORY,
    HISTORY_START,
    VOICE,
    FakeDiscord,
    fake_discord_fixture,  # noqa: F401
)


def rest_for(fake: FakeDiscord) -> DiscordRest:
    return DiscordRest(fake.api_base, fake.token, retry=RetryPolicy(backoff_base=0.01))


def ids(messages: list[dict[str, object]]) -> list[str]:
    return [str(m["id"]) for m in messages]


async def test_message_pages_match_discord(fake_discord: FakeDiscord) -> None:
    channel = fake_discord.add_channel(fake_discord.add_guild()["id"], "general")
    history = fake_discord.add_messages(channel["id"], 250)
    assert ids(history) == sorted(ids(history), key=int)
    oldest_first = ids(history)
    async with rest_for(fake_discord) as rest:
        newest = await rest.get_channel_messages(channel["id"], limit=50)
        assert ids(newest) == oldest_first[::-1][:50]
        # Walking back with `before`.
        seen: list[str] = []
        before: str | None = None
        while page := await rest.get_channel_messages(channel["id"], before=before):
            seen += ids(page)
            before = page[-1]["id"]
        assert seen == oldest_first[::-1]
        # Walking forward with `after`: each page is newest first, just after the cursor.
        forward: list[str] = []
        after = "0"
        while page := await rest.get_channel_messages(channel["id"], after=after):
            assert ids(page) == sorted(ids(page), key=int, reverse=True)
            forward += ids(page)[::-1]
            after = page[0]["id"]
        assert forward == oldest_first
    assert fake_discord.violations == []


async def test_around_and_limits(fake_discord: FakeDiscord) -> None:
    channel = fake_discord.add_channel(fake_discord.add_guild()["id"], "general")
    history = ids(fake_discord.add_messages(channel["id"], 20))
    async with httpx.AsyncClient(base_url=fake_discord.api_base) as http:
        auth = {"Authorization": f"Bot {fake_discord.token}", "User-Agent": "DiscordBot (x, 1)"}
        url = f"/channels/{channel['id']}/messages"
        around = await http.get(url, params={"around": history[10], "limit": 5}, headers=auth)
        assert ids(around.json()) == history[8:13][::-1]
        default = await http.get(url, headers=auth)
        assert len(default.json()) == 20
        too_many = await http.get(url, params={"limit": 101}, headers=auth)
        assert too_many.status_code == 400
        assert too_many.json()["code"] == 50035
    # The out-of-range limit is also caught as a spec violation.
    assert len(fake_discord.violations) == 1
    assert "limit" in fake_discord.violations[0] or "101" in fake_discord.violations[0]


async def test_edit_delete_and_replies(fake_discord: FakeDiscord) -> None:
    channel = fake_discord.add_channel(fake_discord.add_guild()["id"], "general")
    first, second = fake_discord.add_messages(channel["id"], 2)
    reply = fake_discord.add_message(channel["id"], "agreed", author="dave", reply_to=first)
    fake_discord.edit_message(channel["id"], first["id"], "edited", at=HISTORY_START + 10_000)
    fake_discord.delete_message(channel["id"], second["id"])
    async with rest_for(fake_discord) as rest:
        page = await rest.get_channel_messages(channel["id"])
    assert ids(page) == [reply["id"], first["id"]]
    assert page[0]["type"] == 19
    assert page[0]["message_reference"]["message_id"] == first["id"]
    assert page[1]["content"] == "edited"
    assert page[1]["edited_timestamp"].startswith("2024-01-01T02:46:40")


async def test_without_message_content_intent_user_content_is_empty() -> None:
    with FakeDiscord(message_content_intent=False) as fake:
        channel = fake.add_channel(fake.add_guild()["id"], "general")
        fake.add_message(channel["id"], "from a person", author="alice")
        fake.add_message(channel["id"], "from a bot", author=fake.add_user("helper", bot=True))
        fake.add_message(channel["id"], "hey bot", author="bob", mentions=[fake.bot_user])
        async with rest_for(fake) as rest:
            page = await rest.get_channel_messages(channel["id"])
    assert [m["content"] for m in page] == ["hey bot", "from a bot", ""]


async def test_guild_structure_and_threads(fake_discord: FakeDiscord) -> None:
    fake = fake_discord
    guild = fake.add_guild()
    mods = fake.add_role(guild["id"], "mods", permissions=1 << 5)
    category = fake.add_channel(guild["id"], "Text", CATEGORY)
    news = fake.add_channel(guild["id"], "news", ANNOUNCEMENT, parent_id=category["id"])
    fake.add_channel(guild["id"], "Lounge", VOICE)
    secret = fake.add_channel(
        guild["id"],
        "mods-only",
        overwrites=[
            {"id": guild["id"], "type": 0, "deny": 1 << 10},
            {"id": mods["id"], "type": 0, "allow": 1 << 10},
        ],
    )
    active = fake.add_thread(news["id"], "live")
    for day in range(5):
        fake.add_thread(
            news["id"], f"old-{day}", archived=True, archive_timestamp=HISTORY_START + day * 86_400
        )
    fake.add_thread(news["id"], "hidden", private=True, archived=True)
    async with rest_for(fake) as rest:
        channels = await rest.get_guild_channels(guild["id"])
        assert len(channels) == 4
        assert all(c["type"] not in (11, 12) for c in channels)
        got_secret = next(c for c in channels if c["id"] == secret["id"])
        assert got_secret["permission_overwrites"][0] == {
            "id": guild["id"],
            "type": 0,
            "allow": "0",
            "deny": str(1 << 10),
        }
        roles = await rest.get_guild_roles(guild["id"])
        assert [(r["name"], r["permissions"]) for r in roles][1] == ("mods", "32")
        threads = await rest.get_active_threads(guild["id"])
        assert [t["id"] for t in threads["threads"]] == [active["id"]]
        names: list[str] = []
        before = None
        while True:
            page = await rest.get_public_archived_threads(news["id"], before=before, limit=2)
            names += [t["name"] for t in page["threads"]]
            if not page["has_more"]:
                break
            before = page["threads"][-1]["thread_metadata"]["archive_timestamp"]
        assert names == [f"old-{day}" for day in range(4, -1, -1)]
        private = await rest.get_private_archived_threads(news["id"])
        assert [t["name"] for t in private["threads"]] == ["hidden"]
    assert fake.violations == []
    assert fake.max_requests_per_second() == len(fake.requests)


async def test_every_bot_response_has_coherent_rate_limit_headers(
    fake_discord: FakeDiscord,
) -> None:
    guild = fake_discord.add_guild()
    async with httpx.AsyncClient(base_url=fake_discord.api_base) as http:
        auth = {"Authorization": f"Bot {fake_discord.token}", "User-Agent": "DiscordBot (x, 1)"}
        first = await http.get(f"/guilds/{guild['id']}", headers=auth)
        second = await http.get(f"/guilds/{guild['id']}", headers=auth)
        wrong = await http.get("/users/@me", headers={**auth, "Authorization": "Bot nope"})
        missing = await http.get("/users/@me", headers={"User-Agent": "curl"})
    h1, h2 = first.headers, second.headers
    assert h1["x-ratelimit-bucket"] == h2["x-ratelimit-bucket"]
    assert int(h1["x-ratelimit-remaining"]) - 1 == int(h2["x-ratelimit-remaining"])
    assert h1["x-ratelimit-reset"] == h2["x-ratelimit-reset"]
    assert 0 < float(h2["x-ratelimit-reset-after"]) <= float(h1["x-ratelimit-reset-after"])
    assert (wrong.status_code, missing.status_code) == (401, 401)
    assert len(fake_discord.violations) == 2  # no Authorization, and a curl User-Agent


async def test_interaction_deliveries_are_kept_per_token(fake_discord: FakeDiscord) -> None:
    async with DiscordRest(fake_discord.api_base, None) as rest:
        app_id = fake_discord.application_id
        await rest.edit_original_response(app_id, "t1", {"content": "thinking done"})
        await rest.edit_original_response(app_id, "t1", {"content": "final answer"})
        sent = await rest.create_followup(app_id, "t1", {"content": "part 2?", "flags": 64})
        await rest.edit_followup(app_id, "t1", sent["id"], {"content": "part 2", "flags": 64})
        with pytest.raises(DiscordNotFound):
            await rest.edit_followup(app_id, "t1", "123", {"content": "nothing"})
        await rest.edit_original_response(app_id, "t2", {"content": "other"})
        fake_discord.expire_interaction("t2")
        with pytest.raises(DiscordUnauthorized, match="interaction token was refused"):
            await rest.edit_original_response(app_id, "t2", {"content": "late"})
    shown = fake_discord.interaction("t1").shown()
    assert [m["content"] for m in shown] == ["final answer", "part 2"]
    assert shown[1]["flags"] == 64
    assert len(fake_discord.interaction("t1").edits) == 2
    assert [m["content"] for m in fake_discord.interaction("t2").shown()] == ["other"]
    assert fake_discord.violations == []
