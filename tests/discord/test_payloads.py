"""Parsers of Discord REST payloads and the embedded text of a message."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, cast

from app.discord.payloads import channel_from_discord, message_from_discord, role_from_discord
from app.store.models import (
    PUBLIC_THREAD,
    Attachment,
    Embed,
    PermissionOverwrite,
    StoredMessage,
    format_time,
    parse_time,
)

# Shaped like a reply from GET /channels/{id}/messages (API v10).
REST_REPLY = {
    "type": 19,
    "content": "",
    "mentions": [],
    "mention_roles": [],
    "attachments": [
        {
            "id": "1214200488124219420",
            "filename": "grafana.png",
            "size": 48211,
            "url": "https://cdn.discordapp.com/attachments/1/2/grafana.png",
            "proxy_url": "https://media.discordapp.net/attachments/1/2/grafana.png",
            "width": 1280,
            "height": 720,
            "content_type": "image/png",
        }
    ],
    "embeds": [],
    "timestamp": "2024-03-04T12:19:15.123000+00:00",
    "edited_timestamp": "2024-03-04T12:25:00.000000+00:00",
    "flags": 0,
    "components": [],
    "id": "1214179147505467410",
    "channel_id": "912345678901234570",
    "author": {
        "id": "300000000000000002",
        "username": "bobthebuilder",
        "avatar": None,
        "discriminator": "0",
        "public_flags": 0,
        "global_name": "Bob",
    },
    "pinned": False,
    "mention_everyone": False,
    "tts": False,
    "message_reference": {
        "type": 0,
        "channel_id": "912345678901234570",
        "message_id": "1214170163306299407",
        "guild_id": "912345678901234567",
    },
}


def test_message_from_rest_reply() -> None:
    message = message_from_discord(REST_REPLY, "912345678901234567")
    assert message.id == 1214179147505467410 and message.channel_id == "912345678901234570"
    assert message.guild_id == "912345678901234567"
    assert (message.author_id, message.author_name, message.author_is_bot) == (
        "300000000000000002",
        "Bob",
        False,
    )
    assert message.reply_to_id == 1214170163306299407 and message.message_type == 19
    assert message.edited and message.edited_at == datetime(2024, 3, 4, 12, 25, tzinfo=UTC)
    assert message.attachments == (
        Attachment(
            id="1214200488124219420",
            filename="grafana.png",
            url="https://cdn.discordapp.com/attachments/1/2/grafana.png",
            content_type="image/png",
            size=48211,
        ),
    )
    assert message.index_text == "[photo: grafana.png]"
    # Alt text, which Discord carries as the attachment's description, stands for the photo.
    [attachment] = cast(list[dict[str, Any]], REST_REPLY["attachments"])
    described = {**attachment, "description": "CPU graph  of node 3"}
    with_alt = message_from_discord({**REST_REPLY, "attachments": [described]}, None)
    assert with_alt.attachments[0].description == "CPU graph  of node 3"
    assert with_alt.index_text == "[photo: CPU graph of node 3]"
    assert with_alt.search_text == "Bob: [photo: CPU graph of node 3]"


def test_bot_message_with_embed_and_no_reference() -> None:
    payload = {
        **REST_REPLY,
        "type": 0,
        "edited_timestamp": None,
        "attachments": [],
        "embeds": [{"type": "rich", "title": "Deploy finished", "description": "v2.3.1 is live"}],
        "author": {"id": "42", "username": "ci-bot", "bot": True, "global_name": None},
    }
    message = message_from_discord(payload, None)
    assert message.author_is_bot and message.author_name == "ci-bot"
    assert message.reply_to_id is None and not message.edited and message.guild_id is None
    assert message.embeds == (Embed(title="Deploy finished", description="v2.3.1 is live"),)
    assert message.index_text == "Deploy finished\nv2.3.1 is live"


def test_index_text_and_hash() -> None:
    base = StoredMessage(1, "c", "u", "hello", datetime(2024, 1, 1, tzinfo=UTC), author_name="Ana")
    with_extras = replace(
        base,
        attachments=(Attachment("a", "x.png"), Attachment("b", "notes.pdf")),
        embeds=(Embed("t", "d"),),
    )
    # What was shown counts beside what was typed.
    assert with_extras.index_text == "hello\n[photo: x.png]\n[attachment: notes.pdf]\nt\nd"
    assert with_extras.search_text == "Ana: hello [photo: x.png] [attachment: notes.pdf] t d"
    assert with_extras.content_hash != base.content_hash
    assert len(base.content_hash) == 64
    assert replace(base, content="hello!").content_hash != base.content_hash
    blank = replace(with_extras, content="  ")
    assert blank.index_text == "[photo: x.png]\n[attachment: notes.pdf]\nt\nd"
    assert replace(base, content="").index_text == ""
    assert replace(base, author_name="").search_text == "hello"


def test_channel_and_role_from_rest() -> None:
    thread = channel_from_discord(
        {
            "id": "5",
            "type": 11,
            "guild_id": "1",
            "name": "help: ups",
            "parent_id": "4",
            "permission_overwrites": [],
        }
    )
    assert thread.is_thread and thread.type == PUBLIC_THREAD and thread.parent_id == "4"
    text = channel_from_discord(
        {
            "id": "4",
            "type": 0,
            "guild_id": "1",
            "name": "general",
            "position": 3,
            "parent_id": None,
            "permission_overwrites": [
                {"id": "1", "type": 0, "allow": "0", "deny": "1024"},
                {"id": "9", "type": 1, "allow": "2251799813685248", "deny": "0"},
            ],
        }
    )
    assert not text.is_thread and text.position == 3 and text.parent_id is None
    assert text.permission_overwrites == (
        PermissionOverwrite("1", 0, 0, 1024),
        PermissionOverwrite("9", 1, 1 << 51, 0),
    )
    role = role_from_discord(
        {"id": "7", "name": "Mods", "permissions": "1099511627775", "position": 2}, "1"
    )
    assert (role.id, role.guild_id, role.permissions, role.position) == ("7", "1", 2**40 - 1, 2)


def test_stored_times_are_fixed_width_utc() -> None:
    cet = timezone(timedelta(hours=1))
    early = datetime(2024, 3, 4, 10, 0, 0, tzinfo=cet)
    late = datetime(2024, 3, 4, 9, 30, 0, 500, tzinfo=UTC)
    assert format_time(early) == "2024-03-04T09:00:00.000000+00:00"
    assert sorted([format_time(late), format_time(early)])[0] == format_time(early)
    assert parse_time(format_time(late)) == late
    assert parse_time("2024-03-04T10:00:00").tzinfo is UTC
