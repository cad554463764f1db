"""The words of a notification, shared by every destination that shows text.

Each destination lays the same facts out in its own format (Block Kit, an
Adaptive Card, an email, a PagerDuty summary), and each has its own size
limits. What they share lives here: which alerts come first (the worst), the
one-line headline, one line per alert, and fitting a list into a budget with a
visible "+N more" rather than a silent cut.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from tocsin.channels.payload import format_duration
from tocsin.state.models import OPEN_STATES, Alert, Notification

#: Severities from the worst down.
SEVERITY_ORDER = ("critical", "high", "warning", "medium", "low", "info")
_RANK = {severity: rank for rank, severity in enumerate(SEVERITY_ORDER)}

_VERB = {"trigger": "firing", "resolve": "resolved", "acknowledge": "acknowledged"}

#: The mark that ends a cut text.
ELLIPSIS = "…"


def alerts_of(notification: Notification) -> list[Alert]:
    """Return the notification's alerts, the worst first.

    Firing before resolved, then by severity, then by how far past its
    threshold each is, then by series, so that a list cut short still shows
    what matters most.
    """
    alerts = notification.alerts or [notification.alert]
    return sorted(alerts, key=_badness)


def _badness(alert: Alert) -> tuple:
    spec = alert.spec
    firing = alert.state in OPEN_STATES
    return (
        not firing,
        _RANK.get(spec.severity, len(_RANK)),
        -overshoot(alert),
        spec.series,
    )


def overshoot(alert: Alert) -> float:
    """Return how far the alert's value is past its threshold, relative to
    the threshold; 0 when either is unknown."""
    value, threshold = alert.value, alert.spec.threshold
    if value is None or threshold is None:
        return 0.0
    if not (math.isfinite(value) and math.isfinite(threshold)):
        return 0.0
    return abs(value - threshold) / max(abs(threshold), 1e-12)


def status_word(notification: Notification) -> str:
    """``firing``, ``resolved`` or ``acknowledged``."""
    return _VERB[notification.event]


def headline(notification: Notification) -> str:
    """One line saying what happened: ``[FIRING:3] drift (model=a)``."""
    alerts = notification.alerts or [notification.alert]
    alert = notification.alert
    name = alert.spec.summary or alert.spec.rule
    word = status_word(notification).upper()
    if len(alerts) > 1:
        firing = sum(1 for a in alerts if a.state in OPEN_STATES)
        count = firing if notification.event == "trigger" else len(alerts)
        return f"[{word}:{count}] {alert.spec.rule}"
    where = f" ({alert.spec.series})" if alert.spec.series else ""
    return f"[{word}] {name}{where}"


def alert_status(notification: Notification, alert: Alert) -> str:
    """What the notification says of one of its alerts: ``firing``,
    ``resolved`` or ``acknowledged``.

    A grouped message may hold alerts that resolved beside firing ones, so
    the alert's own state decides, except for an acknowledgement.
    """
    if notification.event == "acknowledge":
        return _VERB["acknowledge"]
    return "firing" if alert.state in OPEN_STATES else "resolved"


def alert_headline(notification: Notification, alert: Alert) -> str:
    """One line about one alert of the notification:
    ``[RESOLVED] Drift on model a (model=a)``."""
    spec = alert.spec
    word = alert_status(notification, alert).upper()
    where = f" ({spec.series})" if spec.series else ""
    return f"[{word}] {spec.summary or spec.rule}{where}"


def value_text(value: float | None) -> str:
    """A value as people read it: ``0.4312``, ``1.2e+09``, ``n/a``."""
    if value is None:
        return "n/a"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.6g}"


def condition(alert: Alert) -> str:
    """What was compared: ``max(model.psi) over 1h > 0.2``."""
    spec = alert.spec
    if spec.range:
        bound = f"{spec.op} [{', '.join(value_text(b) for b in spec.range)}]"
    else:
        bound = f"{spec.op} {value_text(spec.threshold)}"
    window = format_duration(spec.window)
    return f"{spec.aggregation}({spec.metric}) over {window} {bound}"


def alert_line(alert: Alert) -> str:
    """One line per alert: ``critical model=a: 0.43 (max(psi) over 1h > 0.2)``."""
    spec = alert.spec
    series = spec.series or spec.rule
    state = "" if alert.state in OPEN_STATES else " resolved"
    return (
        f"{spec.severity}{state} {series}: {value_text(alert.value)}"
        f" ({condition(alert)})"
    )


def truncate(text: str, limit: int) -> str:
    """Cut ``text`` to at most ``limit`` characters, marking the cut."""
    if len(text) <= limit:
        return text
    if limit <= len(ELLIPSIS):
        return text[:limit]
    return text[: limit - len(ELLIPSIS)] + ELLIPSIS


def truncate_to(text: str, limit: int, size: Callable[[str], int] = len) -> str:
    """Cut ``text`` so that, marked, it measures at most ``limit`` by ``size``.

    A destination that counts bytes, or JSON with its escapes, sees a text
    grow past its character count (a quote is two bytes escaped, a control
    character six); cutting characters to ``limit`` would not be enough.
    """
    if size(text) <= limit:
        return text
    if size is len:
        return truncate(text, limit)
    # The longest prefix that fits with its mark: measures only grow with
    # the prefix, so a binary search finds it.
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if size(text[:middle] + ELLIPSIS) <= limit:
            low = middle
        else:
            high = middle - 1
    kept = text[:low] + ELLIPSIS

    return kept if size(kept) <= limit else ""


def more_marker(count: int) -> str:
    """The line that stands for ``count`` items left out."""
    return f"+{count} more"


def fit_lines(
    lines: Sequence[str],
    limit: int,
    *,
    separator: str = "\n",
    size: Callable[[str], int] = len,
) -> str:
    """Join as many of ``lines`` as fit in ``limit``, in order, and end with
    ``+N more`` when some are left out.

    A single line longer than the whole budget is cut (and marked) rather
    than dropped, so the first, worst item is always shown.

    :param size: how a destination measures text (characters by default;
        bytes for one that limits bytes).
    """
    kept: list[str] = []
    used = 0
    for index, line in enumerate(lines):
        left = len(lines) - index - 1
        # Room for this line, and for the marker if more would follow.
        reserve = size(separator + more_marker(left)) if left else 0
        cost = size(line) + (size(separator) if kept else 0)
        if used + cost + reserve <= limit:
            kept.append(line)
            used += cost
            continue
        if not kept:
            room = limit - size(separator + more_marker(len(lines) - 1))
            kept.append(truncate_to(line, max(room, 1), size))
        omitted = len(lines) - len(kept)
        if omitted:
            kept.append(more_marker(omitted))
        break
    return separator.join(kept)
