"""Parsing the sample DiscordChatExporter export, and importing it through the store."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.discord.exporter import parse_export
from app.discord.snowflakes import snowflake_time
from app.errors import BotError
from app.store.db import Store
from app.store.models import GUILD_TEXT, MESSAGE_REPLY, PUBLIC_THREAD, IndexState

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "export_general.json"
CHANNEL = "912345678901234570"


def test_sample_header_and_channel() -> None:
    export = parse_export(SAMPLE)
    assert export.guild_id == "912345678901234567"
    channel = export.channel
    assert (channel.id, channel.name, channel.type) == (CHANNEL, "general", GUILD_TEXT)
    assert channel.guild_id == export.guild_id
    assert channel.parent_id == "912345678901234568"
    assert len(export.messages) == 32
    ids = [m.id for m in export.messages]
    assert ids == sorted(ids) and len(set(ids)) == 32
    assert {m.channel_id for m in export.messages} == {CHANNEL}
    assert {m.guild_id for m in export.messages} == {export.guild_id}


def test_sample_messages() -> None:
    by_id = {m.id: m for m in parse_export(SAMPLE).messages}
    first = by_id[1214137007333179392]
    assert first.author_name == "Alice" and first.author_id == "300000000000000001"
    assert first.timestamp == datetime(2024, 3, 4, 9, 7, 0, 123000, tzinfo=UTC)
    # Local-time stamps are normalised to UTC and agree with the snowflake.
    for message in by_id.values():
        assert message.timestamp.tzinfo is UTC
        assert abs(message.timestamp.timestamp() - snowflake_time(message.id)) < 0.001

    reply = by_id[1214179147505467410]
    assert reply.message_type == MESSAGE_REPLY
    assert reply.reply_to_id == 1214170163306299407 and reply.reply_to_id in by_id

    edited = by_id[1214191432621883413]
    assert edited.edited
    assert edited.edited_at == datetime(2024, 3, 4, 12, 46, 16, 123000, tzinfo=UTC)
    assert not first.edited and first.edited_at is None

    photo = by_id[1214200488124219419]
    assert photo.content == ""
    assert [(a.filename, a.size) for a in photo.attachments] == [("rack-2024.jpg", 2483119)]
    assert photo.index_text == "[photo: rack-2024.jpg]"

    alert = by_id[1214194435743547416]
    assert alert.author_is_bot and alert.author_name == "Uptime Kuma"
    assert alert.index_text == (
        "[DOWN] nas.lan\nService nas.lan is not responding (ping timeout after 48 s)"
    )
    assert sum(m.author_is_bot for m in by_id.values()) == 2

    pinned = by_id[1214255790022459437]
    assert pinned.message_type == 6 and pinned.reply_to_id is None
    assert by_id[1214314053099323458].message_type == 7


@pytest.mark.parametrize("read_size", [1, 7, 4096])
def test_streaming_reads_agree_at_any_buffer_size(read_size: int) -> None:
    assert parse_export(SAMPLE, read_size=read_size) == parse_export(SAMPLE)


def test_messages_before_channel_and_thread_kind(tmp_path: Path) -> None:
    doc = json.loads(SAMPLE.read_text(encoding="utf-8"))
    reordered = {
        "messages": doc["messages"][:3],
        "messageCount": 3,
        "guild": {"id": "0", "name": "Direct Messages"},
        "channel": {**doc["channel"], "type": "GuildPublicThread"},
    }
    path = tmp_path / "thread.json"
    path.write_text(json.dumps(reordered), encoding="utf-8")
    export = parse_export(path)
    assert export.guild_id is None and export.channel.type == PUBLIC_THREAD
    assert [m.guild_id for m in export.messages] == [None, None, None]
    assert len(export.messages) == 3


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "not a DiscordChatExporter JSON export"),
        ("[1, 2]", "not a DiscordChatExporter JSON export"),
        ('{"guild": {"id": "1"}, "messages": []}', "no guild or channel"),
        (
            '{"guild": {"id": "1"}, "channel": {"id": "2"}, "messages": [{"id": "x"}]}',
            "message #0 is malformed",
        ),
        ('{"guild": {"id": "1"}, "channel": {"id": "2"}, "messages": [', "not a Discord"),
    ],
)
def test_malformed_exports_are_refused(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(BotError, match=reason):
        parse_export(path)
    with pytest.raises(BotError, match="cannot read"):
        parse_export(tmp_path / "missing.json")


async def test_importing_twice_changes_nothing(tmp_path: Path) -> None:
    export = parse_export(SAMPLE)
    async with Store.from_url(f"sqlite:///{tmp_path / 'bot.db'}") as store:
        await store.migrate()
        await store.upsert_channels([export.channel])
        first = [await store.save_page(CHANNEL, page) for page in export.pages(10)]
        assert sum(len(r.new) for r in first) == 32
        second = [await store.save_page(CHANNEL, page) for page in export.pages(10)]
        assert [len(r.unchanged) for r in second] == [10, 10, 10, 2]
        assert all(r.new == r.edited == () for r in second)
        assert await store.count_live([CHANNEL], index_state=IndexState.PENDING) == 32
        assert await store.get_messages([m.id for m in export.messages]) == export.messages
        stats = await store.channel_stats([CHANNEL])
        assert stats.count == 32 and stats.top_authors[0][1] == "Alice"
