"""Slack's Block Kit limits, checked as strictly as Slack checks them.

:func:`message_error` returns the error string Slack answers a message
with (``no_text``, ``too_many_attachments``, ``invalid_blocks``,
``invalid_payload``), or ``None`` for a message it takes. One block past one
limit refuses the whole message.
"""

from __future__ import annotations

#: Slack's limits, as its SDK's validators and its docs give them.
MAX_BLOCKS = 50
MAX_ATTACHMENTS = 100
HEADER_LIMIT = 150
SECTION_LIMIT = 3000
FIELD_LIMIT = 2000
MAX_FIELDS = 10
MAX_CONTEXT_ELEMENTS = 10
MAX_ACTION_ELEMENTS = 25
BUTTON_TEXT_LIMIT = 75
ACTION_ID_LIMIT = 255
BUTTON_VALUE_LIMIT = 2000
URL_LIMIT = 3000
BLOCK_ID_LIMIT = 255
#: Longer ``text`` is cut by Slack without an error.
TEXT_CUT = 40000


def message_error(message: dict) -> str | None:
    """Return the error string Slack answers ``message`` with, or ``None``."""
    text, blocks = message.get("text"), message.get("blocks")
    attachments = message.get("attachments")
    if text is not None and not isinstance(text, str):
        return "invalid_payload"
    if not text and not blocks and not attachments:
        return "no_text"
    if attachments is not None:
        if not isinstance(attachments, list):
            return "invalid_payload"
        if len(attachments) > MAX_ATTACHMENTS:
            return "too_many_attachments"
    if blocks is not None and not _blocks_valid(blocks):
        return "invalid_blocks"

    return None


def _blocks_valid(blocks: object) -> bool:
    if not isinstance(blocks, list) or len(blocks) > MAX_BLOCKS:
        return False
    block_ids = [b.get("block_id") for b in blocks if isinstance(b, dict)]
    given = [i for i in block_ids if i is not None]
    if len(given) != len(set(given)):
        return False
    return all(isinstance(block, dict) and _block_valid(block) for block in blocks)


def _block_valid(block: dict) -> bool:
    block_id = block.get("block_id")
    if block_id is not None and not _text(block_id, BLOCK_ID_LIMIT):
        return False
    kind = block.get("type")
    if kind == "divider":
        return True
    if kind == "header":
        return _text_object(block.get("text"), HEADER_LIMIT, plain_only=True)
    if kind == "section":
        return _section_valid(block)
    if kind == "context":
        elements = block.get("elements")
        return (
            isinstance(elements, list)
            and 0 < len(elements) <= MAX_CONTEXT_ELEMENTS
            and all(_text_object(e, SECTION_LIMIT) for e in elements)
        )
    if kind == "actions":
        elements = block.get("elements")
        if (
            not isinstance(elements, list)
            or not 0 < len(elements) <= MAX_ACTION_ELEMENTS
        ):
            return False
        ids = [e.get("action_id") for e in elements if isinstance(e, dict)]
        given = [i for i in ids if i is not None]
        unique = len(given) == len(set(given))
        return unique and all(_button_valid(e) for e in elements)

    return False


def _section_valid(block: dict) -> bool:
    text, fields = block.get("text"), block.get("fields")
    if text is None and fields is None:
        return False
    if text is not None and not _text_object(text, SECTION_LIMIT):
        return False
    if fields is not None:
        if not isinstance(fields, list) or not 0 < len(fields) <= MAX_FIELDS:
            return False
        if not all(_text_object(f, FIELD_LIMIT) for f in fields):
            return False
    accessory = block.get("accessory")
    return accessory is None or _button_valid(accessory)


def _button_valid(element: object) -> bool:
    if not isinstance(element, dict) or element.get("type") != "button":
        return False
    text = element.get("text")
    if not _text_object(text, BUTTON_TEXT_LIMIT, plain_only=True):
        return False
    limits = {
        "action_id": ACTION_ID_LIMIT,
        "value": BUTTON_VALUE_LIMIT,
        "url": URL_LIMIT,
    }
    for key, limit in limits.items():
        if key in element and not _text(element[key], limit):
            return False
    return element.get("style", "primary") in ("primary", "danger")


def _text_object(obj: object, limit: int, *, plain_only: bool = False) -> bool:
    if not isinstance(obj, dict):
        return False
    kinds = ("plain_text",) if plain_only else ("plain_text", "mrkdwn")
    if obj.get("type") not in kinds:
        return False
    if "emoji" in obj and obj["type"] != "plain_text":
        return False

    return _text(obj.get("text"), limit)


def _text(value: object, limit: int) -> bool:
    return isinstance(value, str) and 0 < len(value) <= limit
