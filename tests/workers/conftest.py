"""Running the real worker (arq, burst mode) against a real Redis and the fake Discord."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from arq.connections import ArqRedis

from app.cli.foreground import sync
from app.discord.snowflakes import time_snowflake
from app.interactions.commands import queue_for
from app.jobs import HANDLE_INTERACTION
from app.settings import Settings
from tests.fake_discord import DEFAULT_TOKEN, FakeDiscord
from tests.signing import command
from workers.worker import build_worker


def worker_settings(
    tmp_path: Path, fake: FakeDiscord, redis_url: str, models: Path, **extra: str
) -> Settings:
    """Settings for a worker whose state lives under tmp_path and whose Discord is `fake`."""
    return Settings.from_env(
        {
            "DATA_DIR": str(tmp_path / "data"),
            "MODEL_CACHE_DIR": str(models),
            "DISCORD_APPLICATION_ID": fake.application_id,
            "DISCORD_BOT_TOKEN": DEFAULT_TOKEN,
            "DISCORD_API_BASE": fake.api_base,
            "REDIS_URL": redis_url,
            "SYNC_RECHECK_DAYS": "0",
            **extra,
        }
    )


_counter = iter(range(1, 1_000_000))


def interaction(
    fake: FakeDiscord,
    name: str,
    options: dict[str, Any] | None = None,
    *,
    guild_id: str,
    channel_id: str,
    user: dict[str, Any] | None = None,
    roles: list[str] | None = None,
    permissions: int = (1 << 10) | (1 << 16) | (1 << 5),
    created: float | None = None,
) -> dict[str, Any]:
    """A command interaction as Discord would queue it, created now unless told otherwise."""
    n = next(_counter)
    payload = command(
        name,
        options,
        interaction_id=str(time_snowflake(time.time() if created is None else created, n)),
        permissions=permissions,
    )
    payload.update(
        application_id=fake.application_id,
        token=f"interaction-token-{n}-abcdefghijklmnopqrstuvwxyz",
        guild_id=guild_id,
        channel_id=channel_id,
    )
    payload["member"].update(
        user=user or {"id": str(9_000_000 + n), "username": "asker", "discriminator": "0"},
        roles=roles or [],
    )
    return payload


async def enqueue(settings: Settings, items: list[dict[str, Any]]) -> None:
    """Queue interactions as `handle_interaction` jobs, as the front door does."""
    assert settings.redis_url is not None
    redis = ArqRedis.from_url(settings.redis_url)
    try:
        for item in items:
            # The front door's choice: commands that run the model wait in the answer queue.
            queue = queue_for(item["data"]["name"])
            job = await redis.enqueue_job(
                HANDLE_INTERACTION, item, _job_id=item["id"], _queue_name=queue
            )
            assert job is not None
    finally:
        await redis.aclose()


async def drain(settings: Settings, **ctx: Any) -> dict[str, Any]:
    """Run a burst worker until the queue is empty; return every job's result by job id."""
    assert settings.redis_url is not None
    redis = ArqRedis.from_url(settings.redis_url)
    try:
        worker = build_worker(
            settings, redis, burst=True, handle_signals=False, poll_delay=0, ctx=ctx
        )
        worker.cron_jobs = []
        try:
            await worker.async_run()
        finally:
            await worker.close()
        return {r.job_id: r.result for r in await redis.all_job_results()}
    finally:
        await redis.aclose()


async def run_worker(
    settings: Settings, interactions: list[dict[str, Any]], **ctx: Any
) -> dict[str, Any]:
    """Queue the interactions, run a burst worker until the queue is empty; return results."""
    await enqueue(settings, interactions)
    return await drain(settings, **ctx)


@pytest.fixture
def settings(
    tmp_path: Path, fake_discord: FakeDiscord, redis_url: str, model_cache_dir: Path
) -> Settings:
    """A worker's settings: state under tmp_path, Discord played by the fake."""
    return worker_settings(tmp_path, fake_discord, redis_url, model_cache_dir)


@pytest.fixture
def guild(fake_discord: FakeDiscord) -> dict[str, Any]:
    return fake_discord.add_guild("History Club")


VIEW, HISTORY = 1 << 10, 1 << 16
FILLER = [
    "anyone up for pizza friday?",
    "the CI pipeline is green again after the flaky test fix",
    "I pushed the new logo to the design folder",
    "reminder: the all-hands moved to 3pm",
    "does anybody know a good mechanical keyboard?",
    "the release notes for 2.4 are in the wiki now",
    "my cat knocked the router off the shelf again",
    "we should rename the staging cluster at some point",
    "thanks for the code review yesterday!",
    "I'll be out of office next Monday",
]
PLANTED = "Heads up: the staging database password is rotated every Tuesday at 09:00 by ops."
SECRET = "Mods only: the launch codename is BLUEHERON, do not share it."


@pytest.fixture
async def server(
    fake_discord: FakeDiscord, guild: dict[str, Any], settings: Settings
) -> dict[str, Any]:
    """A guild with a public channel and a mods-only one, synced into the worker's state."""
    mod_role = fake_discord.add_role(guild["id"], "mods", 0)
    general = fake_discord.add_channel(guild["id"], "general")
    mods = fake_discord.add_channel(
        guild["id"],
        "mods",
        overwrites=[
            {"id": guild["id"], "type": 0, "allow": 0, "deny": VIEW},
            {"id": mod_role["id"], "type": 0, "allow": VIEW | HISTORY, "deny": 0},
        ],
    )
    for i in range(36):
        fake_discord.add_message(general["id"], FILLER[i % len(FILLER)], author="alice")
        if i == 17:
            planted = fake_discord.add_message(general["id"], PLANTED, author="olivia")
    fake_discord.add_messages(mods["id"], 8, text=lambda i: f"moderation note {i}")
    secret = fake_discord.add_message(mods["id"], SECRET, author="mod")
    summary = await sync(
        Settings.from_env({**worker_env(settings), "SYNC_GUILD_IDS": guild["id"]}),
        [guild["id"]],
        [],
    )
    assert not isinstance(summary, str) and summary.new == 46
    return {
        "guild": guild,
        "general": general,
        "mods": mods,
        "mod_role": mod_role,
        "planted": planted,
        "secret": secret,
    }


def worker_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a worker process these settings."""
    return {
        "DATA_DIR": str(settings.data_dir),
        "MODEL_CACHE_DIR": str(settings.model_cache_dir),
        "DISCORD_API_BASE": settings.discord_api_base,
        "DISCORD_BOT_TOKEN": settings.discord_bot_token or "",
        "SYNC_RECHECK_DAYS": "0",
        "DISCORD_APPLICATION_ID": settings.discord_application_id or "",
        "REDIS_URL": settings.redis_url or "",
        # SQLite's default under DATA_DIR, or a Postgres database (tests/engines.py).
        "DATABASE_URL": settings.database_url,
        "CHROMA_URL": settings.chroma_url or "",
    }


def link(server: dict[str, Any], message: dict[str, Any]) -> str:
    """The jump link of a fake Discord message."""
    return f"https://discord.com/channels/{server['guild']['id']}/{message['channel_id']}/{message['id']}"


def delivered(fake: FakeDiscord, item: dict[str, Any]) -> str:
    """Everything the user was shown for an interaction, as one text."""
    return "\n".join(m["content"] for m in fake.interaction(item["token"]).shown())
