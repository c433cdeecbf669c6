"""Regular expressions that tenants send (a metric's pattern, a JSON schema's), compiled within
a budget.

Matching is bounded by `regex`'s own timeout; compiling is not, and `regex` copies the body
of a counted repeat as many times as its minimum count: `(?:a{1000}){1000}` takes 11 s and
250 MB to compile, from 17 characters. So the copies a pattern makes are counted from its text
first, and a pattern of more than MAX_COPIES is refused before it is compiled.

The count errs high, never low: each alternative counts, a character class counts as one part,
and a repeat of `{m,n}` counts m + 1 copies (the minimum, and the loop's own).
"""

from __future__ import annotations

import functools
import re
from typing import Any

import regex

MAX_COPIES = 1_000
_QUANTIFIER = re.compile(r"\{(\d*)(?:(,)(\d*))?\}|[*+?]")
_VERBOSE = re.compile(r"\(\?[a-zA-Z0-9^-]*x")  # (?x), (?V1x), (?x:...)
# Parts that stand between a part and its quantifier without being one (in `regex`, the
# quantifier repeats what came before them): a comment, a flags-only group such as (?i).
_TRANSPARENT = re.compile(r"\(\?#(?:\\.|[^\\)])*\)?|\(\?[a-zA-Z0-9^-]+\)")
# A fuzzy constraint, such as {e<=1}: `regex` drops one that allows no error, and then a
# quantifier after it repeats what came before, so it is passed over as well.
_FUZZY = re.compile(r"\{[\sedis0-9<>=+*,]*[edis][\sedis0-9<>=+*,]*\}")
# What follows "(" in a group's opening: "?:", "?P<name>", "?<=", "?i:", "?V1:", and so on.
_GROUP_OPENING = re.compile(
    r"\((?:\?(?:P?<(?![=!])[^>]*>|<[=!]|[=!>|:]|[a-zA-Z0-9^-]+:)|\?(?=\())?"
)
# A call of a group by number or name, or of the whole pattern: one part.
_GROUP_CALL = re.compile(r"\(\?(?:[-+]?\d+|R|&\w+|P>\w+)\)")
# Escapes whose argument is in braces or angle brackets: \p{L}, \x{263a}, \N{...}, \g<name>.
# Only an argument of the characters such a name has is passed over: where `regex` cannot read
# one, it reads the braces' text as pattern, and so must the count.
_ESCAPE_ARGUMENT = re.compile(
    r"\\[pP]\{[\w\s=:^&.-]*\}|\\N\{[\w\s-]*\}|\\x\{\w*\}|\\g[<{][\w+-]*[>}]|\\.", re.DOTALL
)
_CLASS_PART = 8  # characters of a character class that count as one more part


class PatternTooCostly(ValueError):
    pass


@functools.lru_cache(maxsize=256)  # scoring compiles a metric's pattern for every result
def compile_bounded(pattern: str, flags: int = 0) -> Any:
    """The compiled pattern; PatternTooCostly before compiling one that would copy its parts
    more than MAX_COPIES times, regex.error for one that is not a regular expression."""
    if _VERBOSE.search(pattern):
        raise PatternTooCostly("verbose mode (?x) is not supported; write the pattern without it")
    copies = _copies(pattern)
    if copies > MAX_COPIES:
        raise PatternTooCostly(
            f"the pattern's counted repeats make {copies:,} copies of its parts, more than "
            f"{MAX_COPIES:,}; use fewer, or a range from 0 such as {{0,n}}"
        )
    try:
        return regex.compile(pattern, flags)
    except RecursionError:  # groups nested some hundreds deep: the compiler recurses per level
        raise PatternTooCostly("the pattern nests too deep to compile") from None


def _copies(pattern: str) -> int:
    """How many parts compiling `pattern` makes, counted high (see the module's docstring)."""
    totals = [0]  # the running total of each open group, innermost last
    last = 0  # the size of the part just read, which a quantifier repeats
    position = 0
    while position < len(pattern):
        char = pattern[position]
        if char == "\\":
            escape = _ESCAPE_ARGUMENT.match(pattern, position)
            position = escape.end() if escape else len(pattern)
            last = 1
        elif char == "[":
            end, nested = _class_end(pattern, position)
            if nested:
                # A POSIX class, or a set within a set (V1): where it ends depends on the mode.
                raise PatternTooCostly(
                    "a character class holding [ is not supported; write it as \\["
                )
            last = 1 + (end - position) // _CLASS_PART  # a large class is a large part
            position = end
        elif (char == "(" and (transparent := _TRANSPARENT.match(pattern, position))) or (
            char == "{" and (transparent := _FUZZY.match(pattern, position))
        ):
            position = transparent.end()
            continue  # `last` stays what a quantifier after it repeats
        elif char == "(" and (call := _GROUP_CALL.match(pattern, position)) is not None:
            position = call.end()
            last = 1
        elif char == "(":
            opening = _GROUP_OPENING.match(pattern, position)
            assert opening is not None  # "(" alone matches
            totals.append(0)
            position = opening.end()
            last = 0
            continue
        elif char == ")" and len(totals) > 1:
            last = totals.pop()
            position += 1
        elif char == "|":
            position += 1
            last = 0
            continue
        else:
            quantifier = _QUANTIFIER.match(pattern, position)
            if quantifier is not None and quantifier.group(0) != "{}":
                times = _times(quantifier)
                totals[-1] += last * (times - 1)
                last *= times  # what a quantifier right after it would repeat again
                position = quantifier.end()
                if position < len(pattern) and pattern[position] in "?+":
                    position += 1  # lazy or possessive
                continue
            position += 1
            last = 1
        totals[-1] += last
    return sum(totals)


def _times(quantifier: re.Match[str]) -> int:
    """How many copies of its part a quantifier makes, counted high."""
    text = quantifier.group(0)
    if text in ("*", "?"):
        return 1
    if text == "+":
        return 2
    least = int(quantifier.group(1) or 0)
    ranged = quantifier.group(2) is not None and quantifier.group(3) != quantifier.group(1)
    return max(least, 1) + (1 if ranged and least >= 1 else 0)


def _class_end(pattern: str, start: int) -> tuple[int, bool]:
    """Where the character class opening at `start` ends (past its first `]`, or at the
    pattern's end), and whether it holds an unescaped `[`."""
    position = start + 1
    if pattern.startswith("^", position):
        position += 1
    if pattern.startswith("]", position):
        position += 1  # a leading ] is the character itself
    nested = False
    while position < len(pattern):
        if pattern[position] == "\\":
            position += 2
        elif pattern[position] == "]":
            return position + 1, nested
        else:
            nested = nested or pattern[position] == "["
            position += 1
    return len(pattern), nested
