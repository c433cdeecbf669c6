"""What a sync compares: the set's cases with the file's, each case by a digest of what it
holds, not how it was written down. The set's cases are read a page at a time and digested in
the import threads, never held whole: read at once and made into cases on the event loop, a
set of 120,000 tests held it for over ten seconds (and CI syncs a set before every run)."""

from __future__ import annotations

import hashlib
import uuid
from collections import deque
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from database.test_sets import crud
from database.test_sets.content_hash import canonical_json
from database.test_sets.import_threads import off_loop
from database.test_sets.models import TestSet
from database.tests import crud as test_crud
from database.tests.schemas import TestCaseFields

PAGE_ROWS = 1000


def stored_case(case: dict[str, Any]) -> TestCaseFields:
    """A stored case as it is exported: the limits judge what is sent, not what was stored."""
    return TestCaseFields.model_validate(case, context={"stored": True})


def case_key(case: dict[str, Any]) -> bytes:
    """The digest of a case as a sync compares it (a stored one, or a file's)."""
    dumped = stored_case(case).model_dump(mode="json")
    return hashlib.sha256(canonical_json(dumped).encode()).digest()


class HeldCases:
    """The set's cases as a sync compares them, in the set's order: each its test's id and
    its case's key."""

    def __init__(self) -> None:
        self._ids: list[uuid.UUID] = []
        self._keys: list[bytes] = []

    def add(self, tests: Sequence[Any]) -> None:
        """The set's next tests, as rows of `tests_in_order`."""
        for test in tests:
            self._ids.append(test.id)
            self._keys.append(case_key(test_crud.case_fields(test)))

    def kept(self, cases: Sequence[dict[str, Any]]) -> list[uuid.UUID | None] | None:
        """For each of `cases`, a test of the set that holds the same (each test once, taken
        in the set's order), or None: the tests a sync keeps. None for all when the set holds
        exactly `cases`, in this order."""
        wanted = [case_key(case) for case in cases]
        if wanted == self._keys:
            return None
        reusable: dict[bytes, deque[uuid.UUID]] = {}
        for test_id, key in zip(self._ids, self._keys, strict=True):
            reusable.setdefault(key, deque()).append(test_id)
        return [reusable[key].popleft() if reusable.get(key) else None for key in wanted]


async def current_cases(session: AsyncSession, test_set: TestSet) -> HeldCases:
    """The set's cases, read a page at a time and each page digested in the import threads."""
    held = HeldCases()
    order = await crud.member_order(session, test_set.id)
    for start in range(0, len(order), PAGE_ROWS):
        tests = await crud.tests_in_order(session, order[start : start + PAGE_ROWS])
        await off_loop(test_set.organization_id, held.add, tests)
    return held
