"""Publishing a version makes, hashes and indexes its cases in a thread, a page at a time: on
the event loop, a page of 5,000 cases held every other request (and every run of a changed set
publishes it) for up to half a second."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any

import pytest

from database.test_sets.content_hash import ContentHash
from database.test_sets.slice_index import SliceIndex
from database.tests import crud as test_crud
from tests.helpers import create_project, create_test_set, register


async def test_a_versions_cases_are_hashed_and_indexed_off_the_event_loop(
    client, database, monkeypatch: pytest.MonkeyPatch
):
    owner = await register(client)
    project = await create_project(client, owner)
    test_set = await create_test_set(client, owner, project["id"])
    cases = 2 * test_crud.ROWS_PER_STATEMENT + 1  # three pages
    lines = "".join(
        json.dumps({"input": f"q{i}", "topic": f"t{i % 3}"}) + "\n" for i in range(cases)
    )
    imported = await client.post(
        f"/api/v1/test-sets/{test_set['id']}/import",
        content=lines.encode(),
        headers={**owner.headers, "Content-Type": "application/x-ndjson"},
    )
    assert imported.status_code == 201, imported.text

    threads: dict[str, list[int]] = {"hashed": [], "indexed": []}

    def recorded(name: str, add: Any) -> Any:
        def add_and_record(self: Any, page: Sequence[dict[str, Any]]) -> None:
            threads[name].append(threading.get_ident())
            add(self, page)

        return add_and_record

    monkeypatch.setattr(ContentHash, "add", recorded("hashed", ContentHash.add))
    monkeypatch.setattr(SliceIndex, "add", recorded("indexed", SliceIndex.add))
    published = await client.post(
        f"/api/v1/test-sets/{test_set['id']}/versions", headers=owner.headers
    )
    assert published.status_code == 201, published.text
    assert published.json()["case_count"] == cases
    loop = threading.get_ident()
    for name, idents in threads.items():
        assert len(idents) == 3, f"{name}: {len(idents)} pages"
        assert loop not in idents, f"a page was {name} on the event loop"
