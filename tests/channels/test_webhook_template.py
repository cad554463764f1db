"""Webhook bodies from a template: every value a JSON value, hostile text kept
inside its string, sandbox refusals, and templates checked with the config."""

from __future__ import annotations

import math

import orjson
import pytest

from tests.channels.test_payload import notification
from tests.channels.test_webhook import webhook
from tocsin.channels.webhook_template import (
    compile_template,
    render_body,
    sample_notifications,
)
from tocsin.config import parse
from tocsin.daemon.api_values import check_new_channel
from tocsin.errors import ConfigError, DeliveryError, InvalidValueError
from tocsin.templates import TemplateProblem

EVERY_NAME = """{
  "name": {{ alert.name }}, "uid": {{ alert.uid }}, "value": {{ alert.value }},
  "series": [{% for a in alerts %}{{ a.series }}{% if not loop.last %},
             {% endif %}{% endfor %}],
  "status": {{ status }}, "event": {{ event }}, "reason": {{ reason }},
  "group": {{ group_labels }}, "key": {{ idempotency_key }},
  "version": {{ version }}, "labels": {{ alert.labels }}
}"""

HOSTILE = {
    "a quote": 'say "hi"',
    "a newline": "line one\nline two\r\n",
    "a field injection": '"}, "x": "',
    "a backslash": "C:\\path\\",
    "a closing brace": "}}{{",
    "markup": "</script><b>&amp;",
    "control characters": "bell\x07 nul\x00 tab\t",
    "non-ASCII": "GPU temp > 90°C – modèle ü 🔥",
}


def rendered(template: str, sent) -> object:
    return orjson.loads(render_body(compile_template(template), sent))


def config_with(template: str, content_type: str = "application/json") -> str:
    return f"""
[[channels]]
name = "hook"
type = "webhook"
url = "https://example.com/hook"
content_type = {orjson.dumps(content_type).decode()}
template = '''{template}'''
"""


def test_every_name_renders_as_the_notification_says():
    sent = notification()

    body = rendered(EVERY_NAME, sent)

    assert body == {
        "name": sent.alert.spec.summary,
        "uid": sent.alert.uid,
        "value": sent.alert.value,
        "series": [sent.alert.spec.series],
        "status": "firing",
        "event": sent.event,
        "reason": sent.transition.reason,
        "group": sent.group_labels,
        "key": sent.key,
        "version": "1",
        "labels": sent.alert.spec.labels,
    }


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_hostile_value_stays_inside_its_string(text):
    sent = notification(summary=text, series=text, labels={"model": text})
    template = '{"name": {{ alert.name }}, "joined": {{ "<" ~ alert.series ~ ">" }}}'

    body = rendered(template, sent)

    assert body == {"name": text, "joined": f"<{text}>"}
    assert rendered('{"labels": {{ alert.labels }}}', sent) == {
        "labels": {"model": text}
    }


def test_a_non_finite_number_is_written_null():
    # Computed at render time from the alert, so nothing is folded beforehand.
    huge = "alert.window_seconds * 1e308"
    template = (
        f'{{"plus": {{{{ {huge} }}}}, "minus": {{{{ -{huge} }}}},'
        f' "neither": {{{{ {huge} - {huge} }}}}, "nested": {{{{ [{huge}] }}}}}}'
    )

    text = render_body(compile_template(template), notification())

    assert orjson.loads(text) == {
        "plus": None,
        "minus": None,
        "neither": None,
        "nested": [None],
    }
    assert "nan" not in text.lower() and "inf" not in text.lower()


def test_a_non_finite_value_of_the_alert_is_null():
    sent = notification(threshold=math.nan, value=math.inf)

    assert rendered('{"t": {{ alert.threshold }}}', sent) == {"t": None}


def test_numbers_booleans_and_none_keep_their_json_types():
    body = rendered(
        '[{{ 3 }}, {{ 2.5 }}, {{ true }}, {{ none }}, {{ [1, "a"] }}, {{ "3" }}]',
        notification(),
    )

    assert body == [3, 2.5, True, None, [1, "a"], "3"]


def test_text_outside_the_braces_is_written_as_is():
    assert render_body(compile_template("x = {{ 1 }};\n"), notification()) == (
        "x = 1;\n"
    )


SANDBOX_REFUSALS = {
    "a dunder attribute": "{{ alert.__class__ }}",
    "a mutating method": "{{ alerts.append(1) }}",
    "a huge repetition": '{{ "x" * 100000 }}',
    "a huge power": "{{ 10 ** 100000 }}",
    "a function": "{{ lipsum }}",
    "a loop object": "{% for a in alerts %}{{ loop }}{% endfor %}",
}


@pytest.mark.parametrize(
    "template", SANDBOX_REFUSALS.values(), ids=SANDBOX_REFUSALS.keys()
)
def test_the_sandbox_refuses_and_the_config_names_the_template(template):
    with pytest.raises(ConfigError) as raised:
        parse(config_with(template), "tocsin.toml")

    assert str(raised.value).startswith("tocsin.toml: channels[0].template: ")


BAD_TEMPLATES = {
    "an unknown name": ("{{ alertz.name }}", "unknown name 'alertz'"),
    "an unknown name in a branch not taken": (
        '{% if event == "never" %}{{ nope }}{% endif %}{}',
        "unknown name 'nope'",
    ),
    "an unknown attribute": ('{"n": {{ alert.nmae }}}', "no attribute 'nmae'"),
    "a syntax error": ("{% if %}", "Expected an expression"),
    "a division by zero": ("{{ alert.value / 0 }}", "ZeroDivisionError"),
    # Jinja2 folds the constant and writes it as a bare name in its code.
    "a NaN constant in a sum": ('{{ alert.value + ("nan" | float) }}', "nan"),
    "quotes around a value": (
        '{"n": "{{ alert.name }}"}',
        "the output is not JSON",
    ),
    "a trailing comma": ('{"n": {{ alert.name }},}', "the output is not JSON"),
    "a resolve-only mistake": (
        '{% if event == "resolve" %}{"n": {% else %}{"n": 1}{% endif %}',
        "the output is not JSON",
    ),
}


@pytest.mark.parametrize(
    ("template", "message"), BAD_TEMPLATES.values(), ids=BAD_TEMPLATES.keys()
)
def test_a_bad_template_is_a_config_error_naming_the_key(template, message):
    with pytest.raises(ConfigError) as raised:
        parse(config_with(template), "tocsin.toml")

    assert raised.value.path == "tocsin.toml"
    assert raised.value.key == "channels[0].template"
    assert message in raised.value.detail


def test_a_json_content_type_with_parameters_or_a_suffix_is_checked():
    for content_type in ("application/json; charset=utf-8", "application/vnd.x+json"):
        with pytest.raises(ConfigError, match="not JSON"):
            parse(config_with("not json {{ 1 }}", content_type), "tocsin.toml")


def test_a_template_for_another_content_type_need_not_be_json():
    config = parse(config_with("alert {{ alert.name }}", "text/plain"), "t.toml")

    assert config.channels[0].template == "alert {{ alert.name }}"


def test_the_api_refuses_a_bad_template_with_the_same_check():
    channel = {
        "type": "webhook",
        "name": "api-hook",
        "url": "https://example.com/hook",
        "template": '{"n": "{{ alert.name }}"}',
    }

    with pytest.raises(InvalidValueError) as raised:
        check_new_channel(channel)

    assert raised.value.key == "channel.template"
    assert "not JSON" in raised.value.detail


def test_every_sample_renders_with_a_template_that_uses_everything():
    template = compile_template(EVERY_NAME)

    events = [sample.event for sample in sample_notifications()]
    for sample in sample_notifications():
        orjson.loads(render_body(template, sample))
    assert set(events) == {"trigger", "resolve"}
    assert any(len(sample.alerts) > 1 for sample in sample_notifications())


def test_a_compile_error_names_the_line():
    with pytest.raises(TemplateProblem, match=r"\(line 3\)"):
        compile_template('{\n"a": 1,\n"b": {{ }}\n}')


async def test_the_channel_sends_the_rendered_body_with_its_method_and_type(
    hook, session
):
    sent = notification()
    channel = webhook(
        hook.url,
        session,
        template='{"text": {{ alert.name ~ " is " ~ status }}}',
        method="PUT",
        content_type="application/vnd.alerts+json",
        headers={"X-Team": "ml"},
    )

    await channel.send(sent)

    [request] = hook.requests
    assert request.method == "PUT"
    assert request.headers["Content-Type"] == "application/vnd.alerts+json"
    assert request.headers["X-Team"] == "ml"
    assert orjson.loads(request.body) == {
        "text": f"{sent.alert.spec.summary} is firing"
    }


async def test_a_template_that_fails_on_one_notification_is_a_final_error(
    hook, session
):
    # The samples have a "model" label; this alert has none.
    channel = webhook(hook.url, session, template='{"m": {{ alert.labels.model }}}')
    sent = notification(labels={"team": "ml"})

    with pytest.raises(DeliveryError) as raised:
        await channel.send(sent)

    assert raised.value.retryable is False
    assert "template failed" in str(raised.value)
    assert hook.url not in str(raised.value)
    assert hook.requests == []
