"""Signing requests as Discord does, with a key of the test's own."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from nacl.signing import SigningKey


@dataclass
class Signer:
    """A fresh Ed25519 key pair; `headers` signs a body the way Discord signs interactions."""

    key: SigningKey = field(default_factory=SigningKey.generate)

    @property
    def public_key_hex(self) -> str:
        return bytes(self.key.verify_key).hex()

    def headers(self, body: bytes, timestamp: str | int | None = None) -> dict[str, str]:
        """X-Signature-* headers for `body`, signed at `timestamp` (default: now)."""
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        signature = self.key.sign(stamp.encode() + body).signature.hex()
        return {
            "X-Signature-Ed25519": signature,
            "X-Signature-Timestamp": stamp,
            "Content-Type": "application/json",
        }


def command(
    name: str,
    options: dict[str, Any] | None = None,
    *,
    interaction_id: str = "1100000000000000001",
    user_id: str = "2200000000000000001",
    permissions: int = 0,
) -> dict[str, Any]:
    """An APPLICATION_COMMAND interaction shaped like Discord's, invoked in a guild."""
    return {
        "id": interaction_id,
        "application_id": "1000000000000000000",
        "type": 2,
        "token": "aW50ZXJhY3Rpb246dGVzdC10b2tlbi1zZWNyZXQtdmFsdWUtMTIzNDU2Nzg5",
        "version": 1,
        "guild_id": "3300000000000000001",
        "channel_id": "4400000000000000001",
        "locale": "en-US",
        "data": {
            "id": "5500000000000000001",
            "name": name,
            "type": 1,
            "options": [
                {"name": k, "type": 4 if isinstance(v, int) else 3, "value": v}
                for k, v in (options or {}).items()
            ],
        },
        "member": {
            "user": {"id": user_id, "username": "someone", "discriminator": "0"},
            "roles": [],
            "permissions": str(permissions),
        },
    }


def message_command(
    name: str,
    target: dict[str, Any],
    *,
    interaction_id: str = "1100000000000000001",
    user_id: str = "2200000000000000001",
    permissions: int = 0,
) -> dict[str, Any]:
    """A message context-menu command (data type 3) run on `target`, a Discord message object.

    The interaction's channel is the target's, as Discord sends it.
    """
    payload = command(name, interaction_id=interaction_id, user_id=user_id, permissions=permissions)
    payload["channel_id"] = target["channel_id"]
    payload["data"] = {
        "id": "5500000000000000002",
        "name": name,
        "type": 3,
        "target_id": target["id"],
        "resolved": {"messages": {target["id"]: target}},
    }
    return payload


def target_message(
    content: str = "the release is on friday",
    *,
    message_id: str = "6600000000000000001",
    channel_id: str = "4400000000000000001",
) -> dict[str, Any]:
    """A message as Discord resolves it in a context-menu interaction."""
    return {
        "id": message_id,
        "channel_id": channel_id,
        "type": 0,
        "content": content,
        "author": {"id": "2200000000000000009", "username": "poster", "discriminator": "0"},
        "timestamp": "2026-11-01T12:00:00.000000+00:00",
        "edited_timestamp": None,
        "attachments": [],
        "embeds": [],
        "mentions": [],
        "mention_roles": [],
        "pinned": False,
        "mention_everyone": False,
        "tts": False,
        "flags": 0,
        "components": [],
    }


def encode(payload: Any) -> bytes:
    """The compact JSON body Discord would send."""
    return json.dumps(payload, separators=(",", ":")).encode()
