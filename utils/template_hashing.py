"""Sets and dicts a template builds (`unique`, `dict(...)`, dict literals): their keys charged
for sharing hashes. A key is compared with every distinct key of its hash before it, in C and
unseen by the steps: integers a multiple of 2**61 - 1 apart share one, so a tenant can make
every key of a dict alike."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from utils.template_budget import BudgetExceeded, current


def hashed(items: Iterable[Any], key: Callable[[Any], Any] = lambda item: item) -> Iterator[Any]:
    """The items a set or dict is built of, by their keys, charged for the keys' likeness: a
    key is compared with each distinct one before it that shares its hash (integers a multiple
    of 2**61 - 1 apart do), so k of them cost k * k / 2 comparisons, in C: a step per
    HASH_PROBES_PER_STEP. (A key equal to one before is found at once: repeats cost nothing.)
    More than MAX_ALIKE distinct keys of one hash are refused: every later lookup of a key of
    that hash would compare it with each of them, uncharged."""
    budget = current()
    alike: dict[int, list[Any]] = {}
    for item in items:
        try:
            found = key(item)
            shared = hash(found) % _HASH_MODULUS  # one number per hash, never alike itself
        except Exception:  # no key, or an unhashable one: the builder refuses it
            yield item
            continue
        distinct = alike.setdefault(shared, [])
        budget.spend(len(distinct) // HASH_PROBES_PER_STEP)
        if found not in distinct:  # (at most MAX_ALIKE comparisons)
            if len(distinct) >= MAX_ALIKE:
                raise BudgetExceeded(f"more than {MAX_ALIKE} distinct keys share one hash")
            distinct.append(found)
        yield item


_HASH_MODULUS = sys.hash_info.modulus
HASH_PROBES_PER_STEP = 10
MAX_ALIKE = 64


def literal_dict(pairs: tuple[tuple[Any, Any], ...]) -> dict[Any, Any]:
    """A dict literal of the template (`{k: v, ...}`), its keys charged as `hashed` does."""
    return dict(hashed(pairs, key_of_pair))


def key_of_pair(pair: Any) -> Any:
    """A dict's key in a (key, value) pair; an error for anything else (dict() refuses it)."""
    key, _value = pair
    return key


def as_pairs(items: Iterable[Any]) -> Iterator[Any]:
    """What `dict(...)` is given, each pair made a sequence first, so that reading its key
    leaves it whole (`d|dictsort|map('reverse')` gives iterators); at most three of its items
    are read, enough for dict() to refuse one of another length."""
    for item in items:
        if isinstance(item, Sequence) or not isinstance(item, Iterable):
            yield item
        else:
            yield tuple(itertools.islice(item, 3))
