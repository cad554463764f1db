"""The API's view of delivery: dead letters, and a test sent to an integration.

Part of :class:`~tocsin.daemon.services.Services`, kept apart because it
reaches the dispatcher and the running channels rather than the alerts.
"""

from __future__ import annotations

import logging

from tocsin.channels.attempt import bounded_send
from tocsin.channels.sample import sample_notification
from tocsin.daemon.backend import IntegrationTest
from tocsin.errors import DeliveryError, NotFoundError
from tocsin.logs import redact
from tocsin.state.outbox import DeadLetter

log = logging.getLogger(__name__)


class DeliveryServices:
    """Dead letters and integration tests over a running daemon.

    Expects ``self._daemon`` (its ``clock`` and ``running`` config) and
    ``self._parts`` (its ``outbox`` and ``dispatcher``), as :class:`Services`
    has them.
    """

    async def dead_letters(
        self, *, channel: str | None = None, limit: int = 100
    ) -> list[DeadLetter]:
        return await self._parts.outbox.dead_letters(limit, channel=channel)

    async def test_integration(self, name: str) -> IntegrationTest:
        # The running config decides: an integration removed through the API
        # keeps its delivery worker until a restart, but is no integration.
        configured = any(c.name == name for c in self._daemon.running.channels)
        channel = self._parts.dispatcher.channel(name) if configured else None
        if channel is None:
            raise NotFoundError(f"no integration {name}")
        clock = self._daemon.clock
        notification = sample_notification(name, clock.time())

        # One attempt, now: a test that waited behind the outbox or the rate
        # limit would tell the person who asked nothing while they wait. It
        # is bounded as every attempt is, by the channel's timeout.
        started = clock.monotonic()
        try:
            status = await bounded_send(channel, notification)
        except DeliveryError as error:
            result = IntegrationTest(
                ok=False,
                status=error.status,
                duration_ms=_since(clock, started),
                reason=error.reason,
                error=redact(str(error)),
            )
        except Exception as error:
            log.exception("channel raised an unexpected error", extra={"channel": name})
            result = IntegrationTest(
                ok=False,
                status=None,
                duration_ms=_since(clock, started),
                reason="internal",
                error=f"channel {name}: unexpected {type(error).__name__}",
            )
        else:
            result = IntegrationTest(
                ok=True, status=status, duration_ms=_since(clock, started)
            )
        # INFO either way: someone asked for this test and watches its answer;
        # a failure here is not a notification lost.
        log.info(
            "integration test sent",
            extra={
                "channel": name,
                "notification": notification.key,
                "status": result.status,
                "reason": result.reason or "ok",
            },
        )

        return result


def _since(clock, started: float) -> float:
    return round((clock.monotonic() - started) * 1000, 3)
