"""Checks of long answers: counting an answer's words without a list of them, and when a check
costs enough to be scored in a thread (declared beside its type in catalogue.py).

An answer may be ten megabytes. Work on it holds the interpreter, in any thread: scored in a
thread, a check that works a window at a time (a word count) lets the event loop serve every
other case, request and heartbeat between its windows. An edit distance is one call that holds
the interpreter throughout, in a thread too: there, the loop runs between a conversation's
turns, and `checks.MAX_SIMILARITY_CELLS` bounds each comparison.
"""

from __future__ import annotations

from database.evaluations.checks import INLINE_READ_CHARS
from database.evaluations.scopes import answer_lengths
from database.evaluations.scoring import MetricSpec, Observation
from utils.check_budget import CHECK_SECONDS, seconds_left

# Words are counted a window of the answer at a time: a list of one window's words (tens of
# thousands of short strings), never of ten million.
WORD_WINDOW = 65_536
# An edit distance costs the product of the two lengths: past this many cells over the answers
# a similarity check compares (some 3 ms of CJK text, on the loop), it is scored in a thread.
INLINE_COMPARED_CELLS = 10_000_000


def count_words(text: str) -> int:
    """`len(text.split())`, a window at a time, within the check's budget."""
    words = 0
    in_a_word = False  # whether the window before ended inside a word
    for start in range(0, len(text), WORD_WINDOW):
        seconds_left(CHECK_SECONDS)  # OutOfTime once the check's budget is spent
        window = text[start : start + WORD_WINDOW]
        words += len(window.split())
        if in_a_word and not window[0].isspace():
            words -= 1  # the word goes on from the window before: counted there
        in_a_word = not window[-1].isspace()
    return words


def word_count(spec: MetricSpec, obs: Observation) -> tuple[float, str]:
    words = count_words(obs.output)
    low, high = spec.parameters.get("min"), spec.parameters.get("max")
    if low is not None and words < low:
        return 0.0, f"{words} words, fewer than {low}"
    if high is not None and words > high:
        return 0.0, f"{words} words, more than {high}"
    return 1.0, f"{words} words"


def counts_much(spec: MetricSpec, obs: Observation) -> bool:
    """Whether a word count of `obs` reads more than a text check reads on the loop."""
    return sum(answer_lengths(spec, obs)) > INLINE_READ_CHARS


def compares_much(spec: MetricSpec, obs: Observation) -> bool:
    """Whether a similarity check of `obs` compares more than INLINE_COMPARED_CELLS: each
    answer its scope reads, by the reference."""
    reference = len(str(spec.parameters.get("value", obs.expected) or ""))
    return sum(answer_lengths(spec, obs)) * reference > INLINE_COMPARED_CELLS
