"""DiscordRest against FakeDiscord over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from app import PROJECT_URL, __version__
from app.discord.errors import (
    DiscordForbidden,
    DiscordHTTPError,
    DiscordNotFound,
    DiscordRateLimited,
    DiscordUnauthorized,
    DiscordUnavailable,
    InvalidRequestLimit,
    MissingBotToken,
)
from app.discord.ratelimit import InvalidRequestCounter
from app.discord.rest import DiscordRest, RetryPolicy
from tests.fake_discord import FORUM, FakeDiscord

MESSAGES = "GET /channels/{channel_id}/messages"
CHANNEL = "GET /channels/{channel_id}"
FAST_RETRY = RetryPolicy(backoff_base=0.01, backoff_cap=0.05)


@dataclass
class Recorder:
    done: list[tuple[str, int, float]] = field(default_factory=list)
    waits: list[tuple[str, float]] = field(default_factory=list)
    answered: asyncio.Event = field(default_factory=asyncio.Event)

    def request_done(self, route: str, status: int, seconds: float) -> None:
        self.done.append((route, status, seconds))
        self.answered.set()

    def rate_limit_wait(self, route: str, seconds: float) -> None:
        self.waits.append((route, seconds))


@pytest.fixture
def fake() -> Iterator[FakeDiscord]:
    with FakeDiscord() as server:
        yield server


def client(fake: FakeDiscord, **kwargs: object) -> DiscordRest:
    options: dict[str, object] = {"retry": FAST_RETRY, **kwargs}
    token = options.pop("token", fake.token)
    assert token is None or isinstance(token, str)
    return DiscordRest(fake.api_base, token, **options)  # type: ignore[arg-type]


def statuses(fake: FakeDiscord) -> list[int]:
    return [r.status for r in fake.requests]


async def test_every_call_sends_discord_headers_and_valid_requests(fake: FakeDiscord) -> None:
    guild = fake.add_guild()
    channel = fake.add_channel(guild["id"], "general")
    forum = fake.add_channel(guild["id"], "ideas", FORUM)
    fake.add_thread(channel["id"], "old", archived=True, archive_timestamp=1_704_100_000.0)
    fake.add_thread(forum["id"], "secret", private=True, archived=True)
    member = fake.add_member(guild["id"], fake.add_user("alice"))
    fake.add_messages(channel["id"], 3)
    async with client(fake) as rest:
        assert len(await rest.get_channel_messages(channel["id"], limit=2)) == 2
        assert await rest.get_channel_messages(channel["id"], after=0) != []
        assert (await rest.get_channel(channel["id"]))["name"] == "general"
        assert (await rest.get_guild(guild["id"]))["id"] == guild["id"]
        assert len(await rest.get_guild_channels(guild["id"])) == 2
        assert (await rest.get_guild_roles(guild["id"]))[0]["name"] == "@everyone"
        assert (await rest.get_active_threads(guild["id"]))["threads"] == []
        public = await rest.get_public_archived_threads(
            channel["id"], before="2024-02-01T00:00:00+00:00", limit=2
        )
        assert [t["name"] for t in public["threads"]] == ["old"]
        private = await rest.get_private_archived_threads(forum["id"])
        assert private["has_more"] is False
        assert len(private["threads"]) == 1
        got = await rest.get_guild_member(guild["id"], member["user"]["id"])
        assert got["user"]["username"] == "alice"
        assert (await rest.get_current_user())["bot"] is True
        body = {"content": "done", "allowed_mentions": {"parse": []}}
        await rest.edit_original_response(fake.application_id, "tok-1", body)
        await rest.create_followup(fake.application_id, "tok-1", {"content": "more"})
    assert fake.violations == []
    user_agent = f"DiscordBot ({PROJECT_URL}, {__version__})"
    for request in fake.requests:
        assert request.headers["user-agent"] == user_agent
        if request.template.startswith("/webhooks/"):
            assert "authorization" not in request.headers
        else:
            assert request.headers["authorization"] == f"Bot {fake.token}"
    assert [m["content"] for m in fake.interaction("tok-1").shown()] == ["done", "more"]


async def test_route_429_is_waited_out(fake: FakeDiscord) -> None:
    channel = fake.add_channel(fake.add_guild()["id"], "general")
    fake.inject_429(MESSAGES, retry_after=0.25)
    recorder = Recorder()
    async with client(fake, observer=recorder) as rest:
        await rest.get_channel_messages(channel["id"])
    first, second = fake.requests
    assert (first.status, second.status) == (429, 200)
    assert second.time - first.time >= 0.24
    assert [route for route, _ in recorder.waits] == ["/channels/{channel_id}/messages"]
    assert recorder.waits[0][1] >= 0.24
    assert [status for _, status, _ in recorder.done] == [429, 200]


async def test_global_429_blocks_every_bot_route_but_not_webhooks(fake: FakeDiscord) -> None:
    guild = fake.add_guild()
    channel = fake.add_channel(guild["id"], "general")
    fake.inject_429(CHANNEL, retry_after=0.3, is_global=True)
    recorder = Recorder()
    async with client(fake, observer=recorder) as rest:
        first = asyncio.create_task(rest.get_channel(channel["id"]))
        await recorder.answered.wait()
        blocked_at = time.monotonic()
        webhook = await rest.edit_original_response(fake.application_id, "tok", {"content": "x"})
        assert time.monotonic() - blocked_at < 0.2
        await rest.get_guild(guild["id"])
        assert time.monotonic() - blocked_at >= 0.25
        await first
    assert webhook["content"] == "x"
    assert statuses(fake) == [429, 200, 200, 200]
    assert fake.violations == []


async def test_server_errors_are_retried_with_a_warning(
    fake: FakeDiscord, caplog: pytest.LogCaptureFixture
) -> None:
    channel = fake.add_channel(fake.add_guild()["id"], "general")
    fake.inject_status(500, times=2)
    fake.inject_status(502)
    with caplog.at_level(logging.WARNING, logger="app.discord.rest"):
        async with client(fake) as rest:
            assert (await rest.get_channel(channel["id"]))["id"] == channel["id"]
    assert statuses(fake) == [500, 500, 502, 200]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3
    assert all("/channels/{channel_id}" in w and channel["id"] not in w for w in warnings)
    assert all(fake.token not in w for w in warnings)


async def test_gives_up_after_five_retries(fake: FakeDiscord) -> None:
    channel = fake.add_channel(fake.add_guild()["id"], "general")
    fake.inject_status(503, times=6)
    async with client(fake) as rest:
        with pytest.raises(DiscordUnavailable, match="after 5 retries"):
            await rest.get_channel(channel["id"])
    assert statuses(fake) == [503] * 6


async def test_five_failures_then_success(fake: FakeDiscord) -> None:
    channel = fake.add_channel(fake.add_guild()["id"], "general")
    fake.inject_status(500, times=5)
    async with client(fake) as rest:
        await rest.get_channel(channel["id"])
    assert statuses(fake) == [500] * 5 + [200]


async def test_dropped_connections_are_retried(fake: FakeDiscord) -> None:
    channel = fake.add_channel(fake.add_guild()["id"], "general")
    fake.add_messages(channel["id"], 3)
    fake.inject_drop(MESSAGES, times=2)
    async with client(fake) as rest:
        assert len(await rest.get_channel_messages(channel["id"])) == 3
    assert statuses(fake) == [0, 0, 200]


async def test_a_dropped_followup_is_not_sent_twice(fake: FakeDiscord) -> None:
    fake.inject_drop("POST /webhooks/{webhook_id}/{webhook_token}")
    async with client(fake) as rest:
        with pytest.raises(DiscordUnavailable):
            await rest.create_followup(fake.application_id, "tok", {"content": "once"})
    assert len(fake.requests) == 1


async def test_slow_answer_past_the_timeout_is_retried(fake: FakeDiscord) -> None:
    channel = fake.add_channel(fake.add_guild()["id"], "general")
    fake.inject_delay(0.5, CHANNEL)
    async with client(fake, timeout=0.2) as rest:
        assert (await rest.get_channel(channel["id"]))["id"] == channel["id"]
    assert len(fake.requests) == 2


async def test_wrong_token_stops_at_once_with_a_clear_error(fake: FakeDiscord) -> None:
    async with client(fake, token="not-the-token") as rest:
        with pytest.raises(DiscordUnauthorized, match="check DISCORD_BOT_TOKEN"):
            await rest.get_current_user()
    assert statuses(fake) == [401]


async def test_4xx_errors_map_to_their_classes_and_are_not_retried(fake: FakeDiscord) -> None:
    channel = fake.add_channel(fake.add_guild()["id"], "general")
    fake.forbid_channel(channel["id"])
    async with client(fake) as rest:
        with pytest.raises(DiscordForbidden) as forbidden:
            await rest.get_channel_messages(channel["id"])
        assert (forbidden.value.status, forbidden.value.code) == (403, 50001)
        with pytest.raises(DiscordNotFound) as missing:
            await rest.get_channel("123456789012345678")
        assert missing.value.code == 10003
        fake.inject_status(400, CHANNEL)
        with pytest.raises(DiscordHTTPError) as bad:
            await rest.get_channel("123456789012345678")
        assert bad.value.status == 400
        assert "GET /channels/{channel_id}: HTTP 400" in str(bad.value)
    assert statuses(fake) == [403, 404, 400]


async def test_invalid_responses_are_refused_before_the_ban(fake: FakeDiscord) -> None:
    counter = InvalidRequestCounter(limit=3)
    async with client(fake, token="wrong", invalid_requests=counter) as rest:
        for _ in range(3):
            with pytest.raises(DiscordUnauthorized):
                await rest.get_current_user()
        with pytest.raises(InvalidRequestLimit, match="Cloudflare"):
            await rest.get_current_user()
    assert len(fake.requests) == 3


async def test_without_a_token_only_interaction_webhooks_work(fake: FakeDiscord) -> None:
    async with client(fake, token=None) as rest:
        with pytest.raises(MissingBotToken, match="DISCORD_BOT_TOKEN"):
            await rest.get_current_user()
        reply = await rest.edit_original_response(fake.application_id, "tok", {"content": "hi"})
    assert reply["content"] == "hi"
    assert [r.template for r in fake.requests] == [
        "/webhooks/{webhook_id}/{webhook_token}/messages/@original"
    ]


async def test_a_rate_limit_too_long_is_reported_not_waited(fake: FakeDiscord) -> None:
    fake.inject_429("GET /users/@me", retry_after=30.0)
    policy = RetryPolicy(max_rate_limit_wait=1.0)
    started = time.monotonic()
    async with client(fake, retry=policy) as rest:
        with pytest.raises(DiscordRateLimited, match=r"retry after 30\.00 s"):
            await rest.get_current_user()
    assert time.monotonic() - started < 1.0


async def test_bucket_exhaustion_waits_for_the_reset() -> None:
    with FakeDiscord(bucket_limit=3, bucket_period=0.3) as fake:
        channel = fake.add_channel(fake.add_guild()["id"], "general")
        recorder = Recorder()
        started = time.monotonic()
        async with client(fake, observer=recorder) as rest:
            await rest.get_channel(channel["id"])
            await asyncio.gather(*(rest.get_channel(channel["id"]) for _ in range(6)))
        elapsed = time.monotonic() - started
    assert statuses(fake) == [200] * 7
    # 3 in the first window, 3 in the second, 1 in the third.
    assert elapsed >= 0.55
    assert recorder.waits


async def test_never_more_than_50_requests_per_second(fake: FakeDiscord) -> None:
    guild = fake.add_guild()
    channels = [fake.add_channel(guild["id"], f"c{i}") for i in range(120)]
    async with client(fake) as rest:
        await asyncio.gather(*(rest.get_channel(c["id"]) for c in channels))
    assert statuses(fake) == [200] * 120
    assert fake.max_requests_per_second() <= 50
    assert fake.violations == []


async def test_a_handed_in_client_is_left_open(fake: FakeDiscord) -> None:
    async with httpx.AsyncClient() as http:
        async with DiscordRest(fake.api_base, fake.token, client=http) as rest:
            await rest.get_current_user()
        assert not http.is_closed
        assert (await http.get(fake.url + "/api/v10/users/@me")).status_code == 401
