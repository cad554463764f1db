"""Durations as the config writes them: parsed, refused, and written back."""

from __future__ import annotations

import pytest

from tocsin.schema_types import Duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("5m", 300),
        ("1h", 3600),
        ("1d", 86400),
        ("250ms", 0.25),
        ("0", 0),
        ("3650d", 3650 * 86400),
    ],
)
def test_durations(text, seconds):
    assert Duration.parse(text) == seconds


@pytest.mark.parametrize(
    "seconds",
    [0, 1e-05, 0.0015, 0.25, 1.5, 90, 3600.5, 86400, 123456.789, 3650 * 86400],
)
def test_a_formatted_duration_reads_back_as_itself(seconds):
    # Durations the API stores are written back as text the file would hold.
    text = Duration.format(seconds)

    assert Duration.parse(text) == pytest.approx(seconds, abs=1e-9)


@pytest.mark.parametrize(
    "text",
    ["", "5", "5 m", "-5s", "1w", "5M", "1h30m", "s", "3651d", "9" * 400 + "s"],
)
def test_bad_durations(text):
    with pytest.raises(ValueError, match="invalid duration|longer than 3650d"):
        Duration.parse(text)
