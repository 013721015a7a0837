"""/stats end to end: signed at the front door, answered by the real worker with its chart."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from app.cli.foreground import sync
from app.commands.delivery import SUPPRESS_EMBEDS
from app.commands.stats import PERIODS
from app.interactions.commands import COMMANDS, STATS
from app.jobs import JOB_KEY_PREFIX
from app.settings import Settings
from app.web.application import create_app
from tests.fake_discord import EPHEMERAL, EVERYONE_PERMISSIONS, FakeDiscord
from tests.png import open_png
from tests.signing import Signer, encode
from tests.workers.conftest import drain, interaction, worker_env

pytestmark = pytest.mark.slow

DAY = 86_400.0
JANUARY = 1_704_067_200.0  # 2024-01-01, a Monday


@pytest.fixture
def signer() -> Signer:
    return Signer()


@pytest.fixture
async def door(
    settings: Settings, signer: Signer
) -> AsyncIterator[tuple[httpx.AsyncClient, Settings]]:
    """The real front door (signature checks, option checks, the queue) on the worker's Redis."""
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
        yield client, settings


@pytest.fixture
async def channel(
    fake_discord: FakeDiscord, guild: dict[str, Any], settings: Settings
) -> dict[str, Any]:
    """#general: five weeks of January 2024 by three members, a thread, and two recent days."""
    general = fake_discord.add_channel(guild["id"], "general")
    authors = ["alice"] * 14 + ["bob"] * 9 + ["carol"] * 7
    for i, author in enumerate(authors):
        fake_discord.add_message(
            general["id"], f"january note {i}", author=author, at=JANUARY + i * DAY
        )
    thread = fake_discord.add_thread(general["id"], "plans")
    fake_discord.add_messages(thread["id"], 5, authors=["dave"], start=JANUARY + 3 * DAY)
    recent = time.time() - 2 * DAY
    fake_discord.add_messages(general["id"], 4, authors=["erin"], start=recent, interval=600)
    summary = await sync(
        Settings.from_env({**worker_env(settings), "SYNC_GUILD_IDS": guild["id"]}),
        [guild["id"]],
        [],
    )
    assert not isinstance(summary, str) and summary.new == 39
    return general


async def post(client: httpx.AsyncClient, signer: Signer, item: dict[str, Any]) -> dict[str, Any]:
    body = encode(item)
    response = await client.post("/interactions", content=body, headers=signer.headers(body))
    assert response.status_code == 200
    answer: dict[str, Any] = response.json()
    return answer


async def test_stats_answers_with_its_numbers_and_a_chart(
    fake_discord: FakeDiscord,
    guild: dict[str, Any],
    channel: dict[str, Any],
    door: tuple[httpx.AsyncClient, Settings],
    signer: Signer,
) -> None:
    client, settings = door
    ids = {"guild_id": guild["id"], "channel_id": channel["id"]}
    every = interaction(
        fake_discord, "stats", {"period": "all"}, **ids, permissions=EVERYONE_PERMISSIONS
    )
    month = interaction(
        fake_discord, "stats", {"period": "30d"}, **ids, permissions=EVERYONE_PERMISSIONS
    )
    for item in (every, month):
        assert await post(client, signer, item) == {"type": 5, "data": {"flags": EPHEMERAL}}

    results = await drain(settings)

    assert results[every["id"]] == results[month["id"]] == "ok"
    assert fake_discord.violations == []
    delivered = fake_discord.interaction(every["token"])
    (shown,) = delivered.shown()
    lines = shown["content"].splitlines()
    assert lines[0].startswith("**39 messages** from 2024-01-01 to ")
    assert lines[1:4] == ["Top authors:", "1. Alice: 14", "2. Bob: 9"]
    assert "4. Dave: 5" in lines and "5. Erin: 4" in lines
    # The chart came with the answer, in one multipart edit that validated against the spec.
    (request,) = [r for r in fake_discord.requests if every["token"] in r.path]
    assert request.method == "PATCH" and request.template.endswith("/@original")
    assert request.headers["content-type"].startswith("multipart/form-data")
    assert request.body["allowed_mentions"] == {"parse": []}
    assert request.body["flags"] & SUPPRESS_EMBEDS
    (attachment,) = shown["attachments"]
    assert attachment["filename"] == "stats.png"
    assert attachment["content_type"] == "image/png"
    alt = attachment["description"]
    assert alt.startswith("Bar chart of #general · all time, messages per week from 2024-01-01")
    assert "39 messages" in alt and "Top authors by messages: Alice 14; Bob 9; Carol 7" in alt
    (upload,) = delivered.uploads
    assert len(upload.content) < 500_000
    assert open_png(upload.content).size == (1000, 562)

    # The last 30 days: only the recent messages, counted and charted.
    recent = fake_discord.interaction(month["token"])
    (shown,) = recent.shown()
    assert shown["content"].splitlines()[0].endswith("(period: the last 30 days).")
    assert shown["content"].splitlines()[0].startswith("**4 messages** from ")
    assert shown["content"].splitlines()[2:] == ["1. Erin: 4"]
    assert "30 days" in shown["attachments"][0]["description"]
    assert open_png(recent.uploads[0].content).format == "PNG"


async def test_an_unknown_period_is_refused_at_the_door(
    fake_discord: FakeDiscord,
    guild: dict[str, Any],
    door: tuple[httpx.AsyncClient, Settings],
    signer: Signer,
    redis_url: str,
) -> None:
    client, _ = door
    general = fake_discord.add_channel(guild["id"], "general")
    item = interaction(
        fake_discord, "stats", {"period": "5y"}, guild_id=guild["id"], channel_id=general["id"]
    )
    answer = await post(client, signer, item)
    assert answer["type"] == 4
    assert answer["data"]["content"].startswith("`period` must be one of 1y, 30d, all")
    # Nothing reached the queue: no job of any queue was created.
    redis = aioredis.Redis.from_url(redis_url)
    assert await redis.keys(JOB_KEY_PREFIX + "*") == []
    await redis.aclose()


def test_the_registered_choices_are_the_periods_the_worker_knows() -> None:
    stats = next(c for c in COMMANDS if c["name"] == STATS)
    (period,) = stats["options"]
    assert [c["value"] for c in period["choices"]] == list(PERIODS)
    assert all(len(c["name"]) <= 100 for c in period["choices"])
