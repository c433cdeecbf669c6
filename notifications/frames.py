"""What the hub sends: stored events, live deltas and heartbeats as SSE bytes, encoded once for
every subscriber, and the batches one read (or one delta) adds to a run's streams."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Item:
    """A stored event (seq > 0), a live delta (seq 0) or a heartbeat (seq -1), encoded once
    for every subscriber."""

    seq: int
    type: str
    encoded: bytes
    # An event of a terminal type whose data says `"continues": true` does not end a stream:
    # more of the same change follows (a gated run's verdict after its end).
    continues: bool = False


def encode_event(seq: int, kind: str, data: Any) -> Item:
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
    continues = isinstance(data, dict) and data.get("continues") is True
    return Item(seq, kind, f"id: {seq}\nevent: {kind}\ndata: {body}\n\n".encode(), continues)


def encode_delta(kind: str, data: Any) -> Item:
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return Item(0, kind, f"event: {kind}\ndata: {body}\n\n".encode())


def delta_frame(item: Item, last_seq: int) -> bytes:
    """A live delta as sent: it carries the id of the last stored event the stream has."""
    return b"id: %d\n%b" % (last_seq, item.encoded)


@dataclass(frozen=True, slots=True)
class Batch:
    """What one read (or one delta) adds to a run's streams, encoded once for all of them:
    `frame` is what a stream whose last stored event is `after` sends for it."""

    items: Sequence[Item]
    frame: bytes
    after: int
    last: int  # the stream's last stored event once sent
    kinds: frozenset[str]

    @classmethod
    def of_events(cls, items: Sequence[Item]) -> Batch:
        return cls(
            items,
            b"".join(item.encoded for item in items),
            items[0].seq - 1,
            items[-1].seq,
            frozenset(item.type for item in items),
        )

    @classmethod
    def of_delta(cls, item: Item, last_seq: int) -> Batch:
        return cls((item,), delta_frame(item, last_seq), last_seq, last_seq, frozenset())


# An event rather than a comment: EventSource passes no comment to the page, which could then
# not tell a quiet stream from a dead one. No `id:`, so Last-Event-ID stays where it was.
HEARTBEAT = Item(-1, "heartbeat", b"event: heartbeat\ndata: {}\n\n")
