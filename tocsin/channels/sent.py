"""What one delivery attempt sent, for the audit log (``audit.record_payloads``).

Delivery opens a :func:`capture` around one attempt; every request body a
channel hands to :class:`~tocsin.channels.http.HttpTarget` during it is noted,
in the attempt's own task, so attempts running side by side never see each
other's. Bodies are kept as text with every registered secret redacted (a
PagerDuty routing key travels in the body); headers are never kept. Channels
that do not speak HTTP (email) send nothing this records.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

from tocsin.logs import redact

_bodies: ContextVar[list[bytes] | None] = ContextVar("sent_bodies", default=None)


class Sent:
    """The bodies one attempt sent, in order."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def payload(self) -> str | None:
        """Return the bodies as text, one per line, secrets redacted; ``None``
        if nothing was sent."""
        if not self.bodies:
            return None
        text = "\n".join(body.decode("utf-8", "replace") for body in self.bodies)

        return redact(text)


@contextlib.contextmanager
def capture(enabled: bool = True) -> Iterator[Sent]:
    """Note the bodies sent inside the block; nothing when not ``enabled``."""
    sent = Sent()
    if not enabled:
        yield sent
        return
    token = _bodies.set(sent.bodies)
    try:
        yield sent
    finally:
        _bodies.reset(token)


def note(body: bytes) -> None:
    """Note one request body, if an attempt is capturing."""
    bodies = _bodies.get()
    if bodies is not None:
        bodies.append(body)
