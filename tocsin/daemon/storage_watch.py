"""Tocsin's own alert about its state database failing.

``tocsin.storage_failing`` (critical) fires when ``health.failures`` reads or
writes of the state database failed with no write committed since the first
of them (a full disk, a database another process keeps locked, a file that
cannot be written back); it resolves at the next committed write.

An alert about the store cannot count on the store: it is not stored and
goes through no outbox. It is sent at once, one attempt per channel of
``alerts.internal_channels``, bounded by each channel's timeout, and logged
as an ERROR line whatever the sends did; so is its resolve, under the same
alert uid. Nothing of it survives a restart: a store still failing then
raises it again.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence

from tocsin.channels.attempt import bounded_send
from tocsin.channels.base import Channel
from tocsin.clock import Clock
from tocsin.errors import DeliveryError
from tocsin.schema import HealthConfig
from tocsin.state.models import Alert, AlertSpec, Notification, Transition

log = logging.getLogger(__name__)

#: The rule of Tocsin's own alert about its state database.
STORAGE_FAILING_RULE = "tocsin.storage_failing"
#: Ids of rows that were never written: the alert is in no database.
_NO_ROW = 0


class StorageWatcher:
    """Decide and send ``tocsin.storage_failing`` from the database's counters.

    :param database: the state :class:`~tocsin.state.db.Database`; its
        ``transactions`` and ``errors`` counters are read.
    :param channel: returns the running channel of a name, or ``None``.
    :param internal_channels: returns ``alerts.internal_channels``.
    """

    def __init__(
        self,
        database,
        settings: HealthConfig,
        clock: Clock,
        *,
        channel: Callable[[str], Channel | None],
        internal_channels: Callable[[], Sequence[str]],
    ) -> None:
        self.settings = settings
        self._db = database
        self._clock = clock
        self._channel = channel
        self._internal = internal_channels
        self._transactions = database.transactions
        self._errors = database.errors
        #: Errors since the last committed write.
        self._streak = 0
        #: The uid of the open alert, or ``None``.
        self._uid: str | None = None
        self._since = 0.0

    def evaluate(self) -> str | None:
        """Return ``fire`` or ``resolve`` when the counters call for one."""
        db = self._db
        committed = db.transactions > self._transactions
        if committed:
            self._streak = 0
        else:
            self._streak += db.errors - self._errors
        self._transactions, self._errors = db.transactions, db.errors
        if self._uid is None and self._streak >= self.settings.failures:
            return "fire"
        if self._uid is not None and committed:
            return "resolve"

        return None

    async def look(self) -> None:
        """Evaluate, and send what it calls for."""
        action = self.evaluate()
        if action is None:
            return
        now = self._clock.time()
        if action == "fire":
            self._uid, self._since = uuid.uuid4().hex, now
            reason = f"{self._streak} state database errors, no write committed"
        else:
            reason = "a write committed again"
        await self._send(action, now, reason)
        if action == "resolve":
            self._uid = None

    async def _send(self, action: str, now: float, reason: str) -> None:
        names = list(self._internal())
        channels = [c for c in map(self._channel, names) if c is not None]
        outcomes = await asyncio.gather(
            *(self._attempt(c, action, now, reason) for c in channels)
        )
        # ERROR either way: the alert is in no database and no outbox, so
        # this line is its only record; with no channel, its only trace.
        log.error(
            "Tocsin's own alert sent without being stored"
            if action == "fire"
            else "Tocsin's own alert resolved without being stored",
            extra={
                "rule": STORAGE_FAILING_RULE,
                "alert": self._uid,
                "reason": reason,
                "detail": dict(zip([c.name for c in channels], outcomes, strict=True)),
            },
        )

    async def _attempt(
        self, channel: Channel, action: str, now: float, reason: str
    ) -> str:
        """Send once to ``channel``; return ``delivered`` or the failure's reason."""
        try:
            await bounded_send(
                channel, self._notification(channel.name, action, now, reason)
            )
        except DeliveryError as error:
            return error.reason
        except Exception:
            log.exception(
                "channel raised an unexpected error", extra={"channel": channel.name}
            )
            return "internal"

        return "delivered"

    def _notification(
        self, channel: str, action: str, now: float, reason: str
    ) -> Notification:
        """Return the alert's trigger or resolve, addressed to ``channel``."""
        resolved = action == "resolve"
        spec = AlertSpec(
            rule=STORAGE_FAILING_RULE,
            series="",
            labels={},
            severity="critical",
            metric="tocsin.state.errors",
            aggregation="count",
            window=0.0,
            op=">=",
            threshold=float(self.settings.failures),
            value=float(self._streak),
            samples=0,
            started_at=self._since,
            fired_at=self._since,
            reason=reason,
            summary="Tocsin's state database is failing",
            description=(
                "Tocsin cannot write to its state database: alerts and"
                " notifications wait in memory, and are lost if it stops."
                " Free disk space, or find the process that holds the database"
                " locked; Tocsin's log tells the error."
            ),
        )
        alert = Alert(
            id=_NO_ROW,
            uid=self._uid or "",
            state="resolved" if resolved else "triggered",
            spec=spec,
            value=float(self._streak),
            resolved_at=now if resolved else None,
        )
        transition = Transition(
            id=_NO_ROW,
            alert_id=_NO_ROW,
            from_state="triggered" if resolved else None,
            to_state=alert.state,
            at=now,
            actor="tocsin",
            reason=reason,
        )

        return Notification(
            id=_NO_ROW,
            key=f"tocsin-{self._uid}-{action}-{channel}",
            channel=channel,
            event="resolve" if resolved else "trigger",
            alert=alert,
            transition=transition,
            attempts=0,
            created_at=now,
        )
