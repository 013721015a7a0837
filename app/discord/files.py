"""Files attached to a message: Discord's multipart body of `payload_json` and `files[n]`.

Discord takes uploads as multipart/form-data: the JSON body goes in a `payload_json` part and
each file in a part named `files[n]`; the body's `attachments` array names each upload by that
`n` (as a string id) and carries its filename and description (alt text). An edit that sends
`attachments` replaces the message's attachments; one that leaves it out keeps them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

# Discord's limits: the alt text of an attachment, and files per message.
DESCRIPTION_MAX: Final = 1024
FILES_MAX: Final = 10


@dataclass(frozen=True, slots=True)
class File:
    """One file to upload with a message."""

    filename: str
    content: bytes = field(repr=False)
    content_type: str = "application/octet-stream"
    # Alt text: what a screen reader says, and what shows when the file cannot.
    description: str = ""


def with_attachments(body: Mapping[str, Any], files: Sequence[File]) -> dict[str, Any]:
    """`body` with the `attachments` array that names each of `files` by its part number."""
    if len(files) > FILES_MAX:
        raise ValueError(f"Discord takes at most {FILES_MAX} files per message, not {len(files)}")
    attachments = []
    for n, file in enumerate(files):
        attachment = {"id": str(n), "filename": file.filename}
        if file.description:
            attachment["description"] = _cut(file.description, DESCRIPTION_MAX)
        attachments.append(attachment)
    return {**body, "attachments": attachments}


def multipart(body: Mapping[str, Any], files: Sequence[File]) -> dict[str, Any]:
    """httpx's `data` and `files` arguments for a message body with files attached."""
    payload = orjson.dumps(with_attachments(body, files)).decode()
    return {
        "data": {"payload_json": payload},
        "files": [
            (f"files[{n}]", (file.filename, file.content, file.content_type))
            for n, file in enumerate(files)
        ],
    }


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
