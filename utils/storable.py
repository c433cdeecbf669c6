"""Text and JSON as PostgreSQL can store them: without NUL, which it refuses in text and
JSONB, and without a lone surrogate, which UTF-8 cannot encode (a template can render one, a
provider's JSON can escape one). Either is stored as U+FFFD: one such text in a model's answer
or a rendered prompt must not sink the batch it is written with."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import orjson

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# JSON's escape of NUL, where its backslash is not itself escaped (an even run of them before).
_NUL_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def storable(text: str) -> str:
    if "\x00" not in text and (text.isascii() or not _has_surrogate(text)):
        return text
    return _UNSTORABLE.sub("\ufffd", text)


def storable_json(value: Any) -> Any:
    """`value` with every string of it storable, keys included (a model's tool call
    arguments, a simulated user's message: whatever a model wrote), and NaN and the
    infinities, which JSONB cannot hold, as null (as orjson writes them)."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {storable(str(key)): storable_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [storable_json(item) for item in value]
    return value


def storable_document(value: Any) -> str:
    """`value` as a JSON document for a JSONB parameter (one C call, as fastjson encodes),
    every string of it storable."""
    try:
        document = orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        # A lone surrogate, or an integer beyond 64 bits: orjson refuses either. The standard
        # library would write NaN as NaN, which PostgreSQL refuses: the value is made
        # storable first (NaN as null, as orjson writes it).
        cleaned = storable_json(value)
        document = json.dumps(cleaned, default=str, ensure_ascii=False, allow_nan=False)
    if "\\u0000" in document:
        document = _NUL_ESCAPE.sub(r"\1\\ufffd", document)
    return document


def _has_surrogate(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return True
    return False
