"""Text in Unicode's composed normal form (NFC), as the text checks compare it: "é" typed as one
character and as "e" followed by an accent are the same text.

Normalising is linear in the text but for one step: CPython puts each run of combining marks
in order by insertion sort, quadratic in the run (32,000 marks took 2.3 s, a million would take
an hour). As Unicode's Stream-Safe Text Format does (UAX #15), a combining grapheme joiner is
put after every MAX_RUN marks of a run, far more than any script stacks. A long text is
normalised a window at a time, cut before a character that normalising never joins to what
precedes it, and the check's budget is consulted between windows."""

from __future__ import annotations

import unicodedata

import regex

from utils.check_budget import CHECK_SECONDS, seconds_left

# A starter that is never the second of a composition: normalising never joins it to what
# precedes it, so a text cut before one is normalised in pieces as it is whole.
_STABLE = r"[\p{ccc=0}&&\p{NFC_QC=Yes}]"
_NEXT_STABLE = regex.compile(_STABLE, regex.V1)
MAX_RUN = 30  # characters between two stable ones, as UAX #15's Stream-Safe Text Format
_RUN_TO_CUT = regex.compile(rf"[^{_STABLE}]{{{MAX_RUN}}}(?=[^{_STABLE}])", regex.V1)
GRAPHEME_JOINER = "\u034f"  # stable, and invisible: it keeps a run's marks on each side apart
# Normalising holds the interpreter, in any thread: up to some 300 ns a character (a text of
# long runs of marks), so a window is some 10 ms at most.
WINDOW = 32_768
_CUT_SEARCH = MAX_RUN + 2  # characters past a window's end searched for a place to cut it


def composed(text: str) -> str:
    """`text` in NFC, its runs of more than MAX_RUN marks cut; OutOfTime when the check's
    budget is spent."""
    if text.isascii():  # ASCII is its own normal form (and isascii() reads no character)
        return text
    pieces = []
    start = 0
    while start < len(text):
        seconds_left(CHECK_SECONDS)  # OutOfTime once the check's budget is spent
        end = _cut(text, start + WINDOW)
        pieces.append(_composed_piece(text[start:end]))
        start = end
    return "".join(pieces)


def _cut(text: str, at: int) -> int:
    """Where the window that would end at `at` ends: before the next stable character, at
    the text's end, or (in a run longer than MAX_RUN, cut anyway) at `at`."""
    if at + _CUT_SEARCH >= len(text):
        stable = _NEXT_STABLE.search(text, at)
        return len(text) if stable is None else stable.start()
    stable = _NEXT_STABLE.search(text, at, at + _CUT_SEARCH)
    return at if stable is None else stable.start()


def _composed_piece(piece: str) -> str:
    if unicodedata.is_normalized("NFC", piece):  # most text, read without being rewritten
        return piece
    return unicodedata.normalize("NFC", _RUN_TO_CUT.sub(rf"\g<0>{GRAPHEME_JOINER}", piece))
