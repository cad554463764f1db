"""The log's shape: one JSON object per line, with the documented keys only."""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path

import orjson

from tocsin import logs

README = Path(__file__).resolve().parents[1] / "README.md"


def documented_fields() -> list[str]:
    section = README.read_text().split("\n## Logs\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.MULTILINE)


def test_every_field_a_line_can_carry_is_documented_in_order():
    fixed = ["time", "level", "logger", "message"]
    assert documented_fields() == [*fixed, *logs.CONTEXT_KEYS, "exception"]


def test_a_line_is_one_object_with_known_keys_only():
    stream = io.StringIO()
    logs.setup("info", stream)
    logger = logging.getLogger("tocsin.test_logs")
    try:
        raise ValueError("a\nmulti-line\nerror")
    except ValueError:
        logger.exception(
            "step failed",
            extra={"rule": "r", "unknown_key": "dropped", "count": 3},
        )
    logging.getLogger().handlers.clear()

    [line] = stream.getvalue().splitlines()
    record = orjson.loads(line)
    assert list(record) == [
        "time",
        "level",
        "logger",
        "message",
        "rule",
        "count",
        "exception",
    ]
    assert set(record) <= set(documented_fields())
    assert record["level"] == "error"
    assert "multi-line" in record["exception"]


def test_a_registered_secret_never_reaches_a_line():
    stream = io.StringIO()
    logs.setup("info", stream)
    secret = "https://hooks.example.invalid/T000/B000/very-secret"
    logs.register_secret(secret)
    logging.getLogger("tocsin.test_logs").warning(
        "failed %s", secret, extra={"error": f"POST {secret} refused"}
    )
    logging.getLogger().handlers.clear()

    assert secret not in stream.getvalue()
    assert "[redacted]" in orjson.loads(stream.getvalue())["error"]
