"""Leases in a real Redis: one holder at a time, renewed while held, freed by their holder."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from app.jobs import lease_key
from app.ops.leases import (
    MAINTENANCE,
    LeaseBusy,
    Leases,
    LocalLeases,
    RedisLeases,
    channel_lease,
    channel_sync,
    maintenance,
)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis.from_url(redis_url)
    yield redis
    await redis.aclose()


async def test_a_lease_has_one_holder_across_processes(client: aioredis.Redis) -> None:
    # Two RedisLeases stand for two workers on two machines.
    one, two = RedisLeases(client, "worker@a:1"), RedisLeases(client, "worker@b:2")
    async with one.hold("sync:channel:7") as held:
        assert held
        async with two.hold("sync:channel:7") as also:
            assert not also
        assert await two.holder("sync:channel:7") == "worker@a:1"
        assert await two.held("sync:channel:") == ["sync:channel:7"]
    assert await two.holder("sync:channel:7") is None
    async with two.hold("sync:channel:7") as held:
        assert held


async def test_a_waiting_holder_gets_the_lease_when_it_is_freed(client: aioredis.Redis) -> None:
    one, two = RedisLeases(client, "a"), RedisLeases(client, "b")
    order: list[str] = []

    async def first() -> None:
        async with one.hold("x") as held:
            assert held
            order.append("one")
            await asyncio.sleep(0.5)

    task = asyncio.create_task(first())
    await asyncio.sleep(0.1)
    async with two.hold("x", wait=5.0) as held:
        assert held
        order.append("two")
    await task
    assert order == ["one", "two"]


async def test_a_held_lease_is_renewed_and_a_dead_holders_lease_expires(
    client: aioredis.Redis,
) -> None:
    leases = RedisLeases(client, "a", ttl=0.6)
    async with leases.hold("long") as held:
        assert held
        # Three lives of the lease later it is still held: the holder renews it.
        await asyncio.sleep(1.8)
        assert await leases.holder("long") == "a"
    # A holder that died never freed its key; it lapses on its own.
    await client.set(lease_key("dead"), "gone#1", px=300)
    async with RedisLeases(client, "b").hold("dead", wait=2.0) as held:
        assert held


async def test_only_the_holder_frees_a_lease(client: aioredis.Redis) -> None:
    leases = RedisLeases(client, "a", ttl=0.3)
    async with leases.hold("x") as held:
        assert held
        # The lease lapsed (a paused holder) and someone else took it meanwhile.
        await client.set(lease_key("x"), "b#other", px=10_000)
    assert await leases.holder("x") == "b"


@pytest.mark.parametrize("kind", ["redis", "local"])
async def test_maintenance_waits_for_syncs_and_syncs_step_aside(
    client: aioredis.Redis, kind: str
) -> None:
    worker: Leases = RedisLeases(client, "w1") if kind == "redis" else LocalLeases()
    other: Leases = RedisLeases(client, "w2") if kind == "redis" else worker
    events: list[str] = []

    async def sync() -> None:
        async with channel_sync(worker, "5", wait=0) as held:
            assert held
            events.append("sync started")
            await asyncio.sleep(0.5)
            events.append("sync done")

    task = asyncio.create_task(sync())
    await asyncio.sleep(0.1)
    async with maintenance(other, "reindex", wait=5.0):
        events.append("maintenance")
        # No sync starts while maintenance runs: it steps aside and reports it could not.
        async with channel_sync(worker, "6", wait=0.3) as held:
            assert not held
    await task
    assert events == ["sync started", "sync done", "maintenance"]
    assert await other.holder(MAINTENANCE) is None
    assert await other.held("sync:") == []


async def test_maintenance_gives_up_naming_who_is_in_the_way(client: aioredis.Redis) -> None:
    one, two = RedisLeases(client, "worker@a:1"), RedisLeases(client, "worker@b:2")
    async with one.hold(MAINTENANCE):
        with pytest.raises(LeaseBusy, match="worker@a:1 is running maintenance"):
            async with maintenance(two, "back up", wait=0.2):
                pass
    async with one.hold(channel_lease("9")):
        with pytest.raises(LeaseBusy, match="1 channels are still syncing"):
            async with maintenance(two, "back up", wait=0.3):
                pass
    # Giving up frees the maintenance lease it had taken.
    assert await two.holder(MAINTENANCE) is None
