"""Structured logging: one JSON object per line on stderr.

Every line carries ``time`` (ISO 8601, UTC), ``level``, ``logger`` and
``message``, followed by whichever of the fixed context keys the caller passed
through ``extra=``. A key outside :data:`CONTEXT_KEYS` is ignored, so the
vocabulary of the log stays the one the README documents.
"""

from __future__ import annotations

import logging
import sys
import time
from datetime import UTC, datetime

import orjson

#: Context keys a log call may pass with ``extra=``, in the order they print.
CONTEXT_KEYS = (
    "event",
    "version",
    "pid",
    "config",
    "listener",
    "address",
    "rule",
    "series",
    "alert",
    "transition",
    "channel",
    "notification",
    "attempt",
    "status",
    "reason",
    "error",
    "count",
    "suppressed",
    "elapsed_ms",
    "rules",
    "channels",
    "listeners",
    "path",
    "requests",
    "series_count",
    "delay_s",
    "detail",
)

_secrets: set[str] = set()
#: Replaces personal data in every line; see :func:`redact_personal_data`.
_personal = None


def register_secret(value: str | None) -> None:
    """Never let ``value`` reach a log line; it is replaced by ``[redacted]``.

    Secrets are kept out of log calls by construction; this is the second line
    of defence, for an exception text that quotes a URL or a header.
    """
    if value and len(value) >= 4:
        _secrets.add(value)


def redact(text: str) -> str:
    """Return ``text`` with every registered secret replaced."""
    # Longest first: a secret that extends another (a URL with a longer path)
    # must go whole, not leave its tail behind the shorter one's mask.
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, "[redacted]")
    return text


def redact_personal_data(redactor) -> None:
    """Run ``redactor`` (a :class:`~tocsin.redaction.Redactor`) over every
    string of every log line from now on; ``None`` stops it.

    Labels and typed text are redacted before they reach any log call; this
    is the last line of defence, for a malformed line quoted in a warning or
    a value in an exception text.
    """
    global _personal
    _personal = redactor


def _clean(text: str) -> str:
    text = redact(text)
    if _personal is not None:
        text = _personal.log_line(text)
    return text


def _clean_value(value: object) -> object:
    """Return a context value with its strings cleaned, however nested."""
    if isinstance(value, str):
        return _clean(value)
    if isinstance(value, dict):
        return {
            key: _personal.marker
            if _personal is not None
            and isinstance(key, str)
            and _personal.is_field(key)
            else _clean_value(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_clean_value(item) for item in value]
    return value


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object on one line."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC)
        line: dict[str, object] = {
            "time": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": _clean(record.getMessage()),
        }
        fields = record.__dict__
        for key in CONTEXT_KEYS:
            if key in fields:
                value = fields[key]
                line[key] = _clean_value(value)
        if record.exc_info:
            line["exception"] = _clean(self.formatException(record.exc_info))
        return orjson.dumps(line, default=str).decode()


def setup(level: str = "info", stream=None) -> None:
    """Send every Tocsin log line to ``stream`` (stderr) as JSON."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log would print one unstructured line per request.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class RateLimiter:
    """Let one log line through per ``interval`` seconds for each key.

    Used for warnings that input can trigger at line rate (a flood of malformed
    datagrams must not turn into a flood of log lines). :meth:`allow` tells how
    many lines were held back since the last one that went out.
    """

    def __init__(self, interval: float = 10.0, clock=time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def allow(self, key: str) -> tuple[bool, int]:
        """Return ``(should_log, suppressed_since_last)`` for ``key``."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._held[key] = self._held.get(key, 0) + 1
            return False, 0
        if len(self._last) > 1024:
            self._last.clear()
        self._last[key] = now
        return True, self._held.pop(key, 0)
