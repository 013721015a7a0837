"""The command-line commands: register-commands, import, reindex, ask, and state ownership."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli.foreground import ask, import_export, reindex
from app.errors import BotError, StateLockedError
from app.retrieval.search import Retriever
from app.settings import Settings
from app.state import State
from app.store.lock import StateLock
from tests.discord_spec import discord_spec
from tests.fake_discord import DEFAULT_TOKEN, FakeDiscord

ROOT = Path(__file__).resolve().parents[2]
EXPORT = ROOT / "tests" / "data" / "export_general.json"
CHANNEL = "912345678901234570"
QUESTION = "did anyone have trouble rebooting after the proxmox upgrade?"


@pytest.fixture
def settings(tmp_path: Path, model_cache_dir: Path) -> Settings:
    return Settings.from_env(
        {"DATA_DIR": str(tmp_path / "data"), "MODEL_CACHE_DIR": str(model_cache_dir)}
    )


async def search(settings: Settings, query: str) -> list[int]:
    state = await State.open(settings, "test")
    try:
        results = await Retriever(state.store, state.index).search(query, {CHANNEL}, 5)
        return [r.message.id for r in results]
    finally:
        await state.close()


def test_register_commands_puts_every_command(fake_discord: FakeDiscord) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DISCORD_APPLICATION_ID": fake_discord.application_id,
        "DISCORD_BOT_TOKEN": DEFAULT_TOKEN,
        "DISCORD_API_BASE": fake_discord.api_base,
    }
    done = subprocess.run(
        [sys.executable, "-m", "app", "register-commands", "--guild", "123456789012345678"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Registered 8 commands in guild 123456789012345678:")
    for name in ("ask", "search", "summarize", "stats", "sync", "privacy"):
        assert f"/{name}" in done.stdout
    for name in ("Find related", "Summarize from here"):
        assert f'"{name}" (message menu)' in done.stdout
    [put] = fake_discord.requests_for(
        "PUT /applications/{application_id}/guilds/{guild_id}/commands"
    )
    discord_spec().validate("PUT", put.path, put.body)
    assert fake_discord.violations == []
    assert DEFAULT_TOKEN not in done.stdout + done.stderr


def test_register_commands_without_credentials_says_what_to_set() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISCORD_")}
    done = subprocess.run(
        [sys.executable, "-m", "app", "register-commands"],
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "error: set DISCORD_APPLICATION_ID and DISCORD_BOT_TOKEN to register commands"
    )


@pytest.mark.slow
async def test_import_twice_changes_nothing_and_reindex_rebuilds_the_same(
    settings: Settings,
) -> None:
    first = await import_export(settings, EXPORT)
    assert first.startswith("imported #general: 32 new, 0 updated, 0 unchanged")
    second = await import_export(settings, EXPORT)
    assert second.startswith("imported #general: 0 new, 0 updated, 32 unchanged")
    before = await search(settings, "nvidia driver hung on reboot")
    assert before, "the imported messages are searchable"

    shutil.rmtree(settings.chroma_path)
    assert (await reindex(settings)).startswith("reindexed 32 messages; the index holds 32")
    assert await search(settings, "nvidia driver hung on reboot") == before


@pytest.mark.slow
async def test_ask_from_the_terminal_answers_with_sources(settings: Settings) -> None:
    await import_export(settings, EXPORT)
    answer = await ask(settings, QUESTION, CHANNEL, "channel", None)
    assert "**Sources**" in answer
    assert f"https://discord.com/channels/912345678901234567/{CHANNEL}/" in answer
    with pytest.raises(BotError, match="--user"):
        await ask(settings, QUESTION, CHANNEL, "server", None)


async def test_a_second_owner_of_the_state_is_refused(settings: Settings) -> None:
    with StateLock(settings.data_dir, "worker"), pytest.raises(StateLockedError) as refused:
        await import_export(settings, EXPORT)
    assert "worker" in str(refused.value)
