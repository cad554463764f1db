"""Notifications to hand a channel: one alert, or a group of many."""

from __future__ import annotations

from tests.state.test_alerts import T0, make_spec
from tocsin.state.models import Alert, Notification, Transition

#: Severities a group cycles through, so its order is not its worst-first order.
SEVERITIES = ("warning", "critical", "low", "high")


def alert(number: int, *, severity: str = "high", state: str = "triggered", **spec):
    """Alert ``number`` of rule ``drift``, on series ``model=mNNN``."""
    fields = {
        "series": f"model=m{number:03d}",
        "labels": {"model": f"m{number:03d}", "team": "ml"},
        "severity": severity,
        "summary": "",
        **spec,
    }
    return Alert(
        id=100 + number,
        uid=f"{number:032x}",
        state=state,
        spec=make_spec(**fields),
        value=fields.get("value", 0.31),
        resolved_at=T0 + 60 if state == "resolved" else None,
    )


def grouped(
    alerts: list[Alert], *, event: str = "trigger", key: str = "g"
) -> Notification:
    """A grouped message about ``alerts``, the first being its ``alert``."""
    first = alerts[0]
    transition = Transition(
        id=500,
        alert_id=first.id,
        from_state=None,
        to_state=first.state,
        at=T0,
        actor="engine",
        reason=first.spec.reason,
    )
    return Notification(
        id=9,
        key=f"tocsin-group-{key}",
        channel="ops",
        event=event,
        alert=first,
        transition=transition,
        attempts=0,
        created_at=T0,
        group_key="rule=drift",
        group_labels={"rule": "drift"},
        reason="new alerts",
        alerts=alerts,
    )


def big_group(count: int = 200, *, name_length: int = 60) -> Notification:
    """A group of ``count`` firing alerts with long series names, worst last."""
    padding = "x" * name_length
    alerts = [
        alert(
            number,
            severity=SEVERITIES[number % len(SEVERITIES)],
            series=f"model=m{number:03d},pipeline={padding}",
            value=0.2 + number / 1000,
        )
        for number in range(count)
    ]
    return grouped(alerts)
