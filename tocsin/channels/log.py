"""The log channel: each notification as one structured line in Tocsin's log.

Useful as a channel of last resort (it cannot fail while the process runs) and
to try rules out before any destination is set up.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from tocsin.channels.base import ChannelContext, DeliverySettings
from tocsin.channels.payload import finite
from tocsin.config import LogChannelConfig
from tocsin.state.models import Notification

log = logging.getLogger(__name__)

_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_STATUS = {"trigger": "firing", "resolve": "resolved", "acknowledge": "acknowledged"}


class LogChannel(DeliverySettings):
    """Write notifications to the log at the configured level."""

    def __init__(
        self,
        config: LogChannelConfig,
        secrets: Mapping[str, str] | None = None,
        context: ChannelContext | None = None,
    ) -> None:
        super().__init__(config)
        self.level = _LEVELS[config.level]

    async def send(self, notification: Notification) -> None:
        """Log one notification; never raises :class:`DeliveryError`."""
        alert = notification.alert
        spec = alert.spec
        status = _STATUS[notification.event]
        # A grouped message says why it was sent; one about a single
        # transition, why that transition happened.
        reason = notification.reason or notification.transition.reason
        count = len(notification.alerts) or 1
        alerts = f"{count} alert" if count == 1 else f"{count} alerts"
        told = f"{reason}; {alerts}" if notification.group_key else reason
        log.log(
            self.level,
            "alert %s: %s %s (%s)",
            status,
            spec.rule,
            spec.series or "-",
            told,
            extra={
                "event": notification.event,
                "channel": self.name,
                "alert": alert.uid,
                "rule": spec.rule,
                "series": spec.series,
                "transition": notification.transition.id,
                "notification": notification.key,
                "status": status,
                "reason": reason,
                "group": notification.group_key or None,
                "alerts": count,
                "detail": {
                    "severity": spec.severity,
                    "labels": spec.labels,
                    "value": finite(alert.value),
                    "threshold": finite(spec.threshold),
                    "range": spec.range or None,
                    "summary": spec.summary,
                    "runbook": spec.runbook,
                },
            },
        )
