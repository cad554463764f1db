"""Alert texts filled in per alert: a rule's ``summary`` and ``description``.

A text may hold Jinja2 expressions, rendered in Jinja2's immutable sandbox
when the alert fires::

    summary = "Prediction drift on {{ labels.model }}"
    description = "PSI {{ value | round(3) }} is over {{ threshold }}"

The names a text can use are those of :func:`context`: ``rule``, ``metric``,
``severity``, ``series``, ``labels`` (the rule's labels and the series'
``group_by`` labels), ``value``, ``threshold``, ``op``, ``aggregation`` and
``window`` (written like ``5m``). A name or label outside them is an error, so
the configuration check renders every text once against a sample alert and a
typo is refused before it can reach anyone. A text without ``{{``, ``{%`` or
``{#`` is used as written.
"""

from __future__ import annotations

from collections.abc import Mapping

from jinja2 import StrictUndefined, Template, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

#: Longest rendered text kept; a longer one is cut and marked.
MAX_LENGTH = 4096


class Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with ``*`` and ``**`` kept from building huge
    values: ``'x' * 10**10`` would otherwise take the daemon's memory."""

    intercepted_binops = frozenset(("*", "**"))

    def call_binop(self, context, operator, left, right):
        if operator == "**" and isinstance(right, int) and abs(right) > 1024:
            raise TemplateProblem("exponent too large")
        if operator == "*" and _is_sized(left, right):
            raise TemplateProblem("repeated text or list too long")
        return super().call_binop(context, operator, left, right)


def _is_sized(left: object, right: object) -> bool:
    """Tell whether ``left * right`` repeats a sequence beyond MAX_LENGTH."""
    for sequence, times in ((left, right), (right, left)):
        if isinstance(sequence, str | list | tuple) and isinstance(times, int):
            return len(sequence) * times > MAX_LENGTH
    return False


_ENVIRONMENT = Sandbox(
    undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True
)
_MARKS = ("{{", "{%", "{#")


class TemplateProblem(ValueError):
    """Raised when a text does not compile or does not render."""


def is_template(text: str) -> bool:
    """Return whether ``text`` holds Jinja2 markup."""
    return any(mark in text for mark in _MARKS)


def compile_text(text: str) -> Template | None:
    """Compile ``text``; return ``None`` for a text without markup.

    :raises TemplateProblem: if ``text`` is not a valid template.
    """
    if not is_template(text):
        return None
    try:
        return _ENVIRONMENT.from_string(text)
    except TemplateError as error:
        raise TemplateProblem(describe(error)) from None


def render(text: str, variables: Mapping[str, object]) -> str:
    """Return ``text`` filled in with ``variables``.

    :raises TemplateProblem: if ``text`` does not compile, or uses a name or
        an attribute that ``variables`` lack.
    """
    template = compile_text(text)
    if template is None:
        return text
    try:
        rendered = template.render(variables)
    except TemplateProblem:
        raise
    except TemplateError as error:
        raise TemplateProblem(describe(error)) from None
    except (ArithmeticError, TypeError, ValueError) as error:
        raise TemplateProblem(str(error)) from None
    if len(rendered) > MAX_LENGTH:
        rendered = rendered[: MAX_LENGTH - 1] + "…"

    return rendered


def context(
    *,
    rule: str,
    metric: str,
    severity: str,
    series: str,
    labels: Mapping[str, str],
    value: float | None,
    threshold: float | None,
    op: str,
    aggregation: str,
    window: str,
) -> dict[str, object]:
    """Return the names an alert text may use."""
    return {
        "rule": rule,
        "metric": metric,
        "severity": severity,
        "series": series,
        "labels": dict(labels),
        "value": value,
        "threshold": threshold,
        "op": op,
        "aggregation": aggregation,
        "window": window,
    }


def describe(error: TemplateError) -> str:
    """Say what is wrong with a template, and on which line if not the first."""
    line = getattr(error, "lineno", None)
    where = f" (line {line})" if line and line > 1 else ""
    return f"{error.message or type(error).__name__}{where}"
