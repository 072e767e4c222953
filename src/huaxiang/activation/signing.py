"""Standard Webhooks signatures: secrets, signing, and verification for receivers.

A secret is ``whsec_`` + base64 of at least 24 random bytes (we make 32). A message is signed as
``v1,`` + base64(HMAC-SHA256(secret bytes, "{id}.{timestamp}.{body}")) and sent in three headers:
``webhook-id``, ``webhook-timestamp`` (Unix seconds) and ``webhook-signature``. During a secret
rotation both signatures are sent, separated by a space; a receiver accepts a message when any of
them matches its secret. This module uses the standard library only, so receivers can import it
without the rest of huaxiang's dependencies mattering.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping, Sequence
from datetime import datetime

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
MIN_SECRET_BYTES = 24
#: How far a message's timestamp may be from the receiver's clock (replay protection).
DEFAULT_TOLERANCE_SECONDS = 300


class WebhookVerificationError(Exception):
    """The message is not signed by the secret, or its timestamp is too old or too new."""


def generate_secret() -> str:
    """A new signing secret: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def secret_bytes(secret: str | bytes) -> bytes:
    """The key bytes of a ``whsec_...`` secret (raw bytes pass through)."""
    if isinstance(secret, bytes):
        key = secret
    else:
        text = secret.removeprefix(SECRET_PREFIX)
        try:
            key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError) as e:
            raise ValueError("a webhook secret is 'whsec_' followed by base64") from e
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"a webhook secret needs at least {MIN_SECRET_BYTES} bytes")
    return key


def _as_bytes(body: str | bytes) -> bytes:
    return body.encode("utf-8") if isinstance(body, str) else body


def signature(secret: str | bytes, message_id: str, timestamp: int, body: str | bytes) -> str:
    """One ``v1,<base64>`` signature of a message."""
    signed = f"{message_id}.{timestamp}.".encode() + _as_bytes(body)
    digest = hmac.new(secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def sign_headers(
    secrets_: Sequence[str | bytes], message_id: str, timestamp: int, body: str | bytes
) -> dict[str, str]:
    """The three Standard Webhooks headers, signed with every secret given (rotation)."""
    if not secrets_:
        raise ValueError("at least one secret is needed to sign")
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(timestamp)),
        "webhook-signature": " ".join(signature(s, message_id, timestamp, body) for s in secrets_),
    }


def timestamp_of(moment: datetime) -> int:
    """Unix seconds of an aware datetime (the ``webhook-timestamp`` value)."""
    return int(moment.timestamp())


def verify(
    secret: str | bytes,
    body: str | bytes,
    headers: Mapping[str, str],
    *,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> None:
    """Check a received webhook; raise :class:`WebhookVerificationError` when it fails.

    ``body`` is the raw request body (bytes as received: re-serialised JSON would not match);
    ``headers`` the request headers (any case). Signatures are compared in constant time, and the
    timestamp must be within ``tolerance_seconds`` of ``now`` (Unix seconds, default the clock).
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    message_id = lowered.get("webhook-id")
    stamp = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not (message_id and stamp and signatures):
        raise WebhookVerificationError(
            "missing webhook-id, webhook-timestamp or webhook-signature header"
        )
    try:
        timestamp = int(stamp)
    except ValueError as e:
        raise WebhookVerificationError(f"webhook-timestamp {stamp!r} is not Unix seconds") from e
    current = time.time() if now is None else now
    if timestamp < current - tolerance_seconds:
        raise WebhookVerificationError("message timestamp too old")
    if timestamp > current + tolerance_seconds:
        raise WebhookVerificationError("message timestamp too new")
    try:
        expected = signature(secret, message_id, timestamp, body).encode("ascii")
    except ValueError as e:
        raise WebhookVerificationError(str(e)) from e
    matched = False
    for candidate in signatures.split(" "):
        # Compare every candidate (no early exit) so timing says nothing about which matched.
        matched |= hmac.compare_digest(expected, candidate.strip().encode("utf-8", "replace"))
    if not matched:
        raise WebhookVerificationError("no matching signature")
