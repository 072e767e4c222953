"""Standard Webhooks signatures: our signer and verifier agree with each other and with the
official ``standardwebhooks`` package, in both directions."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

import pytest
import standardwebhooks

from huaxiang.activation import WebhookVerificationError, generate_secret, sign_headers, verify
from huaxiang.activation.signing import MIN_SECRET_BYTES, secret_bytes, signature

BODY = '{"type":"tag.entered","data":{"name":"python_interest","person_key":"user_id:u1"}}'


def test_secret_is_whsec_base64_of_enough_random_bytes() -> None:
    first, second = generate_secret(), generate_secret()
    assert first.startswith("whsec_") and first != second
    assert len(base64.b64decode(first.removeprefix("whsec_"))) >= MIN_SECRET_BYTES
    with pytest.raises(ValueError, match="at least 24 bytes"):
        secret_bytes("whsec_" + base64.b64encode(b"short").decode())


def test_signature_matches_the_spec_example() -> None:
    # The example of the Standard Webhooks specification (spec/standard-webhooks.md).
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = '{"test": 2432232314}'
    got = signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
    assert got == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_own_signatures_verify_and_tampering_fails() -> None:
    secret = generate_secret()
    now = int(time.time())
    headers = sign_headers([secret], "msg_1", now, BODY)
    verify(secret, BODY.encode(), headers)
    verify(secret, BODY, {k.upper(): v for k, v in headers.items()})
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(secret, BODY.replace("u1", "u2"), headers)
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(generate_secret(), BODY, headers)
    with pytest.raises(WebhookVerificationError, match="missing"):
        verify(secret, BODY, {"webhook-id": "msg_1"})


def test_timestamp_tolerance_is_five_minutes_by_default() -> None:
    secret = generate_secret()
    stamp = 1_800_000_000
    headers = sign_headers([secret], "msg_1", stamp, BODY)
    verify(secret, BODY, headers, now=stamp + 299)
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify(secret, BODY, headers, now=stamp + 301)
    with pytest.raises(WebhookVerificationError, match="too new"):
        verify(secret, BODY, headers, now=stamp - 301)
    verify(secret, BODY, headers, now=stamp + 3000, tolerance_seconds=3600)


def test_rotation_sends_both_signatures_and_either_secret_verifies() -> None:
    old, new = generate_secret(), generate_secret()
    now = int(time.time())
    headers = sign_headers([new, old], "msg_2", now, BODY)
    assert len(headers["webhook-signature"].split(" ")) == 2
    verify(new, BODY, headers)
    verify(old, BODY, headers)
    with pytest.raises(WebhookVerificationError):
        verify(generate_secret(), BODY, headers)


def test_official_package_verifies_our_signatures() -> None:
    secret, old = generate_secret(), generate_secret()
    headers = sign_headers([secret, old], "msg_3", int(time.time()), BODY)
    assert standardwebhooks.Webhook(secret).verify(BODY.encode(), headers) == {
        "type": "tag.entered",
        "data": {"name": "python_interest", "person_key": "user_id:u1"},
    }
    assert standardwebhooks.Webhook(old).verify(BODY.encode(), headers)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(generate_secret()).verify(BODY.encode(), headers)


def test_we_verify_the_official_packages_signatures() -> None:
    secret = generate_secret()
    now = datetime.now(UTC)
    official = standardwebhooks.Webhook(secret).sign("msg_4", now, BODY)
    headers = {
        "webhook-id": "msg_4",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": official,
    }
    verify(secret, BODY, headers)
    assert official == signature(secret, "msg_4", int(now.timestamp()), BODY)
