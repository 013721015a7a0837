"""Discord's limits shared through a real Redis: several clients on one token stay within them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from app.discord.rest import DiscordRest, RetryPolicy
from app.discord.shared_limits import SharedLimits
from tests.fake_discord import FakeDiscord

CHANNEL = "GET /channels/{channel_id}"
FAST_RETRY = RetryPolicy(backoff_base=0.01, backoff_cap=0.05)


@pytest.fixture
def fake() -> Iterator[FakeDiscord]:
    with FakeDiscord() as server:
        yield server


@pytest.fixture
async def redis_clients(redis_url: str) -> AsyncIterator[list[aioredis.Redis]]:
    # One connection each, as two worker processes would have.
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(2)]
    yield clients
    for client in clients:
        await client.aclose()


def rest(fake: FakeDiscord, redis: aioredis.Redis | None) -> DiscordRest:
    shared = SharedLimits(redis) if redis is not None else None
    return DiscordRest(fake.api_base, fake.token, retry=FAST_RETRY, shared_limits=shared)


async def fetch_all(clients: list[DiscordRest], channel_ids: list[str]) -> None:
    await asyncio.gather(
        *(clients[i % len(clients)].get_channel(c) for i, c in enumerate(channel_ids))
    )


@pytest.mark.parametrize("shared", [True, False])
async def test_two_clients_on_one_token_never_pass_50_a_second_together(
    fake: FakeDiscord, redis_clients: list[aioredis.Redis], shared: bool
) -> None:
    guild = fake.add_guild()
    channels = [fake.add_channel(guild["id"], f"c{i}")["id"] for i in range(120)]
    clients = [rest(fake, r if shared else None) for r in redis_clients]
    try:
        await fetch_all(clients, channels)
    finally:
        for client in clients:
            await client.aclose()
    assert [r.status for r in fake.requests] == [200] * 120
    if shared:
        assert fake.max_requests_per_second() <= 50
    else:
        # Each keeps its own cap of 50: together they exceed Discord's, which is why
        # workers share theirs.
        assert fake.max_requests_per_second() > 50


async def test_a_global_429_seen_by_one_client_holds_the_other_back(
    fake: FakeDiscord, redis_clients: list[aioredis.Redis]
) -> None:
    guild = fake.add_guild()
    channel = fake.add_channel(guild["id"], "general")
    fake.inject_429(CHANNEL, retry_after=0.5, is_global=True)
    one, two = (rest(fake, r) for r in redis_clients)
    try:
        await one.get_channel(channel["id"])  # the 429, waited out, then the answer
        blocked_at = time.monotonic()
        fake.inject_429(CHANNEL, retry_after=0.5, is_global=True)
        first = asyncio.create_task(one.get_channel(channel["id"]))
        await asyncio.sleep(0.1)
        # The other process never saw a 429 itself, yet waits for the block to pass.
        await two.get_guild(guild["id"])
        assert time.monotonic() - blocked_at >= 0.4
        # Interaction webhooks are not subject to the global limit, shared or not.
        fake.inject_429(CHANNEL, retry_after=0.5, is_global=True)
        await one.get_channel(channel["id"])
        started = time.monotonic()
        await two.edit_original_response(fake.application_id, "tok", {"content": "x"})
        assert time.monotonic() - started < 0.3
        await first
    finally:
        await one.aclose()
        await two.aclose()
    assert fake.violations == []
