"""Personal data found in labels, tags and typed text, replaced by a marker.

A :class:`Redactor` does two things. It replaces the whole value of a
configured field (``user_email``, matched case-insensitively) wherever that
field appears as a tag's key, a label, a metadata key or a key of a log line's
context, and it runs detectors over every other value:

``email``
    ``local@domain.tld``.
``phone``
    international numbers written with ``+`` (8 to 15 digits, separators
    allowed), North American numbers ``555-123-4567``, ``(555) 123 4567``,
    ``555.123.4567``, and national numbers that start with a trunk ``0`` and
    are written in groups (``020 7946 0958``, ``06-12-34-56-78``; 9 to 11
    digits). A bare digit run is not a phone number.
``national_id``
    US Social Security numbers ``123-45-6789`` (area ``000``, ``666`` and
    ``9xx``, group ``00`` and serial ``0000`` are never issued and are left
    alone) and UK National Insurance numbers ``AB 12 34 56 C`` (upper case,
    with the prefixes HMRC never issues left alone).
``card``
    payment card numbers of 13 to 19 digits, optionally grouped by spaces or
    dashes, that start as a card scheme's numbers do (Visa, Mastercard, Amex,
    Discover, Diners, JCB, UnionPay, Maestro) and pass the Luhn check; a plain
    number such as a millisecond timestamp does not start that way.

Every numeric detector needs its match to stand alone, not inside a longer
word: a git sha, a UUID, a version ``2024.11.03`` or a shard ``0042`` is never
touched. The module imports nothing of the daemon, so logging, the API and
the ingest parsers can all use it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

#: Detectors a ``[privacy]`` table may name, all on by default.
DETECTORS = ("email", "phone", "national_id", "card")

#: What a redacted value becomes unless ``privacy.marker`` says otherwise.
DEFAULT_MARKER = "[REDACTED]"

#: Distinct tags and values remembered; the cache is emptied when full.
CACHE_ENTRIES = 65536

# Numbers stand alone: no word character, dot-digit or dash next to them, so
# parts of hashes, UUIDs, versions and dates never match.
_BEFORE = r"(?<![\w.+\-])"
_AFTER = r"(?![\w\-])(?!\.\d)"

_EMAIL = re.compile(
    r"(?<![\w.+\-%])[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*"
    r"\.[A-Za-z]{2,}(?![\w\-])"
)
_INTERNATIONAL = re.compile(
    r"(?<![\w+])\+[1-9]\d{0,3}(?:[ .\-]?\(?\d{1,5}\)?){1,6}" + _AFTER
)
_NORTH_AMERICAN = re.compile(
    _BEFORE + r"(?:\([2-9]\d{2}\)[ ]?|[2-9]\d{2}[ .\-])\d{3}[ .\-]\d{4}" + _AFTER
)
_TRUNK = re.compile(_BEFORE + r"0[1-9]\d{0,3}(?:[ \-]\d{2,4}){1,4}" + _AFTER)
_SSN = re.compile(
    _BEFORE + r"(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}" + _AFTER
)
_NINO = re.compile(
    r"(?<![\w])(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]"
    r" ?\d{2} ?\d{2} ?\d{2} ?[A-D](?![\w])"
)
_CARD = re.compile(_BEFORE + r"\d(?:[ \-]?\d){12,18}" + _AFTER)
# Issuer prefixes of the schemes whose numbers are 13 to 19 digits long.
_CARD_PREFIX = re.compile(
    r"4|5[1-5]|2(?:2[2-9]|[3-6]\d|7[01]|720)|3[47]|3(?:0[0-5]|[68])|35(?:2[89]|[3-8])"
    r"|6(?:011|4[4-9]|5|2)|5[06-8]|6\d"
)


def luhn_ok(digits: str) -> bool:
    """Tell whether a string of digits passes the Luhn check."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        digit = ord(char) - 48
        if position % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def _digits(text: str) -> str:
    return "".join(char for char in text if char.isdigit())


def _is_phone(match: re.Match[str]) -> bool:
    return 8 <= len(_digits(match[0])) <= 15


def _is_trunk_phone(match: re.Match[str]) -> bool:
    return 9 <= len(_digits(match[0])) <= 11


def _is_card(match: re.Match[str]) -> bool:
    digits = _digits(match[0])
    return bool(_CARD_PREFIX.match(digits)) and luhn_ok(digits)


# Every detector needs an ``@`` or at least six digits (a UK NI number has
# six): a value with neither is answered without running any of them.
_CANDIDATE = re.compile(r"@|\d(?:\D*\d){5}")

#: Each detector's patterns, each with the test a match must also pass.
_PATTERNS: dict[str, tuple[tuple[re.Pattern[str], Callable | None], ...]] = {
    "email": ((_EMAIL, None),),
    # Cards before phones: a grouped card number must go whole.
    "card": ((_CARD, _is_card),),
    "national_id": ((_SSN, None), (_NINO, None)),
    "phone": (
        (_INTERNATIONAL, _is_phone),
        (_NORTH_AMERICAN, None),
        (_TRUNK, _is_trunk_phone),
    ),
}


class Redactor:
    """Replace personal data with ``marker`` in tags, labels and text.

    :param fields: names whose values are always replaced, in any case.
    :param detectors: which of :data:`DETECTORS` run over other values.
    :param marker: what a redacted value, or a detected part of one, becomes.
    """

    def __init__(
        self,
        fields: Iterable[str] = (),
        detectors: Iterable[str] = DETECTORS,
        marker: str = DEFAULT_MARKER,
    ) -> None:
        self.fields = frozenset(field.casefold() for field in fields)
        self.detectors = tuple(name for name in DETECTORS if name in set(detectors))
        self.marker = marker
        # Each pattern with its replacement function, made once, not per value.
        self._patterns = [
            (pattern, self._replacer(test))
            for name, patterns in _PATTERNS.items()
            if name in self.detectors
            for pattern, test in patterns
        ]
        # Tags repeat: the same tag string always gives the same answer.
        self._cache: dict[str, str] = {}
        self._fields_in_text = _fields_pattern(self.fields)

    @classmethod
    def from_config(cls, privacy) -> Redactor:
        """Build the redactor of a ``[privacy]`` table."""
        return cls(privacy.redact_fields, privacy.detectors, privacy.marker)

    def text(self, text: str) -> str:
        """Return ``text`` with every detected piece replaced by the marker."""
        if not text or _CANDIDATE.search(text) is None:
            return text
        for pattern, replace in self._patterns:
            text = pattern.sub(replace, text)

        return text

    def value(self, key: str, value: str) -> str:
        """Return ``value`` as it may be kept under ``key``."""
        if self.is_field(key):
            return self.marker
        return self.text(value)

    def tag(self, tag: str) -> str:
        """Return a ``key:value`` or bare tag as it may be kept (cached)."""
        cached = self._cache.get(tag)
        if cached is not None:
            return cached
        key, colon, value = tag.partition(":")
        if colon:
            clean = f"{self.text(key)}:{self.value(key, value)}"
        else:
            clean = self.text(tag)
        if len(self._cache) >= CACHE_ENTRIES:
            self._cache.clear()
        self._cache[tag] = clean

        return clean

    def tags(self, tags: tuple[str, ...]) -> tuple[str, ...]:
        """Return each tag of ``tags`` as it may be kept."""
        return tuple(self.tag(tag) for tag in tags)

    def labels(self, labels: Mapping[str, str]) -> dict[str, str]:
        """Return labels (or metadata) with their values made safe to keep."""
        return {key: self.value(key, value) for key, value in labels.items()}

    def is_field(self, key: str) -> bool:
        """Tell whether values under ``key`` are always replaced."""
        return key.casefold() in self.fields

    def log_line(self, text: str) -> str:
        """Return a formatted log line with personal data replaced: detected
        pieces, and the values written after a configured field's name."""
        if self._fields_in_text is not None:
            text = self._fields_in_text.sub(lambda match: match[1] + self.marker, text)

        return self.text(text)

    def _replacer(self, test: Callable | None) -> Callable[[re.Match[str]], str]:
        marker = self.marker
        if test is None:
            return lambda match: marker
        return lambda match: marker if test(match) else match[0]


def _fields_pattern(fields: frozenset[str]) -> re.Pattern[str] | None:
    """Match a field's name followed by its value in free text: ``key:value``,
    ``key=value`` and ``"key": "value"``, the value up to a separator."""
    if not fields:
        return None
    names = "|".join(re.escape(field) for field in sorted(fields))
    return re.compile(
        rf"""(?<![\w])((?:{names})\\?["']?\s*[:=]\s*\\?["']?)[^\s,"'\\|}}\]]+""",
        re.IGNORECASE,
    )
