"""Config checks of the ``[privacy]`` table that its schema cannot express.

Each check raises :class:`~tocsin.errors.ConfigError` naming the file and the
key at fault, as every other config check does.
"""

from __future__ import annotations

from tocsin.errors import ConfigError
from tocsin.schema import PrivacyConfig


def check_privacy(privacy: PrivacyConfig, source: str) -> None:
    """Check the ``[privacy]`` table.

    :raises ConfigError: if the marker is empty or holds a control character,
        a field name is empty, has spaces or is listed twice, or a detector
        is listed twice.
    """
    marker = privacy.marker
    if not marker:
        raise ConfigError(source, "must not be empty", "privacy.marker")
    if not marker.isprintable():
        raise ConfigError(
            source, "must not contain control characters", "privacy.marker"
        )

    seen: set[str] = set()
    for index, field in enumerate(privacy.redact_fields):
        key = f"privacy.redact_fields[{index}]"
        if not field or not field.isprintable() or field != field.strip():
            raise ConfigError(
                source,
                f"expected a field name without surrounding spaces or control"
                f" characters, got {field!r}",
                key,
            )
        if ":" in field:
            # A tag's key ends at its first colon, so such a name never matches.
            raise ConfigError(source, f"must not contain ':', got {field!r}", key)
        if field.casefold() in seen:
            raise ConfigError(source, f"{field!r} is listed twice", key)
        seen.add(field.casefold())

    if len(set(privacy.detectors)) != len(privacy.detectors):
        raise ConfigError(source, "a detector is listed twice", "privacy.detectors")
