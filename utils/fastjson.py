"""JSON on the hot paths (provider answers, stored results and events), through orjson: about
five times faster than the standard library, which a run spends a share of its CPU in.

Text is UTF-8 throughout. A value orjson refuses (an integer beyond 64 bits, say, in a
user's metadata) falls back to the standard library rather than failing.
"""

from __future__ import annotations

import json
import math
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


# How deep a provider's answer may nest: as deep as orjson writes (it refuses 255). Read, one
# nested deeper (orjson reads 1,024 levels) could not be stored, nor written back as text by
# the standard library near its recursion limit: a RecursionError failed the case's whole
# chunk, five times over.
MAX_DEPTH = 254


def refuse_deep(value: Any, document: bytes | str | None = None) -> None:
    """A ValueError if `value` nests deeper than MAX_DEPTH. One read from a `document` with
    fewer brackets than that cannot, and is not walked; any other is written by orjson, in C,
    which stops past its limit."""
    if document is not None:
        brackets = (b"[", b"{") if isinstance(document, bytes) else ("[", "{")
        if document.count(brackets[0]) + document.count(brackets[1]) <= MAX_DEPTH:  # type: ignore[arg-type]
            return
    try:
        orjson.dumps(value, option=_OPTIONS)
    except orjson.JSONEncodeError as exc:
        if "Recursion" in str(exc):
            raise ValueError(f"the document nests more than {MAX_DEPTH} levels deep") from None
        from utils.schemas import nesting_depth  # what orjson does not write (a huge integer)

        if nesting_depth(value, MAX_DEPTH) > MAX_DEPTH:
            raise ValueError(f"the document nests more than {MAX_DEPTH} levels deep") from None


def loads(document: bytes | str) -> Any:
    """Parses a document; raises ValueError (orjson's JSONDecodeError is one) when it is not
    JSON or nests deeper than MAX_DEPTH. An integer beyond 64 bits comes back as a float: for
    providers' answers only, never for a user's stored JSON."""
    value = orjson.loads(document)
    refuse_deep(value, document)
    return value


# An integer that may not fit in 64 bits (orjson would read a float): a run of 19 digits,
# found as a run of "0"s once every digit is a "0" and every other byte a space (all in C).
_DIGITS_AS_ZEROS = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x20 for byte in range(256))
_LONG_NUMBER = b"0" * 19


def loads_answer(document: bytes) -> Any:
    """A document from another server, read as `json.loads` reads it (NaN, integers of any
    size) at orjson's speed where that is the same; a ValueError for what is not JSON, or
    nests deeper than MAX_DEPTH."""
    try:
        value = loads_exact(document.decode())
    except RecursionError:
        raise ValueError("the document is nested too deeply") from None
    refuse_deep(value, document)
    return value


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


# --- floats as json.dumps writes them, for documents orjson writes --------------------------
# orjson writes a float as Python's repr does, except where repr has an exponent (below 1e-4
# and from 1e16 on: orjson writes 1e-05 as 0.00001) and for NaN and the infinities (orjson:
# null). Only those floats are handed to orjson as a Fragment of json.dumps's text.


def standard_float(value: float) -> float | orjson.Fragment:
    """`value` for orjson to write as json.dumps does."""
    if value == 0.0 or 1e-4 <= abs(value) < 1e16:
        return value
    return orjson.Fragment(standard_float_text(value))


def standard_float_text(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return float.__repr__(value)


def with_standard_floats(value: Any, *, non_finite_as_null: bool = False) -> Any:
    """JSON data `value` with each float as standard_float makes it (NaN and the infinities as
    None instead, if asked: what pydantic dumps for them in a field typed Any). A container is
    copied only if a float inside it changes: most hold none that does."""
    if isinstance(value, float):
        return _standard(value, non_finite_as_null)
    if isinstance(value, dict | list):
        return _with_standard_floats(value, non_finite_as_null)
    return value


# What JSON data holds besides floats and containers: skipped without a call.
_SCALARS = frozenset({str, int, bool, type(None)})


def _standard(value: float, non_finite_as_null: bool) -> float | orjson.Fragment | None:
    if value == 0.0 or 1e-4 <= abs(value) < 1e16:
        return value
    if non_finite_as_null and not math.isfinite(value):
        return None
    return orjson.Fragment(standard_float_text(value))


def _with_standard_floats(container: Any, non_finite_as_null: bool) -> Any:
    changed: Any = None
    pairs = container.items() if isinstance(container, dict) else enumerate(container)
    for key, item in pairs:
        if type(item) in _SCALARS:
            continue
        if isinstance(item, float):
            new = _standard(item, non_finite_as_null)
        elif isinstance(item, dict | list):
            new = _with_standard_floats(item, non_finite_as_null)
        else:
            continue
        if new is not item:
            if changed is None:
                changed = container.copy()
            changed[key] = new
    return container if changed is None else changed
