"""The template sandbox's budget: how much work one render may do and how much text it may build.

A render gets `steps` (every loop iteration, every call, and every 100 characters the template
builds) and a cap on the size of any text or collection it builds, checked *before* the text is
built wherever an operation's size is known in advance (`*`, `+`, `~`, `%`, `ljust`, format
widths, `join`, `center`, `indent` ...) and after the fact elsewhere. The budget lives in a
context variable, so concurrent renders in different threads each have their own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from functools import wraps
from typing import Any

from jinja2.runtime import LoopContext
from jinja2.sandbox import SandboxedFormatter
from markupsafe import EscapeFormatter

CHARACTERS_PER_STEP = 100


class BudgetExceeded(Exception):
    """A render went over its step budget or tried to build more text than the cap allows."""


@dataclass
class Budget:
    steps: int
    max_chars: int
    counting: bool = True  # off at compile time, when constant folding runs filters

    def spend(self, steps: int = 1) -> None:
        if not self.counting:
            return
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


_DEFAULT = Budget(steps=0, max_chars=1_000_000, counting=False)
_CURRENT: ContextVar[Budget] = ContextVar("template_budget", default=_DEFAULT)


def current() -> Budget:
    return _CURRENT.get()


def start(budget: Budget) -> object:
    return _CURRENT.set(budget)


def finish(token: object) -> None:
    _CURRENT.reset(token)  # type: ignore[arg-type]


def weight(value: Any, limit: int) -> int:
    """What `str(value)` would cost, in characters or items, counted up to just past `limit`:
    shared references count each time they appear, as they do when printed."""
    total = 0
    pending = [value]
    while pending and total <= limit:
        item = pending.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, bool) or item is None:
            total += 1
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 1
        elif isinstance(item, Mapping):
            total += len(item) + 1
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, Collection) and not isinstance(item, bytes | range):
            total += len(item) + 1
            pending.extend(item)
        elif hasattr(item, "_Namespace__attrs"):  # jinja's namespace() prints its contents
            pending.append(item._Namespace__attrs)
        else:
            total += 1
    return total


def check_built(value: Any) -> Any:
    """After an operation whose size could not be known before: refuse or charge the result."""
    if isinstance(value, str | Collection) and not isinstance(value, bytes | range):
        budget = current()
        budget.allow(weight(value, budget.max_chars))
    return value


def counted(iterable: Iterable[Any]) -> Iterator[Any]:
    """A loop's iterable, one step per iteration."""
    budget = current()
    for item in iterable:
        budget.spend()
        yield item


# --- sizes known before building ------------------------------------------------------------

_PRINTF_SPEC = re.compile(
    r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[diouxXeEfFgGcrsa%]"
)
_NUMBER = re.compile(r"\d+")


def check_printf(template: str) -> None:
    """`'%200000000s' % x` builds its width before anything could measure it."""
    budget = current()
    for width, precision in _PRINTF_SPEC.findall(template):
        for number in (width, precision):
            if number == "*":
                raise BudgetExceeded("`*` widths are not allowed in % formatting")
            if number:
                budget.allow(int(number), "a formatted field")


def check_format_spec(spec: str) -> None:
    budget = current()
    for number in _NUMBER.findall(spec):
        budget.allow(int(number), "a formatted field")


class BoundedFormatter(SandboxedFormatter):
    """`str.format` in the sandbox, with every field's width and precision within the cap
    (nested fields such as `{0:{1}}` are resolved by the time a spec reaches here)."""

    def format_field(self, value: Any, format_spec: str) -> Any:
        check_format_spec(format_spec)
        return check_built(super().format_field(value, format_spec))


class BoundedEscapeFormatter(BoundedFormatter, EscapeFormatter):
    pass


def check_str_method(method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Methods of `str` whose result size follows from their arguments."""
    text = method.__self__
    name = method.__name__
    values = [*args, *kwargs.values()]
    budget = current()
    if name in ("ljust", "rjust", "center", "zfill") and values and isinstance(values[0], int):
        budget.allow(values[0])
    elif name == "expandtabs":
        tabsize = values[0] if values and isinstance(values[0], int) else 8
        budget.allow(len(text) + text.count("\t") * max(tabsize, 0))
    elif name == "replace" and len(values) >= 2:
        old, new = str(values[0]), str(values[1])
        times = text.count(old) if old else len(text) + 1
        budget.allow(len(text) + times * len(new))
    elif name == "join" and values:
        budget.allow(joined_size(text, values[0]))


def joined_size(separator: str, items: Any) -> int:
    if not isinstance(items, Collection):
        return 0  # a generator: measured after the fact
    budget = current()
    return len(separator) * len(items) + weight(list(items), budget.max_chars)


def check_recursive_loop(obj: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """`loop(children)` in a recursive for loop: its iterations count like any other loop's."""
    if isinstance(obj, LoopContext) and args:
        return (counted(args[0]), *args[1:])
    return args


# --- filters --------------------------------------------------------------------------------


def _check_filter_arguments(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    budget = current()
    value = args[0] if args else None
    rest = [*args[1:], *kwargs.values()]
    if name == "center" and rest and isinstance(rest[0], int):
        budget.allow(rest[0])
    elif name == "indent" and isinstance(value, str):
        width = rest[0] if rest else 4
        size = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
        budget.allow(len(value) + (value.count("\n") + 1) * size)
    elif name == "format" and isinstance(value, str):
        check_printf(value)
    elif name == "join":
        separator = rest[0] if rest and isinstance(rest[0], str) else ""
        budget.allow(joined_size(separator, value))
    elif name == "replace" and isinstance(value, str) and len(rest) >= 2:
        check_str_method(value.replace, tuple(rest), {})
    elif name in ("slice", "batch", "wordwrap", "truncate") and rest:
        if isinstance(rest[0], int):
            budget.allow(rest[0], "pieces")
    elif name == "tojson" and rest and isinstance(rest[0], int):
        budget.allow(weight(value, budget.max_chars) * (rest[0] + 1))
    elif name == "sum":
        start = kwargs.get("start", rest[1] if len(rest) > 1 else 0)
        if not isinstance(start, int | float):
            raise BudgetExceeded("`sum` adds numbers only")


def bounded_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """A filter with its arguments checked first and its result charged after. Filters that take
    the context or environment first (jinja passes those positionally) are told apart by
    jinja's own marker, which `wraps` copies."""
    takes_extra = getattr(function, "jinja_pass_arg", None) is not None

    @wraps(function)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        own = args[1:] if takes_extra else args
        _check_filter_arguments(name, own, kwargs)
        current().spend()
        return check_built(function(*args, **kwargs))

    return bounded


# Filters that run regular expressions which can take quadratic time on hostile text, for
# HTML that prompts do not need.
REMOVED_FILTERS = frozenset({"striptags", "urlize"})
