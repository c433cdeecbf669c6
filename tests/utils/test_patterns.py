"""Tenants' regular expressions are compiled within a budget: a pattern whose counted repeats
would make `regex` copy its parts past MAX_COPIES is refused from its text, before compiling;
everyday patterns pass; and what passes compiles small, whatever its shape."""

from __future__ import annotations

import random
import tracemalloc

import pytest
import regex

from utils.patterns import MAX_COPIES, PatternTooCostly, _copies, compile_bounded


@pytest.mark.parametrize(
    "pattern",
    [
        r"(?:a{1000}){1000}",  # 17 characters: 11 s and 250 MB to compile
        r"(?:(?:ab){1000})+",
        r"(?:x|(?:ab){1000}){5}",
        r"(?P<word>\w{50}){50}",
        r"(?i:[ab]{100}){100}",
        r"a{5000}",
        r"(?:ab){600}",
        # A comment or a flags-only group between a part and its quantifier is no part: the
        # quantifier repeats what came before it.
        r"(?:a{1000})(?#){1000}",
        r"(?:(?:a{1000})(?#){1000})(?#){1000}",
        r"(?:a{1000})(?i){1000}",
        r"(?:a{499})(?#\)){499}",  # an escaped ) does not end a comment
        r"(?:a{40}){e<=0}{40}",  # nor is a fuzzy constraint a part
        # An escape's braces that are no argument of it hold pattern, which regex reads:
        r"\g<(?:a{1000}){1000}>",
        r"\p{(?:a{40}){40}}",
        "[" + r"\p{L}" * 400 + "]{1000}",  # a large class is a large part
        r"(?:a{30}[[:alpha:])]){30}",  # where a class holding [ ends depends on the mode
    ],
)
def test_patterns_that_copy_their_parts_too_often_are_refused_before_compiling(pattern):
    tracemalloc.start()
    try:
        with pytest.raises(PatternTooCostly, match=r"copies of its parts|holding \["):
            compile_bounded(pattern)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


@pytest.mark.parametrize(
    "pattern",
    [
        r"^\d{3}-\d{4}$",
        r"^[\w.+-]+@[\w-]+\.[\w.]+$",
        r"^\p{L}+$",
        r"(?<=Total: )\d+(?:\.\d{2})?",
        r"^\s*(?P<answer>yes|no)\s*[.!]?$",
        r"\b(?:[01]?\d|2[0-3]):[0-5]\d\b",
        r"(?i)\bI (?:can(?:not|'t)|won't) help\b",
        r"[]a{9999}]+",  # in a class: characters, not a repeat
        r"(a)(?(1)b|c){3}",
        r".{0,100000}",
        r"(?:ab){500}",
        r"[A-Za-z0-9_]{20}",
        r"(?P<name>a)\g<name>",
        r"[\[\]]{3}",
        r"\N{EM DASH}",
    ],
)
def test_everyday_patterns_are_compiled(pattern):
    assert compile_bounded(pattern).pattern == pattern


@pytest.mark.parametrize("pattern", ["(?x) a # {1000}\n", "(?V1x)(?:a{30}) {30}", "(?x:a) b"])
def test_verbose_mode_is_refused_since_its_comments_hide_text_from_the_count(pattern):
    with pytest.raises(PatternTooCostly, match="verbose"):
        compile_bounded(pattern)


def test_a_pattern_nested_too_deep_to_compile_is_refused():
    """The compiler recursed past Python's limit: a RecursionError nothing caught."""
    with pytest.raises(PatternTooCostly, match="nests too deep"):
        compile_bounded("(" * 400 + "a" + ")" * 400)


def test_not_a_regular_expression_is_regex_own_error():
    with pytest.raises(regex.error):
        compile_bounded("(unclosed")


def _random_pattern(rng: random.Random, depth: int = 0) -> str:
    parts = []
    for _ in range(rng.randint(1, 3)):
        kind = rng.random()
        if kind < 0.3 and depth < 3:
            opening = rng.choice(["(", "(?:", f"(?P<g{rng.randint(0, 10**6)}>", "(?i:"])
            part = opening + _random_pattern(rng, depth + 1) + ")"
        elif kind < 0.5:
            part = rng.choice(["[a-z]", "[^0-9]", r"\d", r"\w", "."])
        elif kind < 0.6:
            part = _random_pattern(rng, depth + 1) + "|" + _random_pattern(rng, depth + 1)
        else:
            part = rng.choice("abcxyz")
        if rng.random() < 0.6:
            if rng.random() < 0.2:
                part += "(?#between)"  # no part: the quantifier repeats what precedes it
            least = rng.choice([0, 1, 2, 5, 10, 30, 100])
            part += rng.choice(
                ["*", "+", "?", f"{{{least}}}", f"{{{least},}}", f"{{{least},{least + 7}}}"]
            )
        parts.append(part)
    return "".join(parts)


def test_what_passes_compiles_small_whatever_its_shape():
    """A simulation: random nestings of groups, classes, alternations and repeats. Each one the
    count lets through compiles within a megabyte."""
    rng = random.Random(20261204)
    passed = refused = 0
    for _ in range(400):
        pattern = _random_pattern(rng)
        copies = _copies(pattern)
        if copies > MAX_COPIES:
            refused += 1
            continue
        regex.purge()
        tracemalloc.start()
        try:
            compile_bounded.__wrapped__(pattern)
            _, peak = tracemalloc.get_traced_memory()
        except regex.error:
            continue
        finally:
            tracemalloc.stop()
        passed += 1
        assert peak < 1_000_000, (pattern, copies, peak)
    assert passed > 100 and refused > 20  # the simulation reaches both sides of the bound
