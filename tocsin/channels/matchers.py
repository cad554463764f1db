"""Label matchers: ``team="ml"``, ``env!="dev"``, ``model=~"fraud-.*"``.

Routes, inhibitions and silences select alerts with matchers written as
Alertmanager writes them: a label name, an operator and a double-quoted value.
Inside the quotes ``\\"`` is a quote and ``\\\\`` a backslash; any other
backslash is kept as it is, so a regex such as ``=~"gpu\\d+"`` reads as
written. A regex must match the whole value (it is anchored at both ends), and
a label an alert does not have counts as the empty string, so ``env!="prod"``
holds for an alert without ``env``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

Operator = Literal["=", "!=", "=~", "!~"]

_LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: The name, the operator, and everything after it (the quoted value).
_SHAPE = re.compile(r"\s*(?P<name>[^=!~\s]*)\s*(?P<op>=~|!~|!=|=)\s*(?P<rest>.*?)\s*")


@dataclass(frozen=True, slots=True)
class Matcher:
    """One test of one label; build it with :func:`parse_matcher`."""

    name: str
    op: Operator
    value: str
    _regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Return whether ``labels`` pass this test; a missing label is ``""``."""
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        assert self._regex is not None
        found = self._regex.fullmatch(actual) is not None

        return found if self.op == "=~" else not found

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.name}{self.op}"{escaped}"'


def parse_matcher(text: str) -> Matcher:
    """Parse one matcher such as ``team="ml"`` or ``severity!~"info|low"``.

    :param text: the matcher as a config or a command line writes it.
    :return: the matcher, its regex compiled.
    :raises ValueError: if ``text`` is not a matcher; the message says what is
        wrong with it (the label name, the operator, the quotes, the regex).
    """
    shape = _SHAPE.fullmatch(text)
    if shape is None:
        raise ValueError(
            f'invalid matcher {text!r}: expected name="value", name!="value",'
            ' name=~"regex" or name!~"regex"'
        )
    name, op = shape["name"], shape["op"]
    if not _LABEL_NAME.fullmatch(name):
        raise ValueError(
            f"invalid matcher {text!r}: {name!r} is not a label name (letters,"
            " digits and _, not starting with a digit)"
        )
    value = _unquote(shape["rest"], text)
    if op in ("=", "!="):
        return Matcher(name, op, value)
    try:
        regex = re.compile(value)
    except re.error as error:
        raise ValueError(f"invalid regex in matcher {text!r}: {error}") from None

    return Matcher(name, op, value, regex)


def _unquote(quoted: str, text: str) -> str:
    """Return the value between the double quotes of ``quoted``."""
    if len(quoted) < 2 or quoted[0] != '"' or quoted[-1] != '"':
        raise ValueError(
            f"invalid matcher {text!r}: the value must be in double quotes"
        )
    value: list[str] = []
    chars = iter(quoted[1:-1])
    for char in chars:
        if char == '"':
            raise ValueError(
                f'invalid matcher {text!r}: a " inside the value must be written \\"'
            )
        if char != "\\":
            value.append(char)
            continue
        following = next(chars, None)
        if following is None:
            raise ValueError(
                f"invalid matcher {text!r}: the value ends with a lone backslash"
            )
        # Only the two escapes the quotes need; other backslashes belong to
        # the value, as regexes need them.
        value.append(following if following in '"\\' else "\\" + following)

    return "".join(value)


class Matchers:
    """Matchers that must all hold (AND); none selects every alert."""

    __slots__ = ("_matchers",)

    def __init__(self, matchers: Iterable[Matcher] = ()) -> None:
        self._matchers = tuple(matchers)

    @classmethod
    def parse(cls, texts: Iterable[str]) -> Matchers:
        """Parse each of ``texts`` with :func:`parse_matcher`.

        :raises ValueError: if one of them is not a matcher.
        """
        return cls(parse_matcher(text) for text in texts)

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Return whether every matcher holds for ``labels``."""
        return all(matcher.matches(labels) for matcher in self._matchers)

    def __iter__(self) -> Iterator[Matcher]:
        return iter(self._matchers)

    def __len__(self) -> int:
        return len(self._matchers)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Matchers):
            return NotImplemented
        return self._matchers == other._matchers

    def __hash__(self) -> int:
        return hash(self._matchers)

    def __repr__(self) -> str:
        return f"Matchers({', '.join(map(str, self._matchers))})"
