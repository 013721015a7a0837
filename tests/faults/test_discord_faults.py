"""The fake Discord answering with 429 bursts, 5xx, slow answers and dropped connections.

Answers still land whole before the token expires, the bot stays under 50
requests a second, and no request Discord accepted is ever sent again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from app.commands.delivery import (
    MESSAGE_LIMIT,
    PART_MISSING_NOTE,
    RedisFollowupLedger,
    Reply,
    split_message,
)
from app.discord.rest import DiscordRest, RetryPolicy
from app.jobs import INTERACTION_TOKEN_LIFETIME
from app.settings import Settings
from app.state import State
from app.store.models import IndexState
from app.sync.runner import SyncRunner
from tests.fake_discord import DEFAULT_TOKEN, FakeDiscord, RecordedRequest
from tests.faults.conftest import History, repeated_after_success, webhook_requests
from tests.workers.conftest import drain, enqueue, interaction, worker_settings

pytestmark = pytest.mark.faults

ORIGINAL = "PATCH /webhooks/{webhook_id}/{webhook_token}/messages/@original"
FOLLOWUP = "POST /webhooks/{webhook_id}/{webhook_token}"
MESSAGES = "GET /channels/{channel_id}/messages"
RETRY_AFTER = 0.2
# Quick retries keep the suite fast; the loop under test is the same.
FAST = RetryPolicy(backoff_base=0.05, backoff_cap=0.5)

Injector = Callable[[FakeDiscord], None]


def route_429s(fake: FakeDiscord) -> None:
    fake.inject_429(ORIGINAL, times=5, retry_after=RETRY_AFTER)
    fake.inject_429(FOLLOWUP, times=5, retry_after=RETRY_AFTER)


def global_429s(fake: FakeDiscord) -> None:
    fake.inject_429(times=6, retry_after=RETRY_AFTER, is_global=True)


def server_errors(fake: FakeDiscord) -> None:
    fake.inject_status(500, ORIGINAL, times=3)
    fake.inject_status(502, FOLLOWUP, times=2)
    fake.inject_status(503, times=2)


def slow(fake: FakeDiscord) -> None:
    fake.inject_delay(1.0, times=6)


def drops(fake: FakeDiscord) -> None:
    # A follow-up POST whose connection drops cannot be retried safely (see the test below);
    # edits are idempotent, so those are retried whether or not Discord applied them.
    fake.inject_drop(ORIGINAL, times=3)
    fake.inject_drop(ORIGINAL, times=3, after_handling=True)


def mix(fake: FakeDiscord) -> None:
    for inject in (route_429s, global_429s, server_errors, slow, drops):
        inject(fake)


FAULTS: dict[str, Injector] = {
    "route 429": route_429s,
    "global 429": global_429s,
    "5xx": server_errors,
    "slow": slow,
    "dropped": drops,
    "mix": mix,
}


def retry_after_ignored(fake: FakeDiscord, at_least: float = RETRY_AFTER) -> list[str]:
    """Requests sent again sooner than an injected 429 asked, on the same path."""
    requests = sorted(fake.requests, key=lambda r: r.time)
    early = []
    for index, request in enumerate(requests):
        if request.status != 429:
            continue
        later = [r for r in requests[index + 1 :] if r.path == request.path]
        if later and later[0].time - request.time < at_least - 0.01:
            early.append(f"{request.method} {request.path}: {later[0].time - request.time:.3f}s")
    return early


def long_answer(n: int) -> str:
    """An answer of about 5,000 characters (three messages), every paragraph its own."""
    return "\n\n".join(
        f"Answer {n}, paragraph {p}: " + " ".join(f"word{n}-{p}-{w}" for w in range(40))
        for p in range(10)
    )


@pytest.fixture
async def rest(fake_discord: FakeDiscord) -> AsyncIterator[DiscordRest]:
    async with DiscordRest(fake_discord.api_base, DEFAULT_TOKEN, retry=FAST) as client:
        yield client


@pytest.fixture
async def ledger(redis_url: str) -> AsyncIterator[RedisFollowupLedger]:
    client = aioredis.Redis.from_url(redis_url)
    yield RedisFollowupLedger(client)
    await client.aclose()


def token_of(n: int) -> str:
    """The interaction token of reply number n."""
    return f"fault-token-{n}-abcdefghijklmnopqrstuvwxyz"


def reply_for(rest: DiscordRest, ledger: RedisFollowupLedger, fake: FakeDiscord, n: int) -> Reply:
    """A public reply to interaction number n, delivered through `rest`."""
    return Reply(
        rest,
        ledger,
        interaction_id=str(7_000_000 + n),
        application_id=fake.application_id,
        token=token_of(n),
        ephemeral=False,
    )


def posts(requests: list[RecordedRequest]) -> list[RecordedRequest]:
    return [r for r in requests if r.method == "POST"]


@pytest.mark.parametrize("fault", FAULTS)
async def test_long_answers_land_whole_under_each_fault(
    fault: str, fake_discord: FakeDiscord, rest: DiscordRest, ledger: RedisFollowupLedger
) -> None:
    count = 40
    FAULTS[fault](fake_discord)
    replies = [reply_for(rest, ledger, fake_discord, n) for n in range(count)]
    started = time.monotonic()
    await asyncio.gather(*(r.send(long_answer(n)) for n, r in enumerate(replies)))
    elapsed = time.monotonic() - started

    assert fake_discord.faults == []  # every injected fault was met
    for n in range(count):
        parts = split_message(long_answer(n))
        assert len(parts) == 3
        token = token_of(n)
        delivered = fake_discord.interaction(token)
        assert [m["content"] for m in delivered.shown()] == parts
        accepted = [r for r in posts(webhook_requests(fake_discord, token)) if r.status == 200]
        assert len(accepted) == len(parts) - 1
    assert repeated_after_success(fake_discord) == []
    assert retry_after_ignored(fake_discord) == []
    assert fake_discord.max_requests_per_second() <= 50
    assert fake_discord.violations == []
    # Sixty messages, hundreds of times faster than an interaction token's life.
    assert elapsed < 60


async def test_a_followup_whose_answer_was_lost_is_never_posted_twice(
    fake_discord: FakeDiscord, rest: DiscordRest, ledger: RedisFollowupLedger
) -> None:
    """Discord created the follow-up but the connection died before its answer came back.

    Nothing tells the bot whether the POST took effect: Execute Webhook takes no
    nonce or idempotency key, an interaction's follow-ups cannot be listed, and an
    ephemeral one never shows in the channel's history. A second POST would show
    the part twice, so the first part keeps its place and says a part may be missing.
    """
    reply = reply_for(rest, ledger, fake_discord, 1)
    token = token_of(1)
    fake_discord.inject_drop(FOLLOWUP, after_handling=True)
    await reply.send(long_answer(1))
    parts = split_message(long_answer(1))
    shown = fake_discord.interaction(token)
    assert [m["content"] for m in shown.followups] == [parts[1]]
    assert shown.original is not None
    content = shown.original["content"]
    assert content.endswith(PART_MISSING_NOTE) and len(content) <= MESSAGE_LIMIT
    assert content.startswith(parts[0][:1500])
    sent = posts(webhook_requests(fake_discord, token))
    assert len(sent) == 1 and sent[0].handled_status == 200


async def test_a_followup_dropped_before_discord_saw_it_is_noted_not_duplicated(
    fake_discord: FakeDiscord, rest: DiscordRest, ledger: RedisFollowupLedger
) -> None:
    reply = reply_for(rest, ledger, fake_discord, 2)
    token = token_of(2)
    fake_discord.inject_drop(FOLLOWUP)
    await reply.send(long_answer(2))
    shown = fake_discord.interaction(token)
    assert shown.followups == []
    assert shown.original is not None
    assert shown.original["content"].endswith(PART_MISSING_NOTE)
    assert len(posts(webhook_requests(fake_discord, token))) == 1


async def test_worker_answers_land_under_mixed_faults_before_the_token_expires(
    fake_discord: FakeDiscord,
    history: History,
    tmp_path: Path,
    redis_url: str,
    model_cache_dir: Path,
) -> None:
    settings = worker_settings(tmp_path, fake_discord, redis_url, model_cache_dir)
    # Queued 14 minutes ago: a minute of the token's life is left for every retry.
    created = time.time() - (INTERACTION_TOKEN_LIFETIME - 60)
    ids = {"guild_id": history.guild["id"], "channel_id": history.channel["id"]}
    items = [interaction(fake_discord, "stats", **ids, created=created) for _ in range(60)]
    await enqueue(settings, items)
    fake_discord.inject_429(ORIGINAL, times=4, retry_after=RETRY_AFTER)
    fake_discord.inject_429(ORIGINAL, times=2, retry_after=RETRY_AFTER, is_global=True)
    fake_discord.inject_status(500, ORIGINAL, times=2)
    fake_discord.inject_delay(1.0, ORIGINAL, times=2)
    fake_discord.inject_drop(ORIGINAL, times=2)
    fake_discord.inject_drop(ORIGINAL, times=2, after_handling=True)

    results = await drain(settings)

    assert time.time() < created + INTERACTION_TOKEN_LIFETIME
    assert fake_discord.faults == []
    expected = history.stats_text()
    for item in items:
        assert results[item["id"]] == "ok"
        shown = fake_discord.interaction(item["token"]).shown()
        assert [m["content"] for m in shown] == [expected]
    assert repeated_after_success(fake_discord) == []
    assert retry_after_ignored(fake_discord) == []
    assert fake_discord.max_requests_per_second() <= 50
    assert fake_discord.violations == []


async def test_a_sync_under_429_bursts_and_5xx_stores_every_message_once(
    fake_discord: FakeDiscord, tmp_path: Path, model_cache_dir: Path
) -> None:
    guild = fake_discord.add_guild()
    general = fake_discord.add_channel(guild["id"], "general")
    thread = fake_discord.add_thread(general["id"], "a thread")
    fake_discord.add_messages(general["id"], 260)
    fake_discord.add_messages(thread["id"], 40)
    fake_discord.inject_429(MESSAGES, times=4, retry_after=RETRY_AFTER)
    fake_discord.inject_429(times=3, retry_after=RETRY_AFTER, is_global=True)
    fake_discord.inject_status(500, MESSAGES, times=2)
    fake_discord.inject_status(502, times=2)
    fake_discord.inject_drop(MESSAGES, times=2)
    fake_discord.inject_drop(MESSAGES, times=1, after_handling=True)
    settings = Settings.from_env(
        {"DATA_DIR": str(tmp_path / "data"), "MODEL_CACHE_DIR": str(model_cache_dir)}
    )
    state = await State.open(settings, "test")
    try:
        async with DiscordRest(fake_discord.api_base, DEFAULT_TOKEN, retry=FAST) as rest:
            runner = SyncRunner(rest, state.store, state.indexer, recheck_seconds=0)
            summary = await runner.sync_guilds([guild["id"]])
        expected = {
            int(m["id"]) for c in (general["id"], thread["id"]) for m in fake_discord.messages[c]
        }
        rows = await state.store.database.fetch_all("SELECT id FROM messages WHERE deleted = FALSE")
        stored = [int(r["id"]) for r in rows]
        assert sorted(stored) == sorted(expected)
        assert summary.new == len(expected) == 300
        assert await state.index.acount() == len(expected)
        assert await state.store.count_live(index_state=IndexState.PENDING) == 0
    finally:
        await state.close()
    assert fake_discord.faults == []
    assert repeated_after_success(fake_discord) == []
    assert retry_after_ignored(fake_discord) == []
    assert fake_discord.max_requests_per_second() <= 50
    assert fake_discord.violations == []
