"""A sync killed with SIGKILL at any point resumes with no gap and no duplicate (SQLite and
Postgres)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from app.discord.payloads import channel_from_discord
from app.discord.rest import DiscordRest
from app.store.db import Store
from app.sync.history import HistorySync
from tests.fake_discord import DEFAULT_TOKEN, FakeDiscord

pytestmark = pytest.mark.faults

ROOT = Path(__file__).resolve().parents[2]
ROUTE = "GET /channels/{channel_id}/messages"

CHILD = textwrap.dedent(
    """
    import asyncio, json, sys
    from app.discord.payloads import channel_from_discord
    from app.discord.rest import DiscordRest
    from app.store.db import Store
    from app.sync.history import HistorySync

    async def main(api, token, db, channel, bot):
        async with Store.from_url(db) as store, DiscordRest(api, token) as rest:
            await store.migrate()
            sync = HistorySync(rest, store, bot_user_id=bot, recheck_seconds=0)
            await sync.sync_channel(channel_from_discord(json.loads(channel)))

    asyncio.run(main(*sys.argv[1:]))
    """
)


def run_and_kill(args: list[str], fake: FakeDiscord, pages: int) -> None:
    """Start a sync in a child process and SIGKILL it once it has fetched `pages` pages."""
    seen = len(fake.requests_for(ROUTE))
    child = subprocess.Popen(args, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 60
    while (
        len(fake.requests_for(ROUTE)) < seen + pages
        and child.poll() is None
        and time.monotonic() < deadline
    ):
        time.sleep(0.005)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL, "the child finished before it was killed"


async def test_killed_sync_resumes_exactly(fake_discord: FakeDiscord, database_url: str) -> None:
    guild = fake_discord.add_guild()
    channel = fake_discord.add_channel(guild["id"], "general")
    fake_discord.add_messages(channel["id"], 1450)
    # Slow pages make the kill land mid-run rather than after the last page.
    fake_discord.inject_delay(0.05, ROUTE, times=1000)
    db = database_url
    snapshot = json.dumps(fake_discord.channels[channel["id"]])
    args = [sys.executable, "-c", CHILD, fake_discord.api_base, DEFAULT_TOKEN, db, snapshot]
    args.append(str(fake_discord.bot_user["id"]))
    for pages in (2, 5, 9):
        run_and_kill(args, fake_discord, pages)

    async with Store.from_url(db) as store:
        await store.migrate()
        partial = await store.count_live([channel["id"]])
        assert 0 < partial < 1450
        async with DiscordRest(fake_discord.api_base, DEFAULT_TOKEN) as rest:
            sync = HistorySync(
                rest, store, bot_user_id=str(fake_discord.bot_user["id"]), recheck_seconds=0
            )
            await sync.sync_channel(channel_from_discord(json.loads(snapshot)))
        rows = await store.database.fetch_all(
            "SELECT id FROM messages WHERE channel_id = :c ORDER BY id", {"c": channel["id"]}
        )
    stored = [int(r["id"]) for r in rows]
    assert stored == sorted(int(m["id"]) for m in fake_discord.messages[channel["id"]])
    assert len(stored) == len(set(stored)) == 1450
