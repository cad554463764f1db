"""The email a notification becomes: text and HTML, and headers that thread.

The message is built with the standard library's :class:`EmailMessage` under
the SMTP policy, so a Subject in any language is RFC 2047 encoded by the
library, never by hand, and both bodies are UTF-8 in quoted-printable, which
every server relays (no 8BITMIME needed).

Every attempt of a notification builds the same message: its ``Message-ID``
comes from the notification's key and its ``Date`` from when it was queued,
so a server or a reader that sees a retry can tell it is the same mail.

Threading: an alert's first mail to a channel (the trigger of the alert's
creation) has the alert's thread id as its ``Message-ID``; every later mail
about it (resolve, escalation, a grouped message) names that id in
``In-Reply-To`` and ``References``, so mail readers show one alert's mails
as one conversation.
"""

from __future__ import annotations

import email.policy
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime

import jinja2

from tocsin.channels.grouping import FIRST
from tocsin.channels.payload import iso_utc
from tocsin.channels.summary import (
    alert_line,
    alerts_of,
    condition,
    fit_lines,
    headline,
    truncate,
    value_text,
)
from tocsin.state.models import Alert, Notification

#: Longest Subject, in characters; a longer headline is cut and marked.
SUBJECT_LIMIT = 200
#: Characters of alert lines in one body before the rest is "+N more".
LIST_LIMIT = 20_000
#: Thread ids named in ``References`` at most (a grouped mail names one per
#: alert, worst first).
REFERENCES_LIMIT = 20

_POLICY = email.policy.SMTP


def address_problem(text: str) -> str | None:
    """Say what is wrong with one address (``Name <addr>`` or ``addr``), or
    return ``None`` if it is usable."""
    if any(ord(char) < 32 or char == "\x7f" for char in text):
        return "the address holds a line break or another control character"
    try:
        header = EmailMessage(policy=_POLICY)
        header["To"] = text
        parsed = header["To"]
        addresses = parsed.addresses
    except (ValueError, IndexError, TypeError):
        return f"not an email address: {text!r}"
    if len(addresses) != 1 or parsed.defects:
        return f"expected one email address, got {text!r}"
    address = addresses[0]
    if not address.username or not address.domain:
        return f"expected an address like name@example.com, got {text!r}"
    if not address.addr_spec.isascii():
        return f"the address must be ASCII (display names may be any text): {text!r}"

    return None


def one_line(text: str) -> str:
    """Collapse every run of white space and control characters to a space.

    A header cannot hold a line break (the library refuses it, and a mail
    server would read what follows as another header), and a summary
    rendered from labels may hold one.
    """
    cleaned = "".join(
        " " if ord(char) < 32 or char == "\x7f" else char for char in text
    )
    return " ".join(cleaned.split())


def sender_domain(sender: str) -> str:
    """Return the domain of the From address, which ends every Message-ID."""
    header = EmailMessage(policy=_POLICY)
    header["From"] = sender

    return header["From"].addresses[0].domain


def message_id(token: str, domain: str) -> str:
    """Return ``<token@domain>`` with the token made a valid id.

    Keys hold letters, digits, ``_``, ``-`` and ``.``; a dot is written
    ``=2E`` (``=`` never occurs in a key), since two dots in a row or one at
    the end would make an invalid id, and an escape rather than a plain
    replacement keeps two channels' ids apart.
    """
    return f"<{token.replace('.', '=2E')}@{domain}>"


def thread_id(alert: Alert, channel: str, domain: str) -> str:
    """Return the id of the thread of one alert's mails to one channel."""
    return message_id(f"tocsin-{alert.uid}-{channel}", domain)


def opens_thread(notification: Notification) -> bool:
    """Tell whether this is the mail that starts its alert's thread: the
    trigger of the alert's creation, about that alert alone, and (for a
    group's message) the group's first, not a repeat that would carry the
    same ``Message-ID`` again."""
    first_of_group = not notification.group_key or notification.reason == FIRST
    return (
        notification.event == "trigger"
        and len(notification.alerts) <= 1
        and first_of_group
        and notification.transition.from_state is None
    )


def build_message(
    notification: Notification,
    *,
    sender: str,
    to: Sequence[str],
    alert_url: Callable[[str], str | None],
) -> EmailMessage:
    """Build the mail of one notification.

    :param alert_url: the link to an alert in Tocsin's API, or ``None``.
    """
    domain = sender_domain(sender)
    channel = notification.channel
    alerts = alerts_of(notification)
    threads = [thread_id(alert, channel, domain) for alert in alerts]

    message = EmailMessage(policy=_POLICY)
    message["Subject"] = truncate(one_line(headline(notification)), SUBJECT_LIMIT)
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Date"] = format_datetime(
        datetime.fromtimestamp(notification.created_at, UTC)
    )
    if opens_thread(notification):
        message["Message-ID"] = thread_id(notification.alert, channel, domain)
    else:
        message["Message-ID"] = message_id(notification.key, domain)
        message["In-Reply-To"] = threads[0]
        message["References"] = " ".join(threads[:REFERENCES_LIMIT])
    # A machine's mail: vacation responders must not answer it (RFC 3834).
    message["Auto-Submitted"] = "auto-generated"

    facts = _facts(notification, alert_url)
    message.set_content(_TEXT.render(facts), charset="utf-8", cte="quoted-printable")
    message.add_alternative(
        _HTML.render(facts), subtype="html", charset="utf-8", cte="quoted-printable"
    )

    return message


def _facts(
    notification: Notification, alert_url: Callable[[str], str | None]
) -> dict[str, object]:
    """Gather what both bodies show."""
    alert = notification.alert
    spec = alert.spec
    lines = [alert_line(each) for each in alerts_of(notification)]
    runbook = spec.runbook
    labels = ", ".join(f"{name}={value}" for name, value in sorted(spec.labels.items()))

    rows = [
        ("Rule", spec.rule),
        ("Series", spec.series),
        ("Severity", spec.severity),
        ("Value", f"{value_text(alert.value)} ({condition(alert)})"),
        ("Reason", notification.reason or notification.transition.reason),
        ("Fired at", iso_utc(spec.fired_at)),
        ("Resolved at", iso_utc(alert.resolved_at)),
        ("Labels", labels),
    ]

    return {
        "headline": headline(notification),
        "lines": fit_lines(lines, LIST_LIMIT).split("\n"),
        "rows": [(name, value) for name, value in rows if value],
        "description": spec.description,
        "runbook": runbook,
        # Only a web link becomes a link: a javascript: or data: runbook
        # would otherwise run in the reader's mail client.
        "runbook_is_link": runbook.startswith(("https://", "http://")),
        "actions": spec.recommended_actions,
        "link": alert_url(alert.uid),
    }


_TEXT_SOURCE = """\
{{ headline }}

{% for line in lines %}{{ line }}
{% endfor %}
{% for name, value in rows %}{{ name }}: {{ value }}
{% endfor %}{% if description %}
{{ description }}
{% endif %}{% if runbook %}
Runbook: {{ runbook }}
{% endif %}{% if actions %}
Recommended actions:
{% for action in actions %}  - {{ action }}
{% endfor %}{% endif %}{% if link %}
Alert: {{ link }}
{% endif %}"""

_HTML_SOURCE = """\
<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{{ headline }}</title></head>
<body>
<h2>{{ headline }}</h2>
<ul>
{% for line in lines %}<li>{{ line }}</li>
{% endfor %}</ul>
<table>
{% for name, value in rows -%}
<tr><th align="left">{{ name }}</th><td>{{ value }}</td></tr>
{% endfor %}</table>
{% if description %}<p>{{ description }}</p>
{% endif %}{% if runbook %}<p>Runbook: {% if runbook_is_link -%}
<a href="{{ runbook }}">{{ runbook }}</a>{% else %}{{ runbook }}{% endif %}</p>
{% endif %}{% if actions %}<p>Recommended actions:</p>
<ul>
{% for action in actions %}<li>{{ action }}</li>
{% endfor %}</ul>
{% endif %}{% if link %}<p><a href="{{ link }}">Open the alert in Tocsin</a></p>
{% endif %}</body></html>
"""

# Tocsin's own templates, not the user's: no sandbox needed. The HTML one
# escapes every value, as a rule name or a label may hold markup.
_TEXT = jinja2.Environment(
    undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True
).from_string(_TEXT_SOURCE)
_HTML = jinja2.Environment(
    undefined=jinja2.StrictUndefined, autoescape=True, keep_trailing_newline=True
).from_string(_HTML_SOURCE)
