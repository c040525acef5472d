"""JSON from a peer we do not trust, parsed within stated limits.

``json.loads`` alone accepts any size and recurses once per level of nesting, so a few kilobytes
of ``[[[[…`` raise ``RecursionError`` (which no ``except ValueError`` catches) in whichever
thread parses them, and a value nested a few hundred levels deep breaks later consumers that
recurse too (canonical re-serialisation for signing, the audit log). Every channel that reads
JSON from another process therefore goes through :func:`loads`, which turns all of that into one
:class:`~edge.errors.ProtocolError`.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import ProtocolError

DEFAULT_MAX_DEPTH = 16


def _refuse_constant(name: str) -> Any:
    raise ProtocolError(f"{name} is not JSON")


def loads(data: bytes, *, max_bytes: int, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """The value ``data`` holds; :class:`ProtocolError` when it is larger than ``max_bytes``,
    not UTF-8 JSON (NaN and Infinity included), or nested deeper than ``max_depth``."""
    if len(data) > max_bytes:
        raise ProtocolError(f"message of {len(data)} bytes exceeds the limit of {max_bytes}")
    try:
        value = json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)
    except RecursionError:
        raise ProtocolError(f"JSON nested deeper than {max_depth} levels") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"not JSON: {exc}") from None
    check_depth(value, max_depth)
    return value


def check_depth(value: Any, max_depth: int) -> None:
    """Raise :class:`ProtocolError` if containers in ``value`` nest deeper than ``max_depth``.

    Iterative, so that the check cannot itself run out of stack.
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth + 1 > max_depth:
            raise ProtocolError(f"JSON nested deeper than {max_depth} levels")
        stack.extend((child, depth + 1) for child in children)
