"""JSON decoding with a nesting limit: the one decoder for every JSON a client sends.

`json.loads` recurses once per level of `[`/`{`; a body of a few thousand brackets reaches
Python's recursion limit (a `RecursionError`, which is no `ValueError` and escapes handlers as
a 500), and data nested just under it still breaks every recursive walker after the parse. So
every client JSON (REST and SSE bodies, chat messages and their multipart parts, Socket.IO
payloads) goes through `loads`, which refuses more than `MAX_NESTING` levels with a
`JSONNestingError` — a `ValueError`, so callers that catch bad JSON catch this too. A number
too long for Python's int conversion (over 4,300 digits) is a `json.JSONDecodeError`.
"""

from __future__ import annotations

import json
from typing import Any

# Arrays/objects nested deeper than this are refused: real messages nest a handful of levels,
# and the limit stays far below Python's recursion limit (1000) for every walker of the result.
MAX_NESTING = 100


class JSONNestingError(ValueError):
    """The JSON nests arrays/objects deeper than the limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"nested deeper than {limit} levels")
        self.limit = limit


def loads(data: str | bytes | bytearray, *, max_nesting: int = MAX_NESTING) -> Any:
    """`json.loads` that refuses nesting deeper than `max_nesting` (`JSONNestingError`); bad JSON
    is `json.JSONDecodeError` as usual. Cost: two `count`s, and a walk only when the text holds
    more brackets than the limit."""
    try:
        value = json.loads(data)
    except RecursionError:
        raise JSONNestingError(max_nesting) from None
    except json.JSONDecodeError:
        raise
    except ValueError as exc:
        # An integer of more than 4,300 digits (Python's int-from-string limit) is a plain
        # ValueError that handlers of bad JSON (JSONDecodeError) miss: make it one.
        text = data if isinstance(data, str) else bytes(data).decode("utf-8", "replace")
        raise json.JSONDecodeError(f"number too long ({exc})"[:120], text, 0) from None
    if isinstance(value, (list, dict)) and data.count("[" if isinstance(data, str) else b"[") + data.count(
            "{" if isinstance(data, str) else b"{") > max_nesting and depth_exceeds(value, max_nesting):
        raise JSONNestingError(max_nesting)
    return value


def depth_exceeds(data: Any, limit: int) -> bool:
    """Whether lists/dicts nest deeper than `limit` (iterative: the input may be very deep)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (list, dict)):
            if depth > limit:
                return True
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
    return False
