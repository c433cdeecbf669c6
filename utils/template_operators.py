"""The template budget's charges for operators and formats: integer arithmetic by the size of
its operands, `*` and `+` on sequences, and `%`, `str.format` and the `format` filter by the
fields they fill, each refused before building where its size is known (`utils.template_budget`
holds the budget itself)."""

from __future__ import annotations

import re
from _string import formatter_field_name_split
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from jinja2.sandbox import SandboxedFormatter
from markupsafe import EscapeFormatter

from utils.template_budget import (
    BIT_WORK_PER_STEP,
    CHARACTERS_PER_STEP,
    SEQUENCES,
    TEXT,
    BudgetExceeded,
    check_built,
    check_printable,
    current,
    integer_within_cap,
    weight,
)


def check_integers(operator: str, left: int, right: int) -> None:
    """Integer arithmetic: the result's size within the cap, estimated before computing it, and
    the work charged (multiplying, dividing and raising cost the product of the sizes)."""
    big, small = sorted((left.bit_length(), right.bit_length()), reverse=True)
    if operator == "**":
        if right <= 0 or abs(left) <= 1:
            return  # a float, or 0, 1 or -1
        size = left.bit_length() * right
        integer_within_cap(size)
        work = size * size
    elif operator == "*":
        size, work = big + small, big * small
    elif operator in ("+", "-"):
        size, work = big + 1, big
    else:  # `/`, `//` and `%`
        size, work = big, big * small
    integer_within_cap(size)
    current().spend(work // BIT_WORK_PER_STEP)


def check_binop(operator: str, left: Any, right: Any) -> None:
    """Before `left <operator> right`: what it would build within the cap, its work charged."""
    budget = current()
    budget.spend()
    if isinstance(left, int) and isinstance(right, int):
        check_integers(operator, left, right)
    elif operator == "*":
        for sequence, times in ((left, right), (right, left)):
            if isinstance(sequence, SEQUENCES) and isinstance(times, int):
                budget.allow(weight(sequence, budget.max_chars) * max(times, 0))
    elif operator == "+" and isinstance(left, SEQUENCES) and isinstance(right, SEQUENCES):
        budget.allow(weight(left, budget.max_chars) + weight(right, budget.max_chars))
    elif operator == "%" and isinstance(left, TEXT):  # printf-style formatting
        check_printf(left, right)


# What follows a conversion's `%` and its mapping key: flags, width, precision, conversion.
_PRINTF_REST = re.compile(r"[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?([diouxXeEfFgGcrsab%])")
_NUMBER = re.compile(r"\d+")
# A float's digits before its point, at most (1e308 with `%f`).
_FLOAT_DIGITS = 310
# `%r` and `%a`: an escape is up to ten characters for one (`\U0001f600`), four in ASCII.
_REPR_GROWTH, _ASCII_REPR_GROWTH = 10, 4


def _printf_conversions(text: str) -> Iterator[tuple[str | None, str, str, str]]:
    """Each conversion's mapping key (None without one), width, precision and type, the key
    read as Python reads it (parentheses nest: `%(a(b))s` is the key `a(b)`)."""
    start = text.find("%")
    while start != -1:
        end, key = start + 1, None
        if text.startswith("(", end):
            depth, end = 1, end + 1
            while end < len(text) and depth:
                depth += {"(": 1, ")": -1}.get(text[end], 0)
                end += 1
            key = text[start + 2 : end - 1]
        found = _PRINTF_REST.match(text, end)
        if found is not None:
            yield key, found.group(1) or "", found.group(2) or "", found.group(3)
            end = found.end()
        start = text.find("%", end)


def check_printf(template: str | bytes | bytearray, arguments: Any = None) -> None:
    """`'%200000000s' % x` builds its width before anything could measure it, and
    `('%(a)s' * 1500) % {'a': long}` its argument 1,500 times: each field is charged its width
    and precision, and the whole what each conversion writes of its own argument (a tuple's
    next one, a mapping's by key) before it is built."""
    budget = current()
    text = template if isinstance(template, str) else template.decode("latin-1")
    positional = iter(arguments if isinstance(arguments, tuple) else (arguments,))
    total = len(text)
    largest: list[Any] = []  # a mapping's largest value, found once (and paid for) if needed
    for key, width, precision, conversion in _printf_conversions(text):
        if "*" in (width, precision):
            raise BudgetExceeded("`*` widths are not allowed in % formatting")
        for number in (width, precision):
            if number:
                budget.allow(int(number), "a formatted field")
        if conversion == "%":
            continue
        if isinstance(arguments, Mapping):
            value = _keyed(arguments, key, template, largest) if key is not None else arguments
        else:
            value = next(positional, None)
        size = weight(value, budget.max_chars) * _repr_growth(conversion, value)
        digits = _FLOAT_DIGITS if conversion in "eEfFgG" else 0
        total += max(int(width or 0), int(precision or 0) + digits + size)
    budget.allow(total, "a formatted text")


def _keyed(
    arguments: Mapping[Any, Any], key: str, template: str | bytes | bytearray, largest: list[Any]
) -> Any:
    """The value a key of the template names (a bytes template's keys are bytes); one it does
    not find is charged as the largest (a mapping may answer any key). The largest is found
    once a format, at a step a value, into `largest`: not again for each key not found."""
    lookup = key if isinstance(template, str) else key.encode("latin-1")
    if lookup in arguments:
        return arguments[lookup]
    if not largest:
        budget = current()
        budget.spend(len(arguments))
        heaviest = max(arguments.values(), key=lambda v: weight(v, budget.max_chars), default=None)
        largest.append(heaviest)
    return largest[0]


def _repr_growth(conversion: str, value: Any) -> int:
    """How much longer `%r`/`%a` writes a value than `%s`: an escape (`\\x07`) is four
    characters for one, or up to ten (`\\U0001f600`) for a character past ASCII."""
    if conversion not in "ra":
        return 1
    return _ASCII_REPR_GROWTH if isinstance(value, str) and value.isascii() else _REPR_GROWTH


def check_format_spec(spec: str) -> None:
    budget = current()
    for number in _NUMBER.findall(spec):
        budget.allow(int(number), "a formatted field")


class BoundedFormatter(SandboxedFormatter):
    """`str.format` in the sandbox: the format string read at a step per 100 characters, a
    step for each field and each attribute or index it looks up (a megabyte of fields, each
    `.real` 30 times over, took 0.8 s a call), and every field's width and precision within
    the cap (nested fields such as `{0:{1}}` are resolved by the time a spec reaches here)."""

    def vformat(self, format_string: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
        current().spend(len(format_string) // CHARACTERS_PER_STEP)
        return super().vformat(format_string, args, kwargs)

    def get_field(
        self, field_name: str, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> tuple[Any, str]:
        _, lookups = formatter_field_name_split(field_name)
        current().spend(1 + sum(1 for _ in lookups))
        return super().get_field(field_name, args, kwargs)

    def format_field(self, value: Any, format_spec: str) -> Any:
        check_format_spec(format_spec)
        return check_built(super().format_field(value, format_spec))

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        check_printable(value)  # called for every field, to make text of it or not
        return super().convert_field(value, conversion)


class BoundedEscapeFormatter(BoundedFormatter, EscapeFormatter):
    pass
