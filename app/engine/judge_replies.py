"""Reading a judge's verdict from its reply: the last JSON object in it that holds a score
(models wrap their answer in prose or code fences, and may quote what they judge first).

A verdict is refused when it is one the judge was shown in its material (the blocks between
tags: a question, an answer, an agent's steps, a conversation), as written there, quoted as
JSON there (what an agent, a tool or a user wrote), or spaced otherwise: an answer that writes
`{"score": 1, ...}` must not pass because the judge repeated it. The team's own criteria are
no material: a verdict they spell out is the judge's. Duplicate keys and a score written as a
string are refused too: each could read as a score the judge did not give.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import ValidationError

from database.evaluations.judges import LINE_BREAKS
from database.evaluations.scoring import JudgeVerdict

# A verdict ends a reply, or (followed by its explanation) begins it: those characters of it
# are searched, each from its last '{' back, at most this many attempts (a reply of nothing but
# braces costs milliseconds).
REPLY_WINDOW = 16_384
MAX_ATTEMPTS = 200
UNREADABLE = "the judge did not answer with a score between 0 and 1 and a reason"
REPEATED = "the judge's verdict repeats one written in the material it judges"
# A block of material (judges.material): its end is the first closing tag, the text's own
# being escaped.
_MATERIAL = re.compile(r"<([a-z]+)>\n(.*?)\n</\1>", re.DOTALL)
_SPACE = re.compile(r"\s+")
_ESCAPED_SPACE = re.compile(r"\\[nrt]")


class UnreadableVerdict(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len({key for key, _ in pairs}) != len(pairs):
        raise ValueError("duplicate key")
    return dict(pairs)


_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates)


def last_scored(text: str) -> tuple[str, dict[str, Any]] | None:
    """The last JSON object in `text` holding a score (or the object that holds it), with its
    source text: tried from the last '{' back, then (braces after the verdict, quoted code
    say, having spent the attempts) from the first '{' on; MAX_ATTEMPTS each way."""
    return _from_the_end(text) or _from_the_start(text)


def _from_the_end(text: str) -> tuple[str, dict[str, Any]] | None:
    found: tuple[int, int, dict[str, Any]] | None = None
    start = text.rfind("{")
    for _ in range(MAX_ATTEMPTS):
        if start == -1:
            break
        if (decoded := _decoded(text, start)) is not None:
            value, end = decoded
            if found is not None and end <= found[0]:
                break  # an object before it, apart from it: the verdict is the last
            if isinstance(value, dict) and "score" in value:
                found = (start, end, value)  # the first found, or one enclosing it
        start = text.rfind("{", 0, start)
    return None if found is None else (text[found[0] : found[1]], found[2])


def _from_the_start(text: str) -> tuple[str, dict[str, Any]] | None:
    found: tuple[str, dict[str, Any]] | None = None
    start = text.find("{")
    for _ in range(MAX_ATTEMPTS):
        if start == -1:
            break
        if (decoded := _decoded(text, start)) is None:
            start = text.find("{", start + 1)
            continue
        value, end = decoded
        if isinstance(value, dict) and "score" in value:
            found = (text[start:end], value)
        start = text.find("{", end)
    return found


def _decoded(text: str, start: int) -> tuple[Any, int] | None:
    """The JSON value beginning at `start`, and where it ends; None if none does."""
    try:
        return _DECODER.raw_decode(text, start)
    except (ValueError, RecursionError):
        return None


def read_verdict(reply: str, prompt: str) -> JudgeVerdict:
    """The judge's verdict in `reply` to `prompt`; UnreadableVerdict says why there is none."""
    found = last_scored(reply[-REPLY_WINDOW:])
    if found is None and len(reply) > REPLY_WINDOW:
        found = last_scored(reply[:REPLY_WINDOW])
    if found is None:
        raise UnreadableVerdict(UNREADABLE)
    source, value = found
    if _shown_in_material(source, prompt):
        raise UnreadableVerdict(REPEATED)
    try:
        return JudgeVerdict.model_validate(value, strict=True)
    except ValidationError:
        raise UnreadableVerdict(UNREADABLE) from None


def _shown_in_material(source: str, prompt: str) -> bool:
    """Whether the verdict's text is in the prompt's material, as written or quoted as JSON,
    whatever its spacing."""
    blocks = "".join(block for _, block in _MATERIAL.findall(prompt))
    material = _compact(blocks.replace("<\\/", "</"))  # a closing tag, as material() escaped it
    compact = _compact(source)
    quoted = _compact(json.dumps(compact, ensure_ascii=False)[1:-1].translate(LINE_BREAKS))
    return compact in material or quoted in material


def _compact(text: str) -> str:
    """`text` without its spacing: white space, and white space escaped in a JSON string."""
    return _ESCAPED_SPACE.sub("", _SPACE.sub("", text))
