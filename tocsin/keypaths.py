"""Key paths in config errors, as a reader of the TOML file writes them.

msgspec reports where a document failed as a path such as ``rules[0].window``,
but writes ``[...]`` for an entry of a table (``rules[0].match[...]``) and
quotes nothing. :func:`name_entries` puts the entry's key in place of
``[...]``, and :func:`toml_key` writes a key that is not a bare TOML key in
quotes, so every path can be pasted back into the file. This module imports
nothing from Tocsin, so that ``tocsin.config`` may use it.
"""

from __future__ import annotations

import re
import types
from collections.abc import Callable
from typing import Annotated, Any, Union, get_args, get_origin

import msgspec

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}
_STEP = re.compile(r"\.?(?P<field>[^.\[]+)|\[(?P<index>\d+)\]|(?P<entry>\[\.\.\.\])")


def toml_key(key: str) -> str:
    """Write ``key`` as it may appear in a key path: bare, or quoted as TOML does.

    Control characters are escaped, so a key path always stays on one line.
    """
    if _BARE_KEY.fullmatch(key):
        return key
    quoted = []
    for char in key:
        if char in '"\\':
            quoted.append("\\" + char)
        elif char in _ESCAPES:
            quoted.append(_ESCAPES[char])
        elif not char.isprintable():
            wide = ord(char) >= 0x10000
            quoted.append(f"\\U{ord(char):08X}" if wide else f"\\u{ord(char):04X}")
        else:
            quoted.append(char)

    return '"' + "".join(quoted) + '"'


def name_entries(
    text: str | bytes,
    path: str,
    root: type,
    dec_hook: Callable[[type, Any], Any] | None = None,
) -> str:
    """Replace each ``[...]`` in a msgspec path by the key of the entry at fault.

    The document is decoded again without a schema and walked along ``path``
    next to the schema ``root``; in each table the entry at fault is the first
    one that does not convert on its own, as msgspec decodes entries in order.
    Should the walk fail, ``path`` is returned as it is.

    :param text: the TOML document that failed to decode as ``root``.
    :param dec_hook: the hook the document was decoded with.
    """
    try:
        node: Any = msgspec.toml.decode(text)
    except msgspec.DecodeError:
        return path
    kind: Any = root
    named = []
    try:
        for step in _STEP.finditer(path):
            kind = _concrete(kind, node)
            if step["field"] is not None:
                field = step["field"]
                fields = msgspec.structs.fields(kind)
                kind = next(f.type for f in fields if f.encode_name == field)
                node = node[field]
                named.append(("." if named else "") + field)
            elif step["index"] is not None:
                kind = get_args(kind)[0]
                node = node[int(step["index"])]
                named.append(f"[{step['index']}]")
            else:
                key = next(
                    key
                    for key, value in node.items()
                    if not _converts({key: value}, kind, dec_hook)
                )
                kind = get_args(kind)[1]
                node = node[key]
                named.append("." + toml_key(key))
    except (KeyError, IndexError, TypeError, AttributeError, StopIteration):
        return path

    return "".join(named)


def _concrete(kind: Any, node: Any) -> Any:
    """Return the type ``node`` decodes as: ``kind`` without ``Annotated``, or
    the member of a tagged union whose tag ``node`` carries."""
    while get_origin(kind) is Annotated:
        kind = get_args(kind)[0]
    if get_origin(kind) in (Union, types.UnionType):
        for member in get_args(kind):
            config = getattr(member, "__struct_config__", None)
            if config is not None and node.get(config.tag_field) == config.tag:
                return member
    return kind


def _converts(value: Any, kind: Any, dec_hook: Callable | None) -> bool:
    try:
        msgspec.convert(value, kind, dec_hook=dec_hook)
    except msgspec.ValidationError:
        return False

    return True
