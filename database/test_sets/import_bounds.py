"""The bounds of one row of an imported file, and JSON read within them: how deeply text
nests, measured without decoding it, where each case of a JSON document starts and ends (the
document decoded only once), its numbers read as the database keeps them (`DECODER`), and
the notes an import answers with."""

from __future__ import annotations

import csv
import io
import json
import math
import operator
import re
import sys
from collections.abc import Generator, Iterable, Iterator
from decimal import Decimal
from itertools import accumulate, compress, count, islice, repeat
from typing import Any

from utils import fastjson
from utils.errors import InvalidInput
from utils.problems import at_line

MAX_ROW_BYTES = 1024 * 1024  # one CSV record, JSONL line or JSON case, as UTF-8
# A CSV cell may be as large as its record: the csv module's own limit (131,072 characters) is
# smaller, and a test exported with a large metadata object or chat could not be read back.
csv.field_size_limit(MAX_ROW_BYTES)
MAX_KEY_NOTES = 100  # notes of an import naming a key it left out
MAX_NESTING = 32  # levels of arrays and objects in one JSON value (a case, a line, a cell)
# A case (the object itself is level 1) within the array that holds it, itself within the
# object that may wrap the array: the depth allowed past a case's own is the document's frame.
_ARRAY_FRAME, _WRAPPER_FRAME = 1, 2

_WHITESPACE = re.compile(r"[ \t\n\r]*")
# A string, or an unterminated one to the end of the text: every match succeeds where it
# starts, so no text is scanned twice (a hostile file of quotes and backslashes included).
_STRING = re.compile(r'"[^"\\]*+(?:\\.?[^"\\]*+)*+(?:"|\Z)', re.DOTALL)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
_BRACKET = re.compile(r"[\[\]{}]")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
_INT_DIGITS = sys.get_int_max_str_digits()  # 0: no limit
_LONG_INTEGER = re.compile(rf"[0-9]{{{_INT_DIGITS + 1},}}")
LONG_INTEGER_COMPLAINT = f"an integer of more than {_INT_DIGITS:,} digits"
_INT_BOUND = 10**_INT_DIGITS


class _NotJson(ValueError):
    def __init__(self, message: str, literal: str) -> None:
        super().__init__(message)
        self.literal = literal


def stored_number(literal: str) -> int | float:
    """A number with a fraction or an exponent, as PostgreSQL will give it back from JSON:
    with no digits after the point, an integer (`1e16` is 10000000000000000, `1.5e3` is 1500,
    `1.0` stays 1.0). A file read again then equals what its import stored, so syncing it
    again changes nothing."""
    decimal = Decimal(literal)
    if decimal.as_tuple().exponent >= 0:  # type: ignore[operator]  # a number, not NaN
        if _INT_DIGITS and decimal.adjusted() >= _INT_DIGITS:
            raise _NotJson(LONG_INTEGER_COMPLAINT, literal)
        return int(decimal)
    value = float(literal)
    if not math.isfinite(value):  # past a double's range; it would be stored as null
        raise _NotJson(f"{literal[:20]}… is beyond the range of a JSON number here", literal)
    return stored_float(value)


def stored_float(value: float) -> int | float:
    """A float as PostgreSQL gives it back once the service has written it: an integer where
    the service's JSON spells it with an exponent and no digits after the point (1e16 is
    sent as `1e+16`), and no negative zero. Finite floats only."""
    if not value:
        return 0.0
    text = fastjson.dumps(value)
    if "e" in text:
        decimal = Decimal(text)
        if decimal.as_tuple().exponent >= 0:  # type: ignore[operator]
            return int(decimal)
    return value


def too_long(integer: int) -> bool:
    """Whether an integer has more digits than Python converts to text (and so JSON)."""
    return bool(_INT_DIGITS) and abs(integer) >= _INT_BOUND


def too_long_to_build(text: str) -> bool:
    """Whether a number's text is too long to be worth building: four times the digits an
    integer may have, however it is written (in binary it has 3.3 times as many)."""
    return bool(_INT_DIGITS) and len(text) > 4 * _INT_DIGITS


def key_notes(notes: Iterable[str], keys: int) -> list[str]:
    """The notes on the first MAX_KEY_NOTES of `keys` keys an import left out, one a key,
    then how many more there were: a file may hold any number of distinct keys."""
    listed = list(islice(notes, MAX_KEY_NOTES))
    if keys > len(listed):
        listed.append(f"{keys - len(listed):,} more key(s) not imported are not listed")
    return listed


def _constant(literal: str) -> Any:
    raise _NotJson(f"{literal} is not a JSON number", literal)


class _Decoder(json.JSONDecoder):
    """json's decoder for imports: numbers as the database keeps them (`stored_number`), and
    NaN, Infinity or an integer longer than Python converts is bad JSON at its place (a
    JSONDecodeError, as bad syntax is)."""

    def __init__(self) -> None:
        super().__init__(parse_float=stored_number, parse_constant=_constant)

    def raw_decode(self, s: str, idx: int = 0) -> tuple[Any, int]:
        try:
            return super().raw_decode(s, idx)
        except json.JSONDecodeError:
            raise
        except _NotJson as exc:
            raise json.JSONDecodeError(str(exc), s, max(s.find(exc.literal, idx), 0)) from None
        except ValueError:
            found = _LONG_INTEGER.search(s, idx) if _INT_DIGITS else None
            if found is None:
                raise
            raise json.JSONDecodeError(LONG_INTEGER_COMPLAINT, s, found.start()) from None


DECODER = _Decoder()
_NESTING_COMPLAINT = f"nested more than {MAX_NESTING} levels deep"

# One item of a document: where it starts and ends in the text, and its value.
Item = tuple[int, int, Any]


def too_deep(text: str, limit: int) -> int | None:
    """The line (from 1) where JSON text first nests deeper than `limit` arrays and objects,
    or None. Brackets inside strings do not count.

    Python's decoder recurses once per level, so text must pass this before it is decoded:
    every step here is a scan in C, whatever the text holds."""
    if text.count("[") + text.count("{") <= limit:
        return None
    # Strings emptied, not removed: the lines outside them stay where they were.
    emptied = _STRING.sub('""', text)
    depths = accumulate(map(_STEP.__getitem__, _NOT_BRACKETS.sub("", emptied)))
    # Depth moves one level at a time: the first bracket past the limit is the first at limit + 1.
    index = next(compress(count(), map(operator.eq, depths, repeat(limit + 1))), None)
    if index is None:
        return None
    position = next(islice(_BRACKET.finditer(emptied), index, None)).start()
    return emptied.count("\n", 0, position) + 1


def bounded_json(text: str) -> Any:
    """The decoded value; ValueError past MAX_NESTING, checked before the decoder recurses."""
    if too_deep(text, MAX_NESTING) is not None:
        raise ValueError(_NESTING_COMPLAINT)
    return DECODER.decode(text)


def too_wide(text: str, start: int = 0, end: int | None = None) -> str | None:
    """Why text[start:end] is too large for one row, if it is (encoded only when it may be)."""
    length = (len(text) if end is None else end) - start
    if length * 4 <= MAX_ROW_BYTES:  # at most 4 UTF-8 bytes a character
        return None
    return width_complaint(len(text[start:end].encode()))


def width_complaint(size: int) -> str | None:
    return f"the row is {size:,} bytes; at most {MAX_ROW_BYTES:,}" if size > MAX_ROW_BYTES else None


def csv_row_too_wide(read: int, row: list[str]) -> str | None:
    """Why a CSV record of `read` bytes is too large for one case, if it is: its cells as
    UTF-8, as a JSON case is measured, are past the limit. CSV doubles each quote inside a
    quoted cell, so a record may be read up to twice the limit: an export of a case within
    the limit reads back."""
    if read <= MAX_ROW_BYTES:
        return None
    if read <= 2 * MAX_ROW_BYTES and sum(len(cell.encode()) for cell in row) <= MAX_ROW_BYTES:
        return None
    return width_complaint(read)


class MeasuredLines:
    """A text's lines for csv.reader, which reads one record's lines at a time: `take` tells
    how many UTF-8 bytes were read since it was last called."""

    def __init__(self, text: str) -> None:
        self._lines = io.StringIO(text, newline="")
        self._size = 0

    def __iter__(self) -> MeasuredLines:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self._size += len(line) if line.isascii() else len(line.encode())
        return line

    def take(self) -> int:
        size, self._size = self._size, 0
        return size


def json_items(text: str) -> Iterator[Item]:
    """The cases of a JSON document (an array, or an object with a "tests" array), each with
    where it starts and ends, decoded one at a time as they are asked for: a caller that
    refuses more than so many stops the reading there, the rest of the text never decoded.
    Raises json.JSONDecodeError for bad syntax, InvalidInput for another shape or for a case
    nesting deeper than MAX_NESTING."""
    position = _skip(text, 0)
    if position == len(text):
        return
    if not text.startswith(("[", "{"), position):
        raise InvalidInput("JSON must be an array of test cases or an object with a 'tests' array")
    frame = _ARRAY_FRAME if text.startswith("[", position) else _WRAPPER_FRAME
    line = too_deep(text, MAX_NESTING + frame)
    if line is not None:
        raise InvalidInput(
            f"Invalid JSON at line {line}: {_NESTING_COMPLAINT}",
            errors=[at_line(line, _NESTING_COMPLAINT)],
        )
    if frame == _ARRAY_FRAME:
        position = yield from _json_array(text, position)
    else:
        position = yield from _json_wrapper(text, position)
    if _skip(text, position) != len(text):
        raise json.JSONDecodeError("Extra data", text, _skip(text, position))


def _skip(text: str, position: int) -> int:
    match = _WHITESPACE.match(text, position)
    assert match is not None  # the pattern matches the empty string
    return match.end()


def _json_array(text: str, position: int) -> Generator[Item, None, int]:
    """Yields the array's items; returns where the array ends."""
    position = _skip(text, position + 1)
    if text.startswith("]", position):
        return position + 1
    while True:
        value, end = DECODER.raw_decode(text, position)
        yield position, end, value
        position = _skip(text, end)
        if text.startswith("]", position):
            return position + 1
        if not text.startswith(",", position):
            raise json.JSONDecodeError("Expecting ',' delimiter", text, position)
        position = _skip(text, position + 1)


def _json_wrapper(text: str, position: int) -> Generator[Item, None, int]:
    """An object whose "tests" (or "cases") member holds the array; other members are skipped."""
    found = False
    position = _skip(text, position + 1)
    while not text.startswith("}", position):  # "{}" ends here; a trailing comma cannot
        if not text.startswith('"', position):
            raise json.JSONDecodeError("Expecting property name", text, position)
        key, position = DECODER.raw_decode(text, position)
        position = _skip(text, position)
        if not text.startswith(":", position):
            raise json.JSONDecodeError("Expecting ':' delimiter", text, position)
        position = _skip(text, position + 1)
        if not found and key.lower() in ("tests", "cases") and text.startswith("[", position):
            found = True
            position = yield from _json_array(text, position)
        else:
            _, position = DECODER.raw_decode(text, position)
        position = _skip(text, position)
        if text.startswith(",", position):
            position = _skip(text, position + 1)
            if not text.startswith('"', position):
                raise json.JSONDecodeError("Expecting property name", text, position)
        elif not text.startswith("}", position):
            raise json.JSONDecodeError("Expecting ',' delimiter", text, position)
    if not found:
        raise InvalidInput("A JSON object must hold the test cases in a 'tests' array")
    return position + 1
