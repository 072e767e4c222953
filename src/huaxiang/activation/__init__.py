"""Activation: webhook destinations fed by real-time membership changes.

``outbox.enqueue`` turns changes into messages inside the store transaction that stores them;
the delivery worker signs them by the Standard Webhooks convention and sends them, at least once,
to addresses the SSRF policy admits. Receivers check messages with :func:`verify`::

    from huaxiang.activation import verify, WebhookVerificationError
    verify(secret, raw_body, request.headers)   # raises WebhookVerificationError
"""

from huaxiang.activation.signing import (
    WebhookVerificationError,
    generate_secret,
    sign_headers,
    signature,
    verify,
)

__all__ = [
    "WebhookVerificationError",
    "generate_secret",
    "sign_headers",
    "signature",
    "verify",
]
