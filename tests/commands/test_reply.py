"""Delivering answers into Discord: split, idempotent across retries, never pinging anyone."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from app.commands.delivery import (
    MESSAGE_LIMIT,
    SUPPRESS_EMBEDS,
    CollectedReply,
    RedisFollowupLedger,
    Reply,
)
from app.discord.files import File
from app.discord.rest import DiscordRest
from tests.fake_discord import DEFAULT_TOKEN, FakeDiscord
from tests.png import open_png, tiny_png

TOKEN = "interaction-token-for-reply-tests-0123456789"


def long_answer() -> str:
    paragraphs = [
        f"Point {i}: @everyone <@&1234> <@5678> " + "details about the release " * 12
        for i in range(14)
    ]
    code = "```python\n" + "\n".join(f"step_{i}()" for i in range(150)) + "\n```"
    return "\n\n".join(paragraphs[:7]) + "\n\n" + code + "\n\n" + "\n\n".join(paragraphs[7:])


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis.from_url(redis_url)
    yield redis
    await redis.aclose()


def make_reply(fake: FakeDiscord, rest: DiscordRest, client: aioredis.Redis) -> Reply:
    return Reply(
        rest,
        RedisFollowupLedger(client),
        interaction_id="1234567890123",
        application_id=fake.application_id,
        token=TOKEN,
        ephemeral=True,
        min_edit_interval=0.0,
    )


async def test_a_long_answer_arrives_whole_and_pings_no_one(
    fake_discord: FakeDiscord, client: aioredis.Redis
) -> None:
    text = long_answer()
    async with DiscordRest(fake_discord.api_base, DEFAULT_TOKEN) as rest:
        reply = make_reply(fake_discord, rest, client)
        await reply.progress("partial answer")
        await reply.send(text)
    delivered = fake_discord.interaction(TOKEN)
    shown = delivered.shown()
    assert len(shown) >= 3
    assert all(len(m["content"]) <= MESSAGE_LIMIT for m in shown)
    joined = " ".join(m["content"] for m in shown)
    assert re.sub(r"\s+|```(python)?", "", joined) == re.sub(r"\s+|```(python)?", "", text)
    for message in shown + delivered.edits:
        assert message["allowed_mentions"] == {"parse": []}
    # Follow-ups of a private answer are private too.
    assert all(m["flags"] & 64 for m in delivered.followups)
    assert fake_discord.violations == []


async def test_a_retried_delivery_edits_instead_of_repeating(
    fake_discord: FakeDiscord, client: aioredis.Redis
) -> None:
    text = long_answer()
    async with DiscordRest(fake_discord.api_base, DEFAULT_TOKEN) as rest:
        first = make_reply(fake_discord, rest, client)
        await first.send(text)
        count = len(fake_discord.interaction(TOKEN).followups)
        # The job is retried (say the worker died after sending): a fresh Reply, same interaction.
        second = make_reply(fake_discord, rest, client)
        await second.send(text.replace("details", "DETAILS"))
    delivered = fake_discord.interaction(TOKEN)
    assert len(delivered.followups) == count
    assert all("DETAILS" in m["content"] for m in delivered.shown() if "Point" in m["content"])


def chart() -> File:
    return File("stats.png", tiny_png(), "image/png", "Bar chart of messages per week.")


async def test_a_file_rides_on_the_final_edit_and_pings_no_one(
    fake_discord: FakeDiscord, client: aioredis.Redis
) -> None:
    async with DiscordRest(fake_discord.api_base, DEFAULT_TOKEN) as rest:
        await make_reply(fake_discord, rest, client).send_file("**12 messages** @everyone", chart())
    (request,) = fake_discord.requests
    assert request.method == "PATCH" and request.template.endswith("/@original")
    assert request.body["allowed_mentions"] == {"parse": []}
    assert request.body["flags"] & SUPPRESS_EMBEDS
    delivered = fake_discord.interaction(TOKEN)
    assert delivered.original is not None
    assert delivered.original["content"] == "**12 messages** @everyone"
    (attachment,) = delivered.original["attachments"]
    assert attachment["description"] == "Bar chart of messages per week."
    assert open_png(delivered.uploads[0].content).size == (3, 2)
    assert fake_discord.violations == []


async def test_a_retried_job_shows_the_file_once(
    fake_discord: FakeDiscord, client: aioredis.Redis
) -> None:
    async with DiscordRest(fake_discord.api_base, DEFAULT_TOKEN) as rest:
        await make_reply(fake_discord, rest, client).send_file("numbers", chart())
        await make_reply(fake_discord, rest, client).send_file("numbers", chart())
    delivered = fake_discord.interaction(TOKEN)
    assert [m["content"] for m in delivered.shown()] == ["numbers"]
    assert delivered.original is not None and len(delivered.original["attachments"]) == 1
    assert fake_discord.violations == []


async def test_a_long_answer_with_a_file_keeps_the_file_on_its_first_part(
    fake_discord: FakeDiscord, client: aioredis.Redis
) -> None:
    async with DiscordRest(fake_discord.api_base, DEFAULT_TOKEN) as rest:
        await make_reply(fake_discord, rest, client).send_file(long_answer(), chart())
    delivered = fake_discord.interaction(TOKEN)
    first, *rest_of_it = delivered.shown()
    assert len(first["attachments"]) == 1
    assert rest_of_it and all(m["attachments"] == [] for m in rest_of_it)
    assert fake_discord.violations == []


async def test_the_terminal_keeps_the_text_and_the_file() -> None:
    reply = CollectedReply()
    await reply.send_file("numbers", chart())
    assert reply.text == "numbers"
    assert [f.filename for f in reply.files] == ["stats.png"]
