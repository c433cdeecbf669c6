"""promptfoo assertion values rendered with a test's vars ({{ name }} replaced by the var's
value), within one budget per upload.

defaultTest's assertions and vars apply to every test, so what a file holds once is rendered
once per test: a 1 MB mapping in defaultTest.vars filled into a defaultTest assertion was
serialised anew for each test (a minute of an import thread for 10,000 tests, the rows all
refused, so no bound on the cases' size applied). A value that is not text is serialised
once per upload (by identity: the upload's documents hold it for as long as the upload is
read), and every render is charged, in characters read and written, to MAX_RENDERED_CHARS."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

MAX_TEXT = 10_000  # characters of one rendered value
# Characters read (templates, values serialised) and written by one upload's renders. A file
# whose renders all succeed writes them into its cases, which MAX_EXPANDED_BYTES (64 MB of
# JSON) bounds already, and reads its templates about as long: twice that refuses none of
# them, and bounds the refused ones (a render refused as too long is charged too).
MAX_RENDERED_CHARS = 128 * 1024 * 1024
_TEMPLATE = re.compile(r"\{\{\s*([A-Za-z_$][\w$]*)\s*\}\}")
_KEPT_TEXT = 2_000_000  # a serialised value longer than any limit is remembered by length


class OverBudget(Exception):
    """The upload's renders went past MAX_RENDERED_CHARS: the whole upload is refused (not a
    ValueError, which refuses one test and goes on with the next)."""


@dataclass
class _Upload:
    chars: int = 0
    # id -> (the value, kept alive so its id is not reused; its JSON text or None; its length)
    serialised: dict[int, tuple[Any, str | None, int]] = field(default_factory=dict)


_UPLOAD: ContextVar[_Upload | None] = ContextVar("rendered_upload", default=None)


@contextlib.contextmanager
def one_upload() -> Iterator[None]:
    """The renders within it share one budget of MAX_RENDERED_CHARS, and serialise each value
    that is not text once."""
    token = _UPLOAD.set(_Upload())
    try:
        yield
    finally:
        _UPLOAD.reset(token)


def _charge(upload: _Upload, chars: int) -> None:
    upload.chars += chars
    if upload.chars > MAX_RENDERED_CHARS:
        raise OverBudget(
            f"the assertion values come to more than {MAX_RENDERED_CHARS:,} characters once"
            " rendered with each test's vars (defaultTest's are rendered for every test):"
            " split the file"
        )


def _serialised(value: Any, limit: int) -> str:
    """The value's JSON text; ValueError past `limit` characters."""
    upload = _UPLOAD.get() or _Upload()  # outside one_upload, a budget of the value's own
    found = upload.serialised.get(id(value))
    if found is None:
        dumped = json.dumps(value, ensure_ascii=False)
        _charge(upload, len(dumped))
        kept = dumped if len(dumped) <= _KEPT_TEXT else None
        found = upload.serialised[id(value)] = (value, kept, len(dumped))
    _, dumped_text, size = found
    if size > limit or dumped_text is None:
        raise ValueError(f"the value is {size:,} characters; at most {limit:,}")
    return dumped_text


def render(template: str, variables: Mapping[str, Any], limit: int) -> str:
    """{{ name }} of a var replaced by its value; any other template syntax left as written.
    Measured as it is built: past `limit` characters it stops (a ValueError)."""
    upload = _UPLOAD.get() or _Upload()
    _charge(upload, len(template))
    pieces: list[str] = []
    size, end = 0, 0
    too_long = f"the value is over {limit:,} characters once its vars are filled in"
    for match in _TEMPLATE.finditer(template):
        name = match.group(1)
        found = variables[name] if name in variables else match.group(0)
        try:
            piece = found if isinstance(found, str) else _serialised(found, limit)
        except ValueError:
            raise ValueError(too_long) from None
        pieces += [template[end : match.start()], piece]
        size += match.start() - end + len(piece)
        end = match.end()
        if size > limit:
            raise ValueError(too_long)
    size += len(template) - end
    if size > limit:
        raise ValueError(
            too_long if pieces else f"the value is {size:,} characters; at most {limit:,}"
        )
    pieces.append(template[end:])
    _charge(upload, size)
    return "".join(pieces)


def sole_var(template: str) -> str | None:
    """The var's name when the template is that var alone (`{{ name }}`)."""
    whole = _TEMPLATE.fullmatch(template.strip())
    return whole.group(1) if whole else None


def text(value: Any, variables: Mapping[str, Any], limit: int = MAX_TEXT) -> str:
    """A value as the text a metric compares with (JSON for anything but a string)."""
    rendered = (
        render(value, variables, limit) if isinstance(value, str) else _serialised(value, limit)
    )
    if not rendered:
        raise ValueError("the value is empty")
    return rendered
