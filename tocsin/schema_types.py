"""The building blocks of the configuration's schema: durations, names,
severities and the strict Struct every section is made of."""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec

#: The longest duration a config may give, in seconds (ten years).
MAX_DURATION = 3650 * 86400.0


class Duration(float):
    """Seconds, written in the file as ``30s``, ``5m``, ``1h``, ``1d`` or ``250ms``."""

    _UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
    _PATTERN = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")

    @classmethod
    def parse(cls, text: str) -> Duration:
        """Parse one duration, raising :class:`ValueError` if it is not one."""
        if text == "0":
            return cls(0.0)
        match = cls._PATTERN.fullmatch(text)
        if match is None:
            raise ValueError(
                f"invalid duration {text!r} (write it like 30s, 5m, 1h or 1d)"
            )
        seconds = float(match[1]) * cls._UNITS[match[2]]
        # A bound, not a policy: beyond it, arithmetic on timestamps loses
        # whole seconds, and a huge number of digits reads as infinity.
        if not seconds <= MAX_DURATION:
            raise ValueError(f"duration {text!r} is longer than 3650d")
        return cls(seconds)

    @classmethod
    def format(cls, seconds: float) -> str:
        """Write ``seconds`` as the file would (``30s``, ``5m``, ``1h``).

        The largest unit that divides the duration exactly wins; anything
        else is written in seconds.
        """
        for unit, size in sorted(cls._UNITS.items(), key=lambda item: -item[1]):
            count = seconds / size
            if count >= 1 and abs(count - round(count)) < 1e-9:
                return f"{round(count)}{unit}"
        # Plain decimals, never an exponent, so that ``parse`` reads it back.
        text = f"{seconds:.9f}".rstrip("0").rstrip(".")
        return "0s" if text in ("0", "") else f"{text}s"


def decode_hook(kind: type, obj: object) -> object:
    if kind is Duration:
        if not isinstance(obj, str):
            raise TypeError("expected a duration string like '30s', '5m' or '1h'")
        return Duration.parse(obj)
    raise NotImplementedError(kind)


Severity = Literal["critical", "high", "warning", "medium", "low", "info"]
#: Names of the two levels a rule may have, lowest first.
LEVELS = ("warning", "critical")
Aggregation = Literal[
    "avg",
    "min",
    "max",
    "sum",
    "count",
    "last",
    "stddev",
    "delta",
    "rate",
    "p50",
    "p90",
    "p95",
    "p99",
]
Comparison = Literal[">", ">=", "<", "<=", "==", "!=", "inside", "outside"]
#: A name is a segment of the API's paths too, so one of dots alone (which
#: HTTP clients fold into the path around it) is not a name.
NAME_PATTERN = r"^(?!\.+$)[A-Za-z0-9_.\-]{1,100}$"
Name = Annotated[str, msgspec.Meta(pattern=NAME_PATTERN)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]


class Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    pass
