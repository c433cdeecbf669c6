"""JSON on the hot paths (provider answers, stored results and events), through orjson: about
five times faster than the standard library, which a run spends a share of its CPU in.

Text is UTF-8 throughout. A value orjson refuses (an integer beyond 64 bits, say, in a
user's metadata) falls back to the standard library rather than failing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson

_OPTIONS = orjson.OPT_NON_STR_KEYS


def dumps_bytes(value: Any, *, default: Callable[[Any], Any] | None = None) -> bytes:
    try:
        return orjson.dumps(value, default=default, option=_OPTIONS)
    except TypeError:
        return json.dumps(value, ensure_ascii=False, default=default).encode()


def dumps(value: Any, *, default: Callable[[Any], Any] | None = None) -> str:
    return dumps_bytes(value, default=default).decode()


def loads(document: bytes | str) -> Any:
    """Parses a document; raises ValueError (orjson's JSONDecodeError is one) when it is not
    JSON. An integer beyond 64 bits comes back as a float: for providers' answers only, never
    for a user's stored JSON."""
    return orjson.loads(document)


# An integer that may not fit in 64 bits (orjson would read a float): a run of 19 digits,
# found as a run of "0"s once every digit is a "0" and every other byte a space (all in C).
_DIGITS_AS_ZEROS = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x20 for byte in range(256))
_LONG_NUMBER = b"0" * 19


def loads_exact(document: str) -> Any:
    """What `json.loads` returns, at orjson's speed where that is the same: documents that may
    hold a number of 19 digits or more, and what orjson refuses (a lone surrogate, a number
    beyond a double's range, deep nesting), go to the standard library. For stored JSON."""
    if len(document) < 19 or _LONG_NUMBER not in document.encode().translate(_DIGITS_AS_ZEROS):
        try:
            return orjson.loads(document)
        except orjson.JSONDecodeError:
            pass
    return json.loads(document)
