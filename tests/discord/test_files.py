"""Files on messages: the multipart body, and DiscordRest uploading one to FakeDiscord."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from app.discord.files import File, multipart, with_attachments
from app.discord.rest import DiscordRest, RetryPolicy
from tests.fake_discord import FakeDiscord
from tests.png import open_png, tiny_png

ORIGINAL = "PATCH /webhooks/{webhook_id}/{webhook_token}/messages/@original"
FAST_RETRY = RetryPolicy(backoff_base=0.01, backoff_cap=0.05)
BODY = {"content": "the numbers", "allowed_mentions": {"parse": []}, "flags": 4}


@pytest.fixture
def fake() -> Iterator[FakeDiscord]:
    with FakeDiscord() as server:
        yield server


def chart() -> File:
    return File("stats.png", tiny_png(), "image/png", "A chart of messages per week.")


def test_attachments_name_each_file_by_its_part_number() -> None:
    files = [chart(), File("b.txt", b"x")]
    body = with_attachments(BODY, files)
    assert body["attachments"] == [
        {"id": "0", "filename": "stats.png", "description": "A chart of messages per week."},
        {"id": "1", "filename": "b.txt"},
    ]
    assert body["content"] == "the numbers" and "attachments" not in BODY
    long = File("a.png", b"x", description="y" * 2000)
    assert len(with_attachments(BODY, [long])["attachments"][0]["description"]) == 1024
    with pytest.raises(ValueError, match="at most 10"):
        with_attachments(BODY, [chart()] * 11)


def test_the_multipart_body_is_what_discord_reads() -> None:
    request = httpx.Request("PATCH", "http://discord.test/", **multipart(BODY, [chart()]))
    content_type = request.headers["content-type"]
    assert content_type.startswith("multipart/form-data; boundary=")
    raw = request.read()
    assert b'name="payload_json"' in raw
    assert b'name="files[0]"; filename="stats.png"' in raw
    assert b"Content-Type: image/png" in raw
    assert tiny_png() in raw
    assert int(request.headers["content-length"]) == len(raw)


async def test_a_file_is_uploaded_with_the_edit_and_validates(fake: FakeDiscord) -> None:
    async with DiscordRest(fake.api_base, fake.token, retry=FAST_RETRY) as rest:
        message = await rest.edit_original_response(fake.application_id, "tok", BODY, [chart()])
    assert fake.violations == []
    (request,) = fake.requests
    assert request.headers["content-type"].startswith("multipart/form-data")
    assert request.body["attachments"][0]["id"] == "0"
    (attachment,) = message["attachments"]
    assert attachment["filename"] == "stats.png"
    assert attachment["description"] == "A chart of messages per week."
    assert attachment["size"] == len(tiny_png())
    delivered = fake.interaction("tok")
    assert delivered.original is not None and delivered.original["content"] == "the numbers"
    (upload,) = delivered.uploads
    assert upload.content_type == "image/png"
    assert open_png(upload.content).size == (3, 2)


async def test_an_edit_without_attachments_keeps_the_file(fake: FakeDiscord) -> None:
    async with DiscordRest(fake.api_base, fake.token, retry=FAST_RETRY) as rest:
        await rest.edit_original_response(fake.application_id, "tok", BODY, [chart()])
        await rest.edit_original_response(fake.application_id, "tok", {"content": "later"})
    original = fake.interaction("tok").original
    assert original is not None and original["content"] == "later"
    assert [a["filename"] for a in original["attachments"]] == ["stats.png"]
    assert fake.violations == []


async def test_an_upload_waits_out_429s_and_retries_5xx_and_lost_answers(
    fake: FakeDiscord,
) -> None:
    fake.inject_429(ORIGINAL, retry_after=0.05)
    fake.inject_status(502, ORIGINAL)
    # Applied, but the answer is lost: an edit is safe to send again, and replaces the file.
    fake.inject_drop(ORIGINAL, after_handling=True)
    async with DiscordRest(fake.api_base, fake.token, retry=FAST_RETRY) as rest:
        message = await rest.edit_original_response(fake.application_id, "tok", BODY, [chart()])
    assert [r.status for r in fake.requests] == [429, 502, 0, 200]
    assert all(r.files[0].content == tiny_png() for r in fake.requests)
    assert len(message["attachments"]) == 1
    original = fake.interaction("tok").original
    assert original is not None and len(original["attachments"]) == 1
    assert fake.violations == []


def test_the_fake_refuses_a_file_the_payload_does_not_name(fake: FakeDiscord) -> None:
    unnamed = multipart(BODY, [chart()])
    unnamed["data"] = {"payload_json": '{"content": "no attachments array"}'}
    path = f"/api/v10/webhooks/{fake.application_id}/tok/messages/@original"
    with httpx.Client(base_url=fake.url) as client:
        client.patch(path, headers={"User-Agent": "DiscordBot (x, 1)"}, **unnamed)
    assert fake.violations == [f"PATCH {path}: files[0] is not named in attachments"]
