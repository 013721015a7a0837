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


def encode(payload: Any) -> bytes:
    """The compact JSON body Discord would send."""
    return json.dumps(payload, separators=(",", ":")).encode()
