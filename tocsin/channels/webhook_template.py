"""Webhook bodies written by the user: a Jinja2 template whose every value is
JSON.

A channel's ``template`` is the request body, rendered per notification in the
same immutable sandbox as alert texts (:class:`tocsin.templates.Sandbox`)::

    template = '{"text": {{ alert.name }}, "value": {{ alert.value }}}'

Whatever a ``{{ ... }}`` yields is written as one JSON value: a string quoted
and escaped, a number as a number, ``None``, NaN and the infinities as
``null``, a dict or a list as JSON. A value therefore cannot end a string
early or add a field, whatever a rule name or a label holds; and the template
is written without quotes around ``{{ ... }}``.

The names a template can use are the top-level fields of Tocsin's own payload
(:func:`tocsin.channels.payload.alert_payload`): ``alert``, ``alerts``,
``status``, ``event``, ``reason``, ``group_labels``, ``group_key``,
``idempotency_key``, ``version``, ``transition``, ``firing`` and ``resolved``.
:func:`check_template` refuses a template that names anything else, or that
does not render (or, for a JSON content type, does not render JSON) for a
sample of every kind of notification the channel can get.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import orjson
from jinja2 import StrictUndefined, Template, TemplateError, Undefined, meta

from tocsin.channels.payload import alert_payload
from tocsin.state.models import Alert, AlertSpec, Notification, Transition
from tocsin.templates import Sandbox, TemplateProblem, describe

#: The names a template may use: the fields of the payload.
NAMES = frozenset(
    (
        "alert",
        "alerts",
        "event",
        "firing",
        "group_key",
        "group_labels",
        "idempotency_key",
        "reason",
        "resolved",
        "status",
        "transition",
        "version",
    )
)


def json_value(value: object) -> str:
    """Write what one ``{{ ... }}`` yielded as one JSON value.

    :raises TemplateProblem: if the value is undefined, or has no JSON form
        (a function, a loop object, an integer beyond 64 bits).
    """
    if isinstance(value, Undefined):
        # Strict: turning it into text raises the "is undefined" error.
        str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "null"
    try:
        # orjson already writes NaN and the infinities inside containers as
        # null; non-string keys (a label map never has them) become strings.
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except orjson.JSONEncodeError:
        what = (
            "an integer beyond 64 bits"
            if isinstance(value, int)
            else f"a value of type {type(value).__name__}"
        )
        raise TemplateProblem(f"{what} cannot be written as JSON") from None


_ENVIRONMENT = Sandbox(
    undefined=StrictUndefined,
    autoescape=False,
    finalize=json_value,
    keep_trailing_newline=True,
)


def is_json(content_type: str) -> bool:
    """Tell whether a content type says the body is JSON (``application/json``
    or a ``+json`` type, with any parameters)."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def compile_template(text: str) -> Template:
    """Compile a webhook template and check the names it uses.

    :raises TemplateProblem: if ``text`` is not a valid template or names
        something a notification does not have.
    """
    try:
        parsed = _ENVIRONMENT.parse(text)
    except TemplateError as error:
        raise TemplateProblem(describe(error)) from None
    used = meta.find_undeclared_variables(parsed)
    unknown = sorted(used - NAMES - set(_ENVIRONMENT.globals))
    if unknown:
        raise TemplateProblem(
            f"unknown name {unknown[0]!r}; a template can use "
            f"{', '.join(sorted(NAMES))}"
        )

    return _ENVIRONMENT.from_string(text)


def render_body(template: Template, notification: Notification) -> str:
    """Render the body of one notification.

    :raises TemplateProblem: if the template fails on this notification (an
        attribute the payload lacks, a value without a JSON form).
    """
    return render_payload(template, alert_payload(notification))


def render_payload(template: Template, payload: Mapping[str, object]) -> str:
    """Render a template with the fields of ``payload``.

    :raises TemplateProblem: as :func:`render_body`.
    """
    try:
        return template.render(payload)
    except TemplateProblem:
        raise
    except TemplateError as error:
        raise TemplateProblem(describe(error)) from None
    except Exception as error:
        # A template is the user's code: whatever it raises (a division by
        # zero, a type mismatch, even Jinja2 writing a NaN constant it folded
        # as a bare name) is a fault of the template, reported as such.
        raise TemplateProblem(f"{type(error).__name__}: {error}") from None


def check_output(body: str) -> None:
    """Check that a rendered body is one JSON document.

    :raises TemplateProblem: if it is not, saying where it breaks.
    """
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise TemplateProblem(
            f"the output is not JSON ({error.msg} at line {error.lineno}, column"
            f" {error.colno}); a {{{{ ... }}}} is already a JSON value, so it"
            " needs no quotes around it"
        ) from None


def check_template(text: str, content_type: str) -> None:
    """Refuse a template that cannot work, before any alert needs it.

    The template is rendered for a sample trigger, a sample resolve and a
    sample grouped message; for a JSON content type each output must parse.

    :raises TemplateProblem: saying what is wrong.
    """
    template = compile_template(text)
    for sample in sample_notifications():
        body = render_body(template, sample)
        if is_json(content_type):
            check_output(body)


def sample_notifications() -> list[Notification]:
    """Return one notification of each kind a webhook receives."""
    firing = _sample_alert(1, "model=a", "triggered", value=0.42)
    resolved = _sample_alert(2, "model=b", "resolved", value=0.05)
    start = Transition(
        id=1,
        alert_id=1,
        from_state=None,
        to_state="triggered",
        at=_SAMPLE_TIME,
        actor="engine",
        reason="avg 0.42 > 0.2",
    )
    end = Transition(
        id=2,
        alert_id=2,
        from_state="triggered",
        to_state="resolved",
        at=_SAMPLE_TIME + 60,
        actor="engine",
        reason="avg 0.05 <= 0.2",
    )
    common = {"id": 1, "channel": "sample", "attempts": 0, "created_at": _SAMPLE_TIME}
    return [
        Notification(
            key="tocsin-sample-1",
            event="trigger",
            alert=firing,
            transition=start,
            **common,
        ),
        Notification(
            key="tocsin-sample-2",
            event="resolve",
            alert=resolved,
            transition=end,
            **common,
        ),
        Notification(
            key="tocsin-g-sample-3",
            event="trigger",
            alert=firing,
            transition=start,
            group_key='{}:{rule="sample"}',
            group_labels={"rule": "sample"},
            reason="first notification",
            alerts=[firing, resolved],
            **common,
        ),
    ]


_SAMPLE_TIME = 1_700_000_000.0


def _sample_alert(id_: int, series: str, state: str, *, value: float) -> Alert:
    spec = AlertSpec(
        rule="sample",
        series=series,
        labels={"model": series.partition("=")[2], "team": "sample"},
        severity="high",
        metric="model.drift.psi",
        aggregation="avg",
        window=300.0,
        op=">",
        threshold=0.2,
        value=0.42,
        samples=10,
        started_at=_SAMPLE_TIME - 30,
        fired_at=_SAMPLE_TIME,
        reason="avg 0.42 > 0.2",
        summary="Sample alert",
        description="A sample alert for checking the template",
        runbook="https://runbooks.example/sample",
        recommended_actions=["look"],
        metadata={"owner": "sample"},
    )
    return Alert(
        id=id_,
        uid=f"{id_:032x}",
        state=state,
        spec=spec,
        value=value,
        resolved_at=_SAMPLE_TIME + 60 if state == "resolved" else None,
    )
