"""Ed25519 verification of Discord's signed requests, done before anything reads the body."""

from __future__ import annotations

from collections.abc import Callable

from nacl.bindings import crypto_sign_BYTES, crypto_sign_open
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from app.errors import BotError, SettingsError

_SIGNATURE_HEX_LENGTH = 128


class SignatureError(BotError):
    """The request is not signed by Discord, or was signed too long ago to trust."""


class SignatureVerifier:
    """Checks X-Signature-Ed25519 over X-Signature-Timestamp + raw body, and freshness.

    The key is parsed once; `verify` is on the hot path of every interaction, so it calls
    libsodium's binding directly rather than through VerifyKey.verify's checks and copies.
    """

    def __init__(self, public_key_hex: str, max_age: float, clock: Callable[[], float]) -> None:
        try:
            self._key = bytes(VerifyKey(bytes.fromhex(public_key_hex)))
        except (ValueError, TypeError) as exc:
            raise SettingsError(f"DISCORD_PUBLIC_KEY: not a valid Ed25519 key ({exc})") from None
        self.max_age = max_age
        self.clock = clock

    def verify(self, body: bytes, signature: str | None, timestamp: str | None) -> None:
        """Raise SignatureError unless Discord signed exactly this body at a recent time."""
        if not signature or not timestamp:
            raise SignatureError("missing signature headers")
        if len(signature) != _SIGNATURE_HEX_LENGTH:
            raise SignatureError("signature is not 64 bytes of hex")
        try:
            signed = bytes.fromhex(signature) + timestamp.encode("ascii") + body
        except (ValueError, UnicodeEncodeError):
            raise SignatureError("signature or timestamp is malformed") from None
        if len(signed) != crypto_sign_BYTES + len(timestamp) + len(body):
            # bytes.fromhex skips spaces, so 128 characters may not be 64 bytes.
            raise SignatureError("signature is not 64 bytes")
        try:
            crypto_sign_open(signed, self._key)
        except BadSignatureError:
            raise SignatureError("signature does not match") from None
        # Only a signed timestamp is worth reading; a replayed old request fails here.
        try:
            signed_at = int(timestamp)
        except ValueError:
            raise SignatureError("timestamp is not a number") from None
        if abs(self.clock() - signed_at) > self.max_age:
            raise SignatureError("timestamp is too far from now")
