"""The template budget's charges for filters and tests: their arguments checked before they run
(sizes known in advance), what they read charged by how they work through it (per character,
word or item in Python, per 100 characters in C), what they build checked after."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sized
from functools import wraps
from typing import Any

from jinja2.filters import ignore_case, make_attrgetter
from jinja2.runtime import Undefined

from utils.template_budget import (
    CHARACTERS_PER_STEP,
    COPIED_PER_STEP,
    TEXT,
    BudgetExceeded,
    charge_range_search,
    check_built,
    check_printable,
    check_text_result,
    compared,
    counted,
    current,
    indented_size,
    joined_size,
    walk,
)
from utils.template_hashing import hashed
from utils.template_operators import check_integers, check_printf

# Filters that do Python work for every item of their input, and those that do for every item
# nested in a collection: a step per item they work through. Of a text, the first four work
# through every character in Python, and the next three through every word (a step per
# CHARACTERS_PER_WORD); the others read text in C (a step per CHARACTERS_PER_STEP).
PER_ITEM_FILTERS = frozenset(
    {"sort", "unique", "min", "max", "sum", "map", "select", "reject", "selectattr"}
    | {"rejectattr", "groupby", "batch", "slice", "title", "wordwrap", "wordcount"}
    | {"urlencode"}
)
PER_CHARACTER_FILTERS = frozenset({"unique", "min", "max", "urlencode"})
PER_WORD_FILTERS = frozenset({"title", "wordwrap", "wordcount"})
CHARACTERS_PER_WORD = 10
NESTED_ITEM_FILTERS = frozenset({"tojson", "dictsort", "xmlattr"})
# Filters that never make text of a whole argument. Any other may (`string`, `upper`, `e`,
# `replace`'s new text ...), in C and before its result can be measured: a list nesting itself
# twice over 26 times is some 600 characters of template and 600 million printed, so each of
# their arguments that is not text is measured first, as printing it would count it.
UNPRINTING_FILTERS = frozenset(
    {"length", "count", "first", "last", "list", "reverse", "random", "default", "d", "attr"}
    | {"items", "sort", "unique", "min", "max", "sum", "map", "select", "reject", "selectattr"}
    | {"rejectattr", "groupby", "batch", "slice", "dictsort", "join", "abs", "int", "float"}
    | {"round", "filesizeformat"}
)


def _wrapping_work(text: str, width: int) -> int:
    """`wordwrap` breaks a word (or a run of spaces) longer than its width one line at a time,
    copying the rest each time: n * n / width characters for a run of n."""
    if width < 1 or width >= len(text):
        return 0
    # Runs of what textwrap splits on (ASCII whitespace only: "a\u00a0" repeated is one word to
    # it), each matched from its start only (the look-behinds): without them, a run just
    # shorter than the width was scanned again from each of its characters, in C, holding the
    # interpreter for seconds before anything was charged.
    space, word = r"[\t\n\x0b\x0c\r ]", r"[^\t\n\x0b\x0c\r ]"
    runs = re.finditer(
        rf"(?<!{word}){word}{{{width + 1},}}|(?<!{space}){space}{{{width + 1},}}", text
    )
    return sum((run.end() - run.start()) ** 2 for run in runs) // width // COPIED_PER_STEP


def _check_filter_arguments(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    budget = current()
    if name not in UNPRINTING_FILTERS:  # what the filter walks is measured as it is charged
        printed = args[1:] if args and _walked(name, args[0]) else args
        for argument in [*printed, *kwargs.values()]:
            check_printable(argument)
    value = args[0] if args else None
    rest = [*args[1:], *kwargs.values()]
    for argument in rest:  # read, at least once (`trim`'s characters: each time one is cut)
        if isinstance(argument, TEXT):
            budget.spend(len(argument) // CHARACTERS_PER_STEP)
    _check_attribute_path(name, args[1:], kwargs)
    if name == "center" and rest and isinstance(rest[0], int):
        budget.allow(rest[0])
    elif name == "indent" and isinstance(value, str):
        width = rest[0] if rest else 4
        size = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
        budget.allow(len(value) + (value.count("\n") + 1) * size)
    elif name == "format" and isinstance(value, str):
        check_printf(value, kwargs or tuple(args[1:]))  # as jinja's filter formats
    elif name == "join":
        budget.allow(joined_size(rest[0] if rest else "", value))
    elif name == "replace" and isinstance(value, str) and len(rest) >= 2:
        check_text_result(value, "replace", rest)
    elif name in ("slice", "batch", "wordwrap", "truncate") and rest:
        if isinstance(rest[0], int):
            budget.allow(rest[0], "pieces")
    elif name == "tojson" and rest and isinstance(rest[0], int | str):  # an indent, or its text
        indent = len(rest[0]) if isinstance(rest[0], str) else rest[0]
        budget.allow(indented_size(value, max(indent, 0), budget.max_chars))
    elif name == "round":
        precision = kwargs.get("precision", args[1] if len(args) > 1 else 0)
        if isinstance(precision, int) and abs(precision) > MAX_ROUND_DIGITS:  # (others err)
            raise BudgetExceeded(
                f"`round` takes a precision of at most {MAX_ROUND_DIGITS} digits either way"
            )
    elif name == "sum":
        start = kwargs.get("start", rest[1] if len(rest) > 1 else 0)
        if not isinstance(start, int | float):
            raise BudgetExceeded("`sum` adds numbers only")
    if name == "wordwrap" and isinstance(value, str):
        width = kwargs.get("width", args[1] if len(args) > 1 else 79)
        wrapstring = kwargs.get("wrapstring", args[3] if len(args) > 3 else None)
        if isinstance(width, int):
            budget.spend(_wrapping_work(value, width))
            if isinstance(wrapstring, str):  # between every two lines it makes
                budget.allow(len(value) + (len(value) // max(width, 1) + 1) * len(wrapstring))


# `round` computes 10 ** precision (in C, holding the interpreter: a precision of -10**7 held
# every thread 7 s); a float has 17 significant digits, an integer of the cap some 30,000.
MAX_ROUND_DIGITS = 400
# The filters that read each item's attribute by a dotted path (jinja's make_attrgetter; for
# `sort`, several, comma-separated): the path's position among their arguments. Each part is
# looked up for each item, uncharged.
ATTRIBUTE_POSITIONS = {"sort": 2, "unique": 1, "min": 1, "max": 1, "join": 1, "sum": 0}
ATTRIBUTE_POSITIONS |= {"groupby": 0, "selectattr": 0, "rejectattr": 0}
MAX_ATTRIBUTE_PARTS = 16


def _check_attribute_path(name: str, rest: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    position = ATTRIBUTE_POSITIONS.get(name)
    path = kwargs.get("attribute")
    if path is None and position is not None and len(rest) > position:
        path = rest[position]
    if isinstance(path, str) and path.count(".") + path.count(",") >= MAX_ATTRIBUTE_PARTS:
        raise BudgetExceeded(f"an attribute path has at most {MAX_ATTRIBUTE_PARTS} parts")


def _walked(name: str, value: Any) -> bool:
    """Whether the filter's input is walked to be charged (_charge_input)."""
    per_item = name in PER_ITEM_FILTERS or name in NESTED_ITEM_FILTERS
    return per_item and not isinstance(value, (*TEXT, Undefined, Iterator))


def _charge_input(name: str, value: Any) -> Any:
    """What a filter reads: a step per 100 characters or items, or per item for the filters
    that work through each in Python (as they go, for an iterator). Returns what they read."""
    budget = current()
    per_item = name in PER_ITEM_FILTERS or name in NESTED_ITEM_FILTERS
    if isinstance(value, Undefined):
        return value
    if per_item and isinstance(value, Iterator):
        return counted(value)
    if name in PER_CHARACTER_FILTERS and isinstance(value, TEXT):
        budget.spend(len(value))
    elif name in PER_WORD_FILTERS and isinstance(value, TEXT):
        budget.spend(len(value) // CHARACTERS_PER_WORD)
    elif _walked(name, value):
        before = budget.steps
        size, items = walk(value, budget.steps * CHARACTERS_PER_STEP)
        if name not in UNPRINTING_FILTERS and size > budget.max_chars:
            budget.allow(size)  # refused: the filter would print it whole (`title`, `tojson`)
        walked = before - budget.steps  # a first walk pays for its items: not twice
        budget.spend(max(items - walked, 0) + size // CHARACTERS_PER_STEP)
    elif isinstance(value, Sized):
        budget.spend(len(value) // CHARACTERS_PER_STEP)
    return value


def bounded_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """A filter with its arguments checked and its input charged first, its result charged
    after. Filters that take the context or environment first (jinja passes those positionally)
    are told apart by jinja's own marker, which `wraps` copies."""
    extra = 1 if getattr(function, "jinja_pass_arg", None) is not None else 0

    @wraps(function)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        own = args[extra:]
        _check_filter_arguments(name, own, kwargs)
        current().spend()
        if own:
            read = _charge_input(name, own[0])
            if name == "unique" and not isinstance(read, (*TEXT, Undefined)):
                read = hashed(read, _unique_key(args[0], own[1:], kwargs))
            args = (*args[:extra], read, *own[1:])
        return check_built(function(*args, **kwargs))

    return bounded


def _unique_key(environment: Any, rest: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """What `unique` tells its items apart by (jinja's `do_unique`): the keys it hashes."""
    case_sensitive = kwargs.get("case_sensitive", rest[0] if rest else False)
    attribute = kwargs.get("attribute", rest[1] if len(rest) > 1 else None)
    postprocess = None if case_sensitive else ignore_case
    return make_attrgetter(environment, attribute, postprocess=postprocess)


def bounded_test(name: str, function: Any) -> Callable[..., Any]:
    """A test (`x is in(items)`, `x is divisibleby(n)` ...), charged as comparisons are."""
    extra = 1 if getattr(function, "jinja_pass_arg", None) is not None else 0

    @wraps(function)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        own = args[extra:]
        current().spend()
        for position, value in enumerate([*own, *kwargs.values()]):
            if name == "in" and position == 1 and isinstance(value, range):
                charge_range_search(value, own[0])
            else:
                compared(value, haystack=name == "in" and position == 1)
        if name == "divisibleby" and len(own) == 2 and all(isinstance(v, int) for v in own):
            check_integers("%", own[0], own[1])
        return function(*args, **kwargs)

    return bounded


# Filters that run regular expressions which can take quadratic time on hostile text, for
# HTML that prompts do not need; and `pprint`, whose indentation grows with depth: a list
# nested 320 deep printed 3 million characters from 100,000 (4 s), unforeseeable by its size
# (`tojson` pretty-prints with an `indent`, measured).
REMOVED_FILTERS = frozenset({"striptags", "urlize", "pprint"})
