from __future__ import annotations

import time

import pytest

from app.errors import BotError
from app.interactions.verify import SignatureError, SignatureVerifier
from tests.discord_spec import signed_interaction_vector
from tests.signing import Signer


def vector_verifier(max_age: float = 300.0) -> tuple[SignatureVerifier, dict[str, str]]:
    vector = signed_interaction_vector()
    signed_at = int(vector["timestamp"])
    return SignatureVerifier(vector["public_key_hex"], max_age, lambda: signed_at + 10.0), vector


def test_discords_real_signed_interaction_verifies() -> None:
    verifier, v = vector_verifier()
    verifier.verify(v["body"].encode(), v["signature_hex"], v["timestamp"])


def test_uppercase_signature_hex_verifies() -> None:
    verifier, v = vector_verifier()
    verifier.verify(v["body"].encode(), v["signature_hex"].upper(), v["timestamp"])


@pytest.mark.parametrize(
    "where", ["body_start", "body_end", "body_space", "timestamp", "signature"]
)
def test_any_change_to_the_signed_vector_fails(where: str) -> None:
    verifier, v = vector_verifier(max_age=10**6)
    body, stamp, signature = v["body"], v["timestamp"], v["signature_hex"]
    if where == "body_start":
        body = body.replace('"application_id"', '"applicatiom_id"', 1)
    elif where == "body_end":
        body = body[:-2] + "2}"
    elif where == "body_space":
        body = body + " "
    elif where == "timestamp":
        stamp = str(int(stamp) + 1)
    else:
        flipped = "0" if signature[10] != "0" else "1"
        signature = signature[:10] + flipped + signature[11:]
    with pytest.raises(SignatureError):
        verifier.verify(body.encode(), signature, stamp)


@pytest.mark.parametrize(
    ("signature", "timestamp"),
    [
        (None, "1643807576"),
        ("00" * 64, None),
        ("", "1643807576"),
        ("zz" * 64, "1643807576"),
        ("00" * 63, "1643807576"),
        ("00" * 65, "1643807576"),
        ("00 " * 42 + "00", "1643807576"),
    ],
)
def test_missing_or_malformed_signature_fails(signature: str | None, timestamp: str | None) -> None:
    verifier, v = vector_verifier()
    with pytest.raises(SignatureError):
        verifier.verify(v["body"].encode(), signature, timestamp)


def test_non_ascii_timestamp_fails() -> None:
    verifier, v = vector_verifier()
    with pytest.raises(SignatureError):
        verifier.verify(v["body"].encode(), v["signature_hex"], "16438075é6")


@pytest.mark.parametrize("offset", [-301, 301, 10**6])
def test_a_signature_too_far_from_now_is_a_replay(offset: int) -> None:
    signer = Signer()
    now = time.time()
    verifier = SignatureVerifier(signer.public_key_hex, 300.0, lambda: now)
    body = b'{"type":1}'
    headers = signer.headers(body, int(now) + offset)
    with pytest.raises(SignatureError, match="too far"):
        verifier.verify(body, headers["X-Signature-Ed25519"], headers["X-Signature-Timestamp"])


def test_a_fresh_signature_from_our_own_key_verifies_and_another_key_does_not() -> None:
    signer, stranger = Signer(), Signer()
    verifier = SignatureVerifier(signer.public_key_hex, 300.0, time.time)
    body = b'{"type":1}'
    ours = signer.headers(body)
    verifier.verify(body, ours["X-Signature-Ed25519"], ours["X-Signature-Timestamp"])
    theirs = stranger.headers(body)
    with pytest.raises(SignatureError):
        verifier.verify(body, theirs["X-Signature-Ed25519"], theirs["X-Signature-Timestamp"])


def test_a_non_numeric_signed_timestamp_fails() -> None:
    signer = Signer()
    verifier = SignatureVerifier(signer.public_key_hex, 300.0, time.time)
    body = b'{"type":1}'
    headers = signer.headers(body, "soon")
    with pytest.raises(SignatureError, match="not a number"):
        verifier.verify(body, headers["X-Signature-Ed25519"], "soon")


def test_a_malformed_public_key_is_refused_at_start() -> None:
    with pytest.raises(BotError, match="DISCORD_PUBLIC_KEY"):
        SignatureVerifier("abcd", 300.0, time.time)
