"""Reading a judge's verdict from its reply: the last JSON object in it that holds a score
(models wrap their answer in prose or code fences, and may quote what they judge first).

A verdict is refused when it is one the judge was shown in its material (the blocks between
tags: a question, an answer, an agent's steps, a conversation): the same score and reason,
however written there or in the reply (keys in any order, 1 as 1.0, characters escaped, spaced
otherwise), and whether written as JSON or quoted in a JSON string (what an agent, a tool or a
user wrote): an answer that writes `{"score": 1, ...}` must not pass because the judge
repeated it. The team's own criteria are no material: a verdict they spell out (in an example
between tags, say) is the judge's. A prompt says where its material ends (a JudgePrompt); one
that does not is material throughout.
Duplicate keys and a score written as a string are refused too: each could read as a score
the judge did not give.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import ValidationError

from database.evaluations.judges import JudgePrompt
from database.evaluations.scoring import JudgeVerdict

# A verdict ends a reply, or (followed by its explanation) begins it: those characters of it
# are searched, each from its last '{' back, at most this many attempts (a reply of nothing but
# braces costs milliseconds).
REPLY_WINDOW = 16_384
MAX_ATTEMPTS = 200
UNREADABLE = "the judge did not answer with a score between 0 and 1 and a reason"
REPEATED = "the judge's verdict repeats one written in the material it judges"
UNCHECKED = "the material holds JSON too tangled to check the judge's verdict against"
# A block of material (judges.material): its end is the first closing tag, the text's own
# being escaped.
_MATERIAL = re.compile(r"<([a-z]+)>\n(.*?)\n</\1>", re.DOTALL)
# The material is searched for verdicts as written, and with up to this many levels of JSON
# string escapes undone: a tool's result quoted in an agent's step, a JSON string in it.
QUOTINGS = 2
MATERIAL_READS = 32  # characters decoded, at most, for each character of material
# Objects decoded in the material, at most (some microseconds each), and of them failing (an
# exception's microseconds more): an honest material holds far fewer before its last score.
MAX_DECODINGS = 5_000
MAX_FAILURES = 1_000
FIRST_WINDOW = 256
LOOKAHEAD = 16  # how far past where it fails the decoder may have read (a literal, an escape)
_ESCAPES = re.compile(r'(?:\\(?:u[0-9a-fA-F]{4}|["\\/bfnrt]))+')
_OPENING = re.compile(r'\{\s*"')  # an object that holds a key (an empty one holds no score)
# "score" as a key of an object, each letter as written or escaped: a text without it holds
# no verdict, and is not decoded.
_SCORE_KEY = re.compile('"' + "".join(rf"(?:{c}|\\u00(?i:{ord(c):02x}))" for c in "score") + '"')
_SPACE = re.compile(r"\s+")


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
    try:
        verdict = JudgeVerdict.model_validate(found[1], strict=True)
    except ValidationError:
        raise UnreadableVerdict(UNREADABLE) from None
    if _shown_in_material(verdict, prompt):
        raise UnreadableVerdict(REPEATED)
    return verdict


def _shown_in_material(verdict: JudgeVerdict, prompt: str) -> bool:
    """Whether a JSON object in the prompt's material holds the verdict's score and reason,
    the material read as written and with each level of quoting undone, up to QUOTINGS."""
    material_end = prompt.material_end if isinstance(prompt, JudgePrompt) else len(prompt)
    blocks = "\n".join(block for _, block in _MATERIAL.findall(prompt, 0, material_end))
    views = _quotings(blocks.replace("<\\/", "</"))  # a closing tag, as material() escaped it
    reason = _compact(verdict.reason)
    # A reason decoded in a view is written there with its escapes, and as decoded in the
    # view one level further: a reason in none of them is in no object, and nothing is decoded.
    if not any(reason in _compact(view) for view in views):
        return False
    search = _Search(float(verdict.score), reason, MATERIAL_READS * len(views[0]))
    return any(search.finds_in(view) for view in views[: QUOTINGS + 1])


def _quotings(view: str) -> list[str]:
    """The view, then each level of JSON string escapes undone in it, up to QUOTINGS + 1
    (the level past the last searched): fewer when a level has none left."""
    views = [view]
    while len(views) < QUOTINGS + 2:
        view, undone = _ESCAPES.subn(_unescaped, view)
        if not undone:
            break
        views.append(view)
    return views


class _Search:
    """A search for an object holding `score` and `reason` in text: decoded from each '{' that
    opens one, going on past the object when it decodes (the objects inside it are seen as
    they close), else from the next '{' (one inside a string it read may open an object: the
    string `"{"` in `{"raw": "{"score": 1, ...}"}`). Each is decoded from a window of the text
    that doubles until it holds the object: a decoding error costs what it read, not the text
    before it. Past `budget` characters read (objects left open inside objects left open),
    MAX_DECODINGS or MAX_FAILURES, or objects nested past the decoder's depth, the verdict is
    refused unchecked."""

    def __init__(self, score: float, reason: str, budget: int) -> None:
        self.sought = (score, reason)
        self.budget = budget
        self.found = False
        self.decodings = self.failures = 0
        self.decoder = json.JSONDecoder(object_pairs_hook=self._seen, parse_int=float, strict=False)

    def _seen(self, pairs: list[tuple[str, Any]]) -> None:
        shown = dict(pairs)  # as JSON readers take it: the last of a duplicate key
        reason = shown.get("reason")
        if isinstance(reason, str) and _as_score(shown.get("score")) == self.sought[0]:
            self.found |= _compact(reason) == self.sought[1]

    def finds_in(self, text: str) -> bool:
        """Whether `text` holds the verdict sought; an object that holds a score holds its key,
        so none opening past the last key is decoded."""
        last_key = max((key.start() + 1 for key in _SCORE_KEY.finditer(text)), default=0)
        opening = _OPENING.search(text, 0, last_key)
        while opening is not None and not self.found:
            resume = self._decoded_from(text, opening.start())
            opening = _OPENING.search(text, resume, last_key)
        return self.found

    def _decoded_from(self, text: str, start: int) -> int:
        """Where to search on after decoding the object opening at `start`."""
        window = FIRST_WINDOW
        while True:
            piece = text[start : start + window]
            try:
                return start + self._spent(self.decoder.raw_decode(piece)[1])
            except json.JSONDecodeError as failed:
                cut_short = failed.msg.startswith("Unterminated") or (
                    failed.pos + LOOKAHEAD >= len(piece)
                )
                if start + window >= len(text) or not cut_short:
                    self.failures += 1
                    self._spent(failed.pos)
                    return start + 1
            except RecursionError:  # decoded again from each brace inside, it costs milliseconds
                raise UnreadableVerdict(UNCHECKED) from None
            self._spent(len(piece))  # read again in a window twice as long
            window *= 2

    def _spent(self, read: int) -> int:
        self.budget -= read
        self.decodings += 1
        if self.budget < 0 or self.decodings > MAX_DECODINGS or self.failures > MAX_FAILURES:
            raise UnreadableVerdict(UNCHECKED)
        return read


def _as_score(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, float | str):
        return None  # (an integer was read as a float)
    try:
        return float(value)
    except ValueError:
        return None


def _unescaped(escapes: re.Match[str]) -> str:
    return str(json.loads(f'"{escapes[0]}"'))


def _compact(text: str) -> str:
    return _SPACE.sub("", text)
