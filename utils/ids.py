"""Primary keys: time-ordered UUIDs (version 7, RFC 9562), made in this process."""

from __future__ import annotations

import os
import time
import uuid

_last_id = 0
# Random bits for ids, drawn from the OS 400 ids' worth at a time: one getrandom call per id
# was a seventh of new_id's time.
_RANDOM_DRAW = 400
_random_bits: list[int] = []


def _forked() -> None:
    """A forked child draws bits of its own, not its parent's next ones, and does not go on
    from its parent's last id (two processes' ids of one millisecond would be one apart)."""
    global _last_id
    _random_bits.clear()
    _last_id = 0


os.register_at_fork(after_in_child=_forked)


def new_id() -> uuid.UUID:
    """Time-ordered UUID (v7, RFC 9562): index-friendly primary keys that sort by creation.

    48 bits of Unix milliseconds, then random bits; within one millisecond each id is the
    previous one plus one, so ids made by this process are strictly increasing. (A run makes
    several ids per case: one takes 3 µs here, uuid.uuid4() 4.3 µs.)
    """
    global _last_id
    try:
        bits = _random_bits.pop()
    except IndexError:  # (none left, or another thread took the last: list.pop is atomic)
        drawn = os.urandom(10 * _RANDOM_DRAW)
        _random_bits.extend(int.from_bytes(drawn[i : i + 10]) for i in range(10, len(drawn), 10))
        bits = int.from_bytes(drawn[:10])
    value = ((time.time_ns() // 1_000_000) << 80 | bits) & _VERSION_MASK
    value |= _VERSION_BITS
    if value <= _last_id:
        value = _last_id + 1
    _last_id = value
    return _uuid_of(value)


def _uuid_of(value: int) -> uuid.UUID:
    """uuid.UUID(int=value) without its checks of other forms of input (half new_id's time):
    what UUID.__init__ itself sets."""
    made = _new_object(uuid.UUID)
    _set_attribute(made, "int", value)
    _set_attribute(made, "is_safe", _UNKNOWN_SAFETY)
    return made


_new_object, _set_attribute = object.__new__, object.__setattr__
_UNKNOWN_SAFETY = uuid.SafeUUID.unknown  # (an enum member: slow to look up each time)
# Version 7 in bits 76-79, variant 0b10 in bits 62-63.
_VERSION_MASK = ~((0xF << 76) | (0x3 << 62))
_VERSION_BITS = (0x7 << 76) | (0x2 << 62)
