"""Slack messages in Block Kit: a notification, or an alert as it is now.

A message is a header (the headline, its severity), then the alerts, then a
context line saying why it was sent and when. Each alert shown in full has
a section with its value, condition and links, and, while something can
still be done about it, an actions block with the buttons that do it:
Acknowledge, Snooze and Resolve, each carrying the alert's uid.

A grouped message shows its :data:`DETAILED_ALERTS` worst alerts that way,
each with its own buttons, so that a click always names one alert, and lists
the rest in one section that ends with a visible "+N more" when they do not
fit. Slack refuses the whole message (``invalid_blocks``) when one limit is
passed, so every text is cut to its limit here, and the number of blocks is
bounded by construction (at most 13 of the 50 allowed, 18 once every
detailed alert of a group was acted on).

Text in ``mrkdwn`` has ``&``, ``<`` and ``>`` escaped, so that a label value
cannot turn into a link or an ``@channel`` mention.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

from tocsin.channels.payload import format_duration, iso_utc
from tocsin.channels.sample import TEST_RULE
from tocsin.channels.summary import (
    ELLIPSIS,
    alert_line,
    alerts_of,
    condition,
    fit_lines,
    headline,
    value_text,
)
from tocsin.state.lifecycle import MANUAL_MOVES, path_to
from tocsin.state.models import OPEN_STATES, Alert, Notification

#: Slack's limits on a message, in characters and elements.
MAX_BLOCKS = 50
HEADER_LIMIT = 150
SECTION_LIMIT = 3000
FIELD_LIMIT = 2000
MAX_FIELDS = 10
TEXT_LIMIT = 4000
BUTTON_TEXT_LIMIT = 75
BUTTON_VALUE_LIMIT = 2000

#: Alerts of a grouped message shown each with its own section and buttons.
DETAILED_ALERTS = 5

#: The ``action_id`` of each button; the inbound handler acts on these.
ACKNOWLEDGE = "tocsin.acknowledge"
SNOOZE = "tocsin.snooze"
RESOLVE = "tocsin.resolve"

#: The ``block_id`` of a grouped message's header, and the prefixes of an
#: alert's actions block and of the note left where its buttons were.
GROUP_ID = "tocsin.group"
ACTIONS_ID = "tocsin.actions."
NOTE_ID = "tocsin.note."

#: Turns an alert's uid into its link in Tocsin, or ``None`` without one.
AlertUrl = Callable[[str], str | None]


def escape(text: str) -> str:
    """Escape the three characters ``mrkdwn`` gives a meaning to."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def cut(text: str, limit: int) -> str:
    """Cut already escaped ``mrkdwn`` to ``limit`` characters, never leaving
    half an entity (``&am``) before the mark of the cut."""
    if len(text) <= limit:
        return text
    kept = text[: limit - len(ELLIPSIS)]
    amp = kept.rfind("&")
    if amp != -1 and ";" not in kept[amp:]:
        kept = kept[:amp]

    return kept + ELLIPSIS


def link(url: str, label: str) -> str:
    """Write a ``mrkdwn`` link, or just the label for anything but http(s).

    Characters that would end the link early are percent-encoded.
    """
    if not url.startswith(("https://", "http://")):
        return escape(label)
    safe = quote(url, safe=":/?#[]@!$&'()*+,;=%~")

    return f"<{escape(safe)}|{escape(label)}>"


def slack_date(timestamp: float) -> str:
    """A time Slack shows in each reader's own zone, UTC for old clients."""
    fallback = iso_utc(timestamp) or ""
    return f"<!date^{int(timestamp)}^{{date_short_pretty}} {{time}}|{fallback}>"


class MessageBuilder:
    """Lays notifications and alerts out as Slack messages.

    :param alert_url: the link to an alert in Tocsin.
    :param buttons: whether messages carry the action buttons.
    :param snooze: seconds the Snooze button silences an alert for.
    """

    def __init__(self, alert_url: AlertUrl, *, buttons: bool, snooze: float) -> None:
        self._alert_url = alert_url
        self._buttons = buttons
        self._snooze = snooze

    def notification(self, notification: Notification) -> dict:
        """Return the message of one notification, its worst alert first."""
        alerts = alerts_of(notification)
        title = headline(notification)
        reason = notification.reason or notification.transition.reason
        context = f"{escape(reason)} · {slack_date(notification.transition.at)}"

        return self._message(title, alerts, context)

    def alert(self, alert: Alert, *, note: str, at: float) -> dict:
        """Return the message of one alert in its current state.

        :param note: what happened to it (``Acknowledged by slack:alice``),
            shown with the time ``at``.
        """
        spec = alert.spec
        where = f" ({spec.series})" if spec.series else ""
        title = f"[{alert.state.upper()}] {spec.summary or spec.rule}{where}"
        context = f"{escape(note)} · {slack_date(at)}"

        return self._message(title, [alert], context)

    def redraw(
        self, original: dict | None, alert: Alert, *, note: str, at: float
    ) -> dict:
        """Return ``original`` with what changed for ``alert`` shown.

        A message about one alert is drawn anew (:meth:`alert`). In a grouped
        message only that alert's buttons change: they give way to ``note``
        and the buttons of the moves still open to it, and the other alerts'
        stay as they were.

        :param original: the message as Slack gives it back with a click.
        """
        blocks = (original or {}).get("blocks") or []
        if not blocks or blocks[0].get("block_id") != GROUP_ID:
            return self.alert(alert, note=note, at=at)
        noted = NOTE_ID + alert.uid
        kept = [block for block in blocks if block.get("block_id") != noted]
        ids = [block.get("block_id") for block in kept]
        if ACTIONS_ID + alert.uid not in ids:
            return self.alert(alert, note=note, at=at)
        where = ids.index(ACTIONS_ID + alert.uid)
        context = _context(f"{escape(note)} · {slack_date(at)}", block_id=noted)
        kept[where : where + 1] = [context, *self._actions(alert)]

        return {"text": original.get("text") or note, "blocks": kept}

    def _message(self, title: str, alerts: list[Alert], context: str) -> dict:
        worst = alerts[0]
        # The severity goes after the headline but is never cut off by it.
        suffix = f" · {worst.spec.severity}"
        room = HEADER_LIMIT - len(suffix)
        header = title if len(title) <= room else title[: room - 1] + ELLIPSIS
        blocks: list[dict] = [_header(header + suffix)]
        if len(alerts) > 1:
            blocks[0]["block_id"] = GROUP_ID
        if len(alerts) == 1:
            blocks.append(self._alert_section(worst, full=True))
            blocks.extend(self._actions(worst))
        else:
            for alert in alerts[:DETAILED_ALERTS]:
                blocks.append(self._alert_section(alert, full=False))
                blocks.extend(self._actions(alert))
            rest = [escape(alert_line(alert)) for alert in alerts[DETAILED_ALERTS:]]
            if rest:
                listed = fit_lines(rest, SECTION_LIMIT - len(ELLIPSIS))
                blocks.append(_section(cut(listed, SECTION_LIMIT)))
        blocks.append(_context(context))
        assert len(blocks) <= MAX_BLOCKS

        return {"text": _fallback(title, alerts), "blocks": blocks}

    def _alert_section(self, alert: Alert, *, full: bool) -> dict:
        """One alert: its name (linked to Tocsin), what it measured, links;
        for a message about one alert, its facts as fields too."""
        spec = alert.spec
        url = self._alert_url(alert.uid)
        name = (spec.summary or spec.rule) if full else (spec.series or spec.rule)
        title = link(url, name) if url else escape(name)
        lines = [f"*{title}*"]
        if full:
            if spec.description:
                lines.append(escape(spec.description))
        else:
            state = "" if alert.state in OPEN_STATES else f" {alert.state}"
            measured = f"{value_text(alert.value)} ({condition(alert)})"
            lines.append(escape(f"{spec.severity}{state}: {measured}"))
        links = []
        if spec.runbook:
            links.append(link(spec.runbook, "Runbook"))
        if url:
            links.append(link(url, "Alert in Tocsin"))
        if links:
            lines.append(" · ".join(links))
        section = _section(cut("\n".join(lines), SECTION_LIMIT))
        if full:
            section["fields"] = _fields(alert)

        return section

    def _actions(self, alert: Alert) -> list[dict]:
        """The actions block of an alert: the buttons of the moves still open
        to it, or nothing."""
        # A test notification's alert is in no database: nothing to act on.
        is_test = alert.spec.rule == TEST_RULE
        if not self._buttons or is_test or alert.state not in OPEN_STATES:
            return []
        buttons = []
        if "acknowledged" in MANUAL_MOVES[alert.state]:
            buttons.append(_button(ACKNOWLEDGE, "Acknowledge", alert.uid, "primary"))
        snooze = f"Snooze {format_duration(self._snooze)}"
        buttons.append(_button(SNOOZE, snooze, alert.uid))
        if path_to(alert.state, "resolved"):
            buttons.append(_button(RESOLVE, "Resolve", alert.uid, "danger"))

        block_id = ACTIONS_ID + alert.uid
        return [{"type": "actions", "block_id": block_id, "elements": buttons}]


def _header(text: str) -> dict:
    text = text if len(text) <= HEADER_LIMIT else text[: HEADER_LIMIT - 1] + ELLIPSIS
    return {"type": "header", "text": {"type": "plain_text", "text": text}}


def _section(text: str) -> dict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _context(text: str, block_id: str = "") -> dict:
    element = {"type": "mrkdwn", "text": cut(text, SECTION_LIMIT)}
    block = {"type": "context", "elements": [element]}
    if block_id:
        block["block_id"] = block_id

    return block


def _fields(alert: Alert) -> list[dict]:
    spec = alert.spec
    facts = [
        ("Severity", spec.severity),
        ("State", alert.state),
        ("Value", value_text(alert.value)),
        ("Condition", condition(alert)),
        ("Series", spec.series or spec.rule),
    ]
    fields = [
        {"type": "mrkdwn", "text": cut(f"*{name}*\n{escape(value)}", FIELD_LIMIT)}
        for name, value in facts
    ]
    fields.append({"type": "mrkdwn", "text": f"*Fired*\n{slack_date(spec.fired_at)}"})

    return fields[:MAX_FIELDS]


def _button(action_id: str, text: str, uid: str, style: str = "") -> dict:
    button = {
        "type": "button",
        "action_id": action_id,
        "text": {"type": "plain_text", "text": text[:BUTTON_TEXT_LIMIT]},
        "value": uid[:BUTTON_VALUE_LIMIT],
    }
    if style:
        button["style"] = style

    return button


def _fallback(title: str, alerts: list[Alert]) -> str:
    """The message's ``text``: what notifications and old clients show."""
    head = cut(escape(title), TEXT_LIMIT // 2)
    lines = [escape(alert_line(alert)) for alert in alerts]
    listed = fit_lines(lines, TEXT_LIMIT - len(head) - 1 - len(ELLIPSIS))

    return cut(f"{head}\n{listed}", TEXT_LIMIT)
