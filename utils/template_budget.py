"""The template sandbox's budget: how much work one render may do and how much it may build.

A render gets `steps` (every loop iteration, every call, every 100 characters the template builds
or a call reads, every item a filter works through in Python, and big-integer arithmetic by the
size of its operands) and a cap on the size of any text, bytes, collection or integer it builds,
checked *before* building wherever an operation's size is known in advance (`*`, `+`, `~`, `%`,
`**`, `ljust`, format widths, `join`, `center`, `indent` ...) and after the fact elsewhere. The
budget lives in a context variable, so concurrent renders in different threads each have their
own; outside a render there is none, and nothing runs (templates compile with nothing
evaluated: `utils.templates`). What filters and tests pay is in `utils.template_filters`,
what operators and formats pay in `utils.template_operators`, the keys of sets and dicts in
`utils.template_hashing`.
"""

from __future__ import annotations

import codecs
from collections.abc import Collection, Iterable, Iterator, Mapping, Set
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from jinja2.runtime import LoopContext, Macro, Undefined

CHARACTERS_PER_STEP = 100
MAX_INT_BITS = 100_000
# CPython's big-integer multiplication and division: about a microsecond, a step, per million
# of (bits of one operand) x (bits of the other).
BIT_WORK_PER_STEP = 1_000_000
# `wordwrap` copies characters when it breaks a long word: a few thousand a microsecond.
COPIED_PER_STEP = 2_000

TEXT = (str, bytes, bytearray)
REPR_OF_AN_OBJECT = 32  # a float's or a template object's printed length, at most about
NAMESPACE_ATTRIBUTES = "_Namespace__attrs"  # what jinja's namespace() holds, and prints
SEQUENCES = (*TEXT, list, tuple)


class BudgetExceeded(Exception):
    """A render went over its step budget or tried to build more than the cap allows."""


@dataclass
class Budget:
    steps: int
    max_chars: int
    # Collections measured in this render, by id (each held, so no id is reused): the sandbox
    # keeps them immutable, so each is walked once however often it is compared or printed.
    walked: dict[int, tuple[Any, int, int]] = field(default_factory=dict)

    def spend(self, steps: int = 1) -> None:
        self.steps -= steps
        if self.steps < 0:
            raise BudgetExceeded(
                "the template does more work than its step budget allows "
                "(loop iterations, calls and text built)"
            )

    def allow(self, size: int, what: str = "text") -> None:
        """Refuses to build `size` characters (or items); charges the ones it allows."""
        if size > self.max_chars:
            raise BudgetExceeded(
                f"the template would build {what} of {size} characters or items, "
                f"more than the cap of {self.max_chars}"
            )
        self.spend(size // CHARACTERS_PER_STEP)


_CURRENT: ContextVar[Budget | None] = ContextVar("template_budget", default=None)


def current() -> Budget:
    budget = _CURRENT.get()
    if budget is None:  # nothing a template computes runs but in a render
        raise BudgetExceeded("template code ran outside a render")
    return budget


def start(budget: Budget) -> object:
    return _CURRENT.set(budget)


def finish(token: object) -> None:
    _CURRENT.reset(token)  # type: ignore[arg-type]


def weight(value: Any, limit: int) -> int:
    return walk(value, limit)[0]


def walk(value: Any, limit: int) -> tuple[int, int]:
    """What `str(value)` would cost, in characters or items, counted up to just past `limit`
    (shared references count each time they appear, as they do when printed), and how many
    items it holds. Walking costs a step per item in it, and stops where the budget could not
    pay for more; a collection is walked once a render, and a part walked before is counted
    by its sums (so a list of one list twice costs a walk of three items)."""
    budget = current()
    known = budget.walked.get(id(value))
    if known is not None:
        return known[1], known[2]
    total = items = held = 0
    mutable = False
    pending = [value]
    while pending and total <= limit and items <= budget.steps:
        item = pending.pop()
        known = budget.walked.get(id(item))
        if known is not None and known[0] is item:  # a part walked before: its sums, unwalked
            total, held = total + known[1], held + known[2]
            continue
        items += 1
        if isinstance(item, TEXT):
            total += len(item)
        elif isinstance(item, bool | Undefined) or item is None:
            total += 1
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 1
        elif isinstance(item, Mapping):
            total += len(item) + 1
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, Collection) and not isinstance(item, range):
            total += len(item) + 1
            pending.extend(item)
        elif hasattr(item, NAMESPACE_ATTRIBUTES):  # jinja's namespace() prints its contents
            pending.append(getattr(item, NAMESPACE_ATTRIBUTES))
            mutable = True  # `{% set ns.x = ... %}` changes it
        elif isinstance(item, range):  # its bounds in decimal
            bits = item.start.bit_length() + item.stop.bit_length() + item.step.bit_length()
            total += bits // 3 + 12
        elif isinstance(item, Macro):  # its repr names it
            total += len(item.name or "") + 16  # (a `{% call %}` block's caller has none)
        else:  # a float, or another object: its repr, at most about this long
            total += REPR_OF_AN_OBJECT
    budget.spend(max(items - 1, 0))
    if not (pending or mutable or isinstance(value, TEXT)) and isinstance(value, Collection):
        budget.walked[id(value)] = (value, total, items + held)
    return total, items + held


def indented_size(value: Any, indent: int, limit: int) -> int:
    """About what `json.dumps(value, indent=indent)` prints, counted up to just past `limit`:
    every item on a line of its own, indented by its depth (which its size alone does not
    tell: 600 nested lists at an indent of 250 printed 180 million characters). A step an
    item, as `walk` charges."""
    budget = current()
    total = items = 0
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending and total <= limit and items <= budget.steps:
        item, depth = pending.pop()
        items += 1
        total += depth * indent + 2  # its line: the indentation, a separator, a newline
        if isinstance(item, TEXT):
            total += len(item) + 2
        elif isinstance(item, Mapping):
            total += 2
            pending.extend((key, 0) for key in item)  # on its value's line
            pending.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, Collection) and not isinstance(item, range):
            total += 2
            pending.extend((child, depth + 1) for child in item)
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 1
        else:
            total += REPR_OF_AN_OBJECT
    budget.spend(max(items - 1, 0))
    return total


def check_built(value: Any) -> Any:
    """After an operation whose size could not be known before: refuse or charge the result."""
    if isinstance(value, int) and not isinstance(value, bool):
        integer_within_cap(value.bit_length())
    elif isinstance(value, Collection) and not isinstance(value, range):
        budget = current()
        budget.allow(weight(value, budget.max_chars))
    return value


def check_held(value: Any) -> Any:
    """A collection a template builds by listing its parts (a list, tuple or dict literal, a
    macro's arguments, a cycler's items): refused if it would print past the cap, each part
    weighed first (so a part is walked once however often it is listed). Only its own items
    are charged: the parts' sizes are no work of listing them. Listed twice over, a list of
    itself weighs twice as much each time: 30 times over, comparing, hashing or printing it
    would work through a billion items."""
    budget = current()
    parts = value.values() if isinstance(value, Mapping) else value
    for part in parts:
        if isinstance(part, Collection) and not isinstance(part, (*TEXT, range)):
            weight(part, budget.max_chars)
    size = weight(value, budget.max_chars)
    if size > budget.max_chars:
        budget.allow(size, "a collection")
    return value


def check_printed(value: Any) -> Any:
    """Before `value` is printed: what check_built does, and a namespace measured too (it
    prints what it holds; made, it is not measured, for it may be made in a loop)."""
    if hasattr(value, NAMESPACE_ATTRIBUTES):
        check_printable(value)
        return value
    return check_built(value)


def counted(iterable: Iterable[Any]) -> Iterator[Any]:
    """A loop's iterable, one step per iteration."""
    budget = current()
    for item in iterable:
        budget.spend()
        yield item


def compared(value: Any, haystack: bool = False, last: bool = True) -> Any:
    """An operand of a comparison or a test (`==`, `<`, `in`): a step per item and per 100
    characters it holds, but for the set or mapping that `in` looks a key up in. A range
    searched is charged by what is looked for in it, when it is the last operand (one in the
    middle of a chain, `a in r < b`, is compared on: charged as a scan, and left as it is)."""
    if value is None or isinstance(value, bool | int | float):  # (integers are capped)
        return value
    if isinstance(value, TEXT):
        current().spend(len(value) // CHARACTERS_PER_STEP)
    elif haystack and isinstance(value, range):
        if last:
            return SearchedRange(value)
        current().spend(len(value) // CHARACTERS_PER_STEP)
    elif not (haystack and isinstance(value, Mapping | Set)):
        budget = current()
        budget.spend(weight(value, budget.steps * CHARACTERS_PER_STEP) // CHARACTERS_PER_STEP)
    return value


# Code that runs repeatedly (a loop's body, a macro's, a block's) is charged a step per this many
# of its nodes each time it runs.
NODES_PER_STEP = 20


def spent(steps: int) -> str:
    """The charge of a piece of code, placed where it starts to run
    (utils.template_compiling.instrument): it prints nothing, and is false."""
    current().spend(steps)
    return ""


def charge_range_search(items: range, needle: Any) -> None:
    """An exact integer is found in a range by arithmetic; anything else is compared with each
    item in turn (in C: a 100,000-item range searched 20,000 times held a thread two minutes),
    a step per 100 items."""
    if type(needle) not in (int, bool):
        current().spend(len(items) // CHARACTERS_PER_STEP)


class SearchedRange:
    """A range on the right of `in` (utils.template_compiling.BudgetedCode): the search charged."""

    __slots__ = ("items",)

    def __init__(self, items: range) -> None:
        self.items = items

    def __contains__(self, needle: Any) -> bool:
        charge_range_search(self.items, needle)
        return needle in self.items

    def __eq__(self, other: object) -> bool:  # a chained comparison compares it on
        return self.items == other

    __hash__ = None  # type: ignore[assignment]


# --- sizes known before building ------------------------------------------------------------


def integer_within_cap(bits: int) -> None:
    if bits > MAX_INT_BITS:
        raise BudgetExceeded(
            f"the template would build an integer of about {bits} bits, "
            f"more than the cap of {MAX_INT_BITS}"
        )


def check_printable(value: Any) -> None:
    """Refuses a value whose text would be over the cap, before it is made (in C, unbounded)."""
    if not isinstance(value, TEXT):
        budget = current()
        budget.allow(weight(value, budget.max_chars))


def check_method(method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Methods of built-in values: a text method reads its text (a step per 100 characters),
    and those whose result's size follows from their arguments are refused before building."""
    owner = getattr(method, "__self__", None)
    name = getattr(method, "__name__", "")
    if isinstance(owner, type):  # a built-in type's own (`{}.fromkeys`, `"".maketrans`)
        raise BudgetExceeded(f"{owner.__name__}.{name} is not offered in templates")
    if isinstance(owner, int) and name == "to_bytes":
        length = kwargs.get("length", args[0] if args else 1)
        if isinstance(length, int):
            current().allow(length, "bytes")
    elif isinstance(owner, range) and name in ("count", "index"):
        charge_range_search(owner, args[0] if args else None)
    elif isinstance(owner, list | tuple) and name in ("count", "index"):
        needle = args[0] if args else None
        if needle is None or isinstance(needle, (*TEXT, bool, int, float)):
            # Compared with each item, but only as deep as the needle goes: a step per 100
            # items, and the needle's text.
            compared(needle)
            current().spend(len(owner) // CHARACTERS_PER_STEP)
        else:
            for value in (owner, needle):  # each item compared, as deep as it goes
                compared(value)
    elif isinstance(owner, Mapping):  # a key looked up is hashed, as deep as it goes
        for value in args:
            compared(value)
    elif isinstance(owner, TEXT):
        current().spend(len(owner) // CHARACTERS_PER_STEP)
        for value in [*args, *kwargs.values()]:  # `strip`'s characters, `startswith`'s tuple
            if isinstance(value, (*TEXT, tuple)):  # (what `join` joins is charged as built)
                compared(value)
        if name in ("encode", "decode"):
            check_codec(kwargs.get("encoding", args[0] if args else "utf-8"))
        check_text_result(owner, name, [*args, *kwargs.values()])


# Codecs written in C, which read a text once (by their names in the codecs registry); others
# (punycode, idna) work through it in Python, some in quadratic time.
OFFERED_CODECS = frozenset(
    {"utf-8", "ascii", "iso8859-1"}
    | {f"utf-{bits}{order}" for bits in (16, 32) for order in ("", "-le", "-be")}
)


def check_codec(encoding: Any) -> None:
    try:
        known = codecs.lookup(encoding).name if isinstance(encoding, str) else None
    except LookupError:
        known = None
    if known not in OFFERED_CODECS:
        raise BudgetExceeded(
            f"the codec {encoding!r} is not offered: utf-8, ascii, latin-1, utf-16 and utf-32 are"
        )


def check_text_result(text: str | bytes | bytearray, name: str, values: list[Any]) -> None:
    """`text.<name>(*values)`, for the methods of str and bytes that can build large results."""
    budget = current()
    if name in ("ljust", "rjust", "center", "zfill") and values and isinstance(values[0], int):
        budget.allow(values[0])
    elif name == "expandtabs":
        tabsize = values[0] if values and isinstance(values[0], int) else 8
        tab = "\t" if isinstance(text, str) else b"\t"
        budget.allow(len(text) + text.count(tab) * max(tabsize, 0))  # type: ignore[arg-type]
    elif name == "replace" and len(values) >= 2 and isinstance(values[0], TEXT):
        old, new = values[0], values[1]
        times = text.count(old) if old else len(text) + 1  # type: ignore[arg-type]
        budget.allow(len(text) + times * (len(new) if isinstance(new, TEXT) else 0))
    elif name == "join" and values:
        budget.allow(joined_size(text, values[0]))
    elif name == "translate" and values:
        table = values[0]
        mapped = table.values() if isinstance(table, Mapping) else table
        if isinstance(mapped, Collection):  # walked here, in Python, at a step an entry
            budget.spend(len(mapped))
        longest = max((len(v) for v in mapped if isinstance(v, TEXT)), default=1)
        budget.allow(len(text) * max(longest, 1))


def joined_size(separator: Any, items: Any) -> int:
    """The size of `items` joined by `separator` (the `join` filter prints one that is not
    text)."""
    if not isinstance(items, Collection):
        return 0  # a generator: measured after the fact
    budget = current()
    between = len(separator) if isinstance(separator, TEXT) else weight(separator, budget.max_chars)
    return between * len(items) + weight(list(items), budget.max_chars)


def check_recursive_loop(obj: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """`loop(children)` in a recursive for loop: its iterations count like any other loop's."""
    if isinstance(obj, LoopContext) and args:
        return (counted(args[0]), *args[1:])
    return args
