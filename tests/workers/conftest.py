"""Running the real worker (arq, burst mode) against a real Redis and the fake Discord."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from arq.connections import ArqRedis

from app.jobs import HANDLE_INTERACTION, QUEUE_NAME, time_snowflake
from app.settings import Settings
from tests.fake_discord import DEFAULT_TOKEN, FakeDiscord
from workers.worker import build_worker


def worker_settings(tmp_path: Path, fake: FakeDiscord, redis_url: str, **extra: str) -> Settings:
    """Settings for a worker whose state lives under tmp_path and whose Discord is `fake`."""
    return Settings.from_env(
        {
            "DATA_DIR": str(tmp_path / "data"),
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
    user = user or {"id": str(9_000_000 + n), "username": "asker", "discriminator": "0"}
    return {
        "id": str(time_snowflake(time.time() if created is None else created, n)),
        "application_id": fake.application_id,
        "type": 2,
        "token": f"interaction-token-{n}-abcdefghijklmnopqrstuvwxyz",
        "version": 1,
        "guild_id": guild_id,
        "channel_id": channel_id,
        "data": {
            "id": "5500000000000000001",
            "name": name,
            "type": 1,
            "options": [
                {"name": k, "type": 4 if isinstance(v, int) else 3, "value": v}
                for k, v in (options or {}).items()
            ],
        },
        "member": {
            "user": user,
            "roles": roles or [],
            "permissions": str(permissions),
        },
    }


async def run_worker(
    settings: Settings, interactions: list[dict[str, Any]], **ctx: Any
) -> dict[str, Any]:
    """Queue the interactions, run a burst worker until the queue is empty; return results."""
    assert settings.redis_url is not None
    redis = ArqRedis.from_url(settings.redis_url)
    try:
        for item in interactions:
            job = await redis.enqueue_job(
                HANDLE_INTERACTION, item, _job_id=item["id"], _queue_name=QUEUE_NAME
            )
            assert job is not None
        worker = build_worker(
            settings, redis, burst=True, handle_signals=False, poll_delay=0, ctx=ctx
        )
        worker.cron_jobs = []
        try:
            await worker.async_run()
        finally:
            await worker.close()
        results = {r.job_id: r.result for r in await redis.all_job_results()}
    finally:
        await redis.aclose()
    return results


@pytest.fixture
def guild(fake_discord: FakeDiscord) -> dict[str, Any]:
    return fake_discord.add_guild("History Club")
