"""Signing webhook requests the Standard Webhooks way.

A receiver that shares a secret with Tocsin checks three headers:
``webhook-id`` (the notification's idempotency key, the same on every
attempt, which the receiver deduplicates on), ``webhook-timestamp`` (this
attempt's time in POSIX seconds, which the receiver compares with its clock
to refuse replays) and ``webhook-signature``: ``v1,`` and the base64
HMAC-SHA256 of ``{id}.{timestamp}.{body}`` under the secret's key.

The secret is written ``whsec_`` followed by the base64 of the key, as
receivers show it. Nothing here ever quotes a secret or a key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

#: How a signing secret starts.
SECRET_PREFIX = "whsec_"
#: The shortest key the specification has receivers generate.
MIN_KEY_BYTES = 24


class SecretProblem(ValueError):
    """Raised when a signing secret is not ``whsec_`` and base64 of a key of
    at least :data:`MIN_KEY_BYTES` bytes; the message never quotes it."""


def signing_key(secret: str) -> bytes:
    """Return the HMAC key a ``whsec_...`` secret stands for.

    :raises SecretProblem: if the secret is malformed or its key too short.
    """
    if not secret.startswith(SECRET_PREFIX):
        raise SecretProblem(f"must start with {SECRET_PREFIX}")
    encoded = secret[len(SECRET_PREFIX) :]
    # Some receivers show the secret without base64's closing padding.
    padded = encoded + "=" * (-len(encoded) % 4)
    try:
        key = base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        raise SecretProblem(
            f"must be {SECRET_PREFIX} followed by standard base64"
        ) from None
    if len(key) < MIN_KEY_BYTES:
        raise SecretProblem(
            f"its key is {len(key)} bytes; it must be at least {MIN_KEY_BYTES}"
        )

    return key


def signature(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """Return the ``webhook-signature`` header value for one request."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()

    return f"v1,{base64.b64encode(digest).decode()}"
