"""The content hash of a version's cases: what says two versions (or a file and a version)
hold the same cases in the same order."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any


def canonical_json(case: dict[str, Any]) -> str:
    """A case's JSON as hashes and a sync's comparison take it: keys sorted, no spaces."""
    return json.dumps(case, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class ContentHash:
    """The SHA-256 of the cases' canonical JSON list, fed a page at a time: the same digest as
    hashing the whole list at once."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256(b"[")
        self.count = 0

    def add(self, cases: Sequence[dict[str, Any]]) -> None:
        for case in cases:
            self._sha.update((b"," if self.count else b"") + canonical_json(case).encode())
            self.count += 1

    def hexdigest(self) -> str:
        ended = self._sha.copy()
        ended.update(b"]")
        return ended.hexdigest()
