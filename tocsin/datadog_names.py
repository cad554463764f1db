"""Datadog's rules for metric names and tags, shared by the export, the events
channel and the config check.

The export maps every name it sends with :func:`metric_name`; the config check
runs the same function on ``export.datadog.metric_prefix``, so that a prefix
with which no name could be exported is refused at load rather than found out
one refused series at a time. This module imports nothing from Tocsin, so that
``tocsin.config`` may use it.
"""

from __future__ import annotations

import re

#: The longest metric name Datadog takes.
NAME_LIMIT = 200
#: The longest tag Datadog takes.
TAG_LIMIT = 200

_NAME_INVALID = re.compile(r"[^A-Za-z0-9_.]")
#: A letter first, then letters, digits and ``_ - : . /``.
_TAG = re.compile(r"[^\W\d_][\w\-:./]*")


def metric_name(name: str, prefix: str = "", room: int = 0) -> str | None:
    """Return the Datadog name for ``prefix + name``, or ``None`` if it has none.

    Every character other than an ASCII letter, digit, ``_`` or ``.`` becomes
    ``_``; a name that then does not start with an ASCII letter, or is longer
    than :data:`NAME_LIMIT` less ``room``, has none.

    :param room: characters to keep free at the end for a suffix.
    """
    if len(prefix) + len(name) > NAME_LIMIT - room:
        return None
    mapped = _NAME_INVALID.sub("_", prefix + name)
    if not mapped or not ("a" <= mapped[0].lower() <= "z"):
        return None
    return mapped


def is_tag(text: str) -> bool:
    """Whether Datadog takes ``text`` as a tag unchanged.

    It starts with a letter, holds only letters, digits and ``_ - : . /``,
    does not end with ``:`` and has at most :data:`TAG_LIMIT` characters.
    """
    return (
        len(text) <= TAG_LIMIT
        and _TAG.fullmatch(text) is not None
        and not text.endswith(":")
    )
