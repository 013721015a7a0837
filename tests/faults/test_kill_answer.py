"""A worker killed mid-answer leaves the user exactly one final answer after the retry."""

from __future__ import annotations

import os
from typing import Any

import pytest

from app.settings import Settings
from tests.fake_discord import EVERYONE_PERMISSIONS, FakeDiscord
from tests.faults.conftest import ROOT, kill_worker_when
from tests.workers import conftest as workers
from tests.workers.conftest import drain, enqueue, interaction, link, worker_env

pytestmark = pytest.mark.faults

# The worker tests' fixtures: a synced guild and the worker's settings.
guild = workers.guild
settings = workers.settings
server = workers.server

ORIGINAL = "PATCH /webhooks/{webhook_id}/{webhook_token}/messages/@original"


async def test_worker_killed_mid_answer_answers_exactly_once(
    fake_discord: FakeDiscord, server: dict[str, Any], settings: Settings
) -> None:
    ask = interaction(
        fake_discord,
        "ask",
        {"question": "When is the staging database password rotated?"},
        guild_id=server["guild"]["id"],
        channel_id=server["general"]["id"],
        permissions=EVERYONE_PERMISSIONS,
    )
    # The first edit of the answer hangs, so the kill lands while the answer is in flight.
    fake_discord.inject_delay(30.0, ORIGINAL, times=1)
    await enqueue(settings, [ask])
    env = {**os.environ, **worker_env(settings), "PYTHONPATH": str(ROOT)}
    # SIGKILL once the answer starts to show.
    kill_worker_when(env, lambda: bool(fake_discord.requests_for(ORIGINAL)))
    assert "**Sources**" not in str(fake_discord.interaction(ask["token"]).shown())

    # A new worker takes over the job that the dead one left in progress.
    results = await drain(settings)
    assert results[ask["id"]] in ("ok", "cut_short")
    delivered = fake_discord.interaction(ask["token"])
    finals = [m for m in delivered.shown() if "**Sources**" in m["content"]]
    assert len(finals) == 1
    assert link(server, server["planted"]) in finals[0]["content"]
    assert delivered.followups == []
