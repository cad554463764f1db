"""Alert texts: plain text, rendering, refused names and the sandbox."""

from __future__ import annotations

import pytest

from tocsin.templates import MAX_LENGTH, TemplateProblem, context, render

VARIABLES = context(
    rule="drift",
    metric="model.drift.psi",
    severity="high",
    series="model=fraud_v3",
    labels={"model": "fraud_v3", "team": "ml"},
    value=0.31234,
    threshold=0.2,
    op=">",
    aggregation="avg",
    window="5m",
)

RENDERED = {
    "plain text": ("Prediction drift", "Prediction drift"),
    "plain text with braces": ("a {b} c", "a {b} c"),
    "a label": ("Drift on {{ labels.model }}", "Drift on fraud_v3"),
    "a label by key": ("{{ labels['team'] }}", "ml"),
    "a filter": ("{{ value | round(2) }}", "0.31"),
    "a condition": (
        "{% if value > threshold %}over{% else %}under{% endif %}",
        "over",
    ),
    "every name": (
        "{{ rule }} {{ metric }} {{ severity }} {{ series }} {{ op }} "
        "{{ aggregation }} {{ window }}",
        "drift model.drift.psi high model=fraud_v3 > avg 5m",
    ),
    "no escaping": ("{{ '<b>&' }}", "<b>&"),
}


@pytest.mark.parametrize(("text", "expected"), RENDERED.values(), ids=list(RENDERED))
def test_texts_render(text, expected):
    assert render(text, VARIABLES) == expected


REFUSED = {
    "unknown name": ("{{ model }}", "'model' is undefined"),
    "unknown label": ("{{ labels.region }}", "'dict object' has no attribute 'region'"),
    "syntax": ("{{ labels.model ", "unexpected end of template"),
    "unsafe attribute": (
        "{{ labels.__class__ }}",
        "'__class__' of 'dict' object is unsafe",
    ),
    "mutation": ("{{ labels.clear() }}", "unsafe"),
    "bad arithmetic": ("{{ value / 0 }}", "division by zero"),
    "huge repetition": ("{{ 'x' * 10000000000 }}", "too long"),
    "huge power": ("{{ 10 ** 100000000 }}", "exponent too large"),
}


@pytest.mark.parametrize(("text", "message"), REFUSED.values(), ids=list(REFUSED))
def test_faulty_texts_are_refused_with_a_reason(text, message):
    with pytest.raises(TemplateProblem, match=message.replace("(", r"\(")):
        render(text, VARIABLES)


def test_a_rendered_text_is_bounded():
    text = "{% for _ in range(100) %}{{ labels.model * 50 }}{% endfor %}"
    rendered = render(text, VARIABLES)
    assert len(rendered) == MAX_LENGTH
    assert rendered.endswith("…")
