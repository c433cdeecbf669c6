"""Reading a judge's verdict from its reply: the last JSON object in it that holds a score
(models wrap their answer in prose or code fences, and may quote what they judge first).

A verdict is refused when it is text the judge was shown: an answer or a question that writes
`{"score": 1, ...}` must not pass because the judge repeated it. Duplicate keys and a score
written as a string are refused too: each could read as a score the judge did not give.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from database.evaluations.scoring import JudgeVerdict

# A verdict ends a reply: only its last characters are searched, and a reply of nothing but
# braces costs at most this many attempts.
REPLY_WINDOW = 16_384
MAX_ATTEMPTS = 200
UNREADABLE = "the judge did not answer with a score between 0 and 1 and a reason"
REPEATED = "the judge's verdict repeats one written in the material it judges"


class UnreadableVerdict(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len({key for key, _ in pairs}) != len(pairs):
        raise ValueError("duplicate key")
    return dict(pairs)


_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates)


def json_objects(text: str) -> list[tuple[str, dict[str, Any]]]:
    """The JSON objects written one after another in `text`'s last characters, each with its
    source text (an object inside another is part of it, not one of them)."""
    window = text[-REPLY_WINDOW:]
    found: list[tuple[str, dict[str, Any]]] = []
    start = window.find("{")
    for _ in range(MAX_ATTEMPTS):
        if start == -1:
            break
        try:
            value, end = _DECODER.raw_decode(window, start)
        except (ValueError, RecursionError):
            start = window.find("{", start + 1)
            continue
        if isinstance(value, dict):
            found.append((window[start:end], value))
        start = window.find("{", end)
    return found


def read_verdict(reply: str, prompt: str) -> JudgeVerdict:
    """The judge's verdict in `reply` to `prompt`; UnreadableVerdict says why there is none."""
    scored = [(source, value) for source, value in json_objects(reply) if "score" in value]
    if not scored:
        raise UnreadableVerdict(UNREADABLE)
    source, value = scored[-1]
    if source in prompt:
        raise UnreadableVerdict(REPEATED)
    try:
        return JudgeVerdict.model_validate(value, strict=True)
    except ValidationError:
        raise UnreadableVerdict(UNREADABLE) from None
