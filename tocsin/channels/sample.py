"""A sample notification: a clearly labelled test alert, built from the real models.

``tocsin integrations test NAME`` (``POST /api/v1/integrations/{name}/test``)
sends one through the running channel to show that the destination takes
Tocsin's messages, and a config check may render a channel's template against
one to find a mistake before any real alert needs it. Both see exactly what a
real trigger looks like to the channel: an :class:`Alert` with its
:class:`AlertSpec`, the :class:`Transition` that fired it, and the
:class:`Notification` around them.

Everything in it says it is a test: the rule is :data:`TEST_RULE`, the summary
:data:`TEST_SUMMARY`, the severity ``info`` and the label ``tocsin_test``, so
a person paged by one, or a receiver filtering on rules, can tell at once.
"""

from __future__ import annotations

import uuid

from tocsin.state.models import Alert, AlertSpec, Notification, Transition

#: The rule a sample alert names. A configured rule could take the name too,
#: but a sample never reaches the rules engine or the database.
TEST_RULE = "tocsin.test"
TEST_SUMMARY = "Test notification from Tocsin"
#: Ids of rows that were never written: the sample is not in the database.
_NO_ROW = 0


def sample_notification(
    channel: str, now: float, *, uid: str | None = None
) -> Notification:
    """Return a trigger of a test alert addressed to ``channel``, fired at ``now``.

    Each call makes a new alert uid (so a destination that deduplicates does
    not take a second test for the first) and an idempotency key from it.

    :param channel: the integration's name, written into the alert.
    :param now: when the alert fires, POSIX seconds.
    :param uid: the alert's uid instead of a random one, for output that
        must not change from call to call.
    """
    uid = uid or uuid.uuid4().hex
    spec = AlertSpec(
        rule=TEST_RULE,
        series=f"integration={channel}",
        labels={"integration": channel, "tocsin_test": "true"},
        severity="info",
        metric="tocsin.test",
        aggregation="last",
        window=0.0,
        op=">",
        threshold=0.0,
        value=1.0,
        samples=1,
        started_at=now,
        fired_at=now,
        reason="sent by hand to test the integration",
        summary=TEST_SUMMARY,
        description=(
            f"Tocsin sent this to the integration {channel} to check that it"
            " delivers. No alert fired and nothing needs doing."
        ),
    )
    alert = Alert(id=_NO_ROW, uid=uid, state="triggered", spec=spec, value=1.0)
    transition = Transition(
        id=_NO_ROW,
        alert_id=_NO_ROW,
        from_state=None,
        to_state="triggered",
        at=now,
        actor="tocsin",
        reason="test notification",
    )

    return Notification(
        id=_NO_ROW,
        key=f"tocsin-test-{uid}-{channel}",
        channel=channel,
        event="trigger",
        alert=alert,
        transition=transition,
        attempts=0,
        created_at=now,
        reason="test notification",
    )
