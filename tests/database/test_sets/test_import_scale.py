from __future__ import annotations

import csv
import io
import time

import pytest

from tests.helpers import create_project, create_test_set, register

CASES = 10_000


def _csv(rows: int) -> bytes:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(["question", "answer", "context", "category", "topic", "tags", "source"])
    for i in range(rows):
        writer.writerow(
            [
                f"Case {i}: what is {i} + {i}? Answer with the number only, please.",
                str(2 * i),
                f"Addition of {i} and {i}|Numbers are integers",
                "arithmetic",
                f"topic {i % 50}",
                f"scale|batch-{i % 10}",
                f"generator row {i}",
            ]
        )
    return buffer.getvalue().encode()


@pytest.mark.slow
async def test_a_10000_case_csv_imports_in_one_request(client):
    owner = await register(client)
    project = await create_project(client, owner)
    test_set = await create_test_set(client, owner, project["id"])
    content = _csv(CASES)

    started = time.perf_counter()
    response = await client.post(
        f"/api/v1/test-sets/{test_set['id']}/import",
        files={"file": ("cases.csv", content, "text/csv")},
        headers=owner.headers,
    )
    elapsed = time.perf_counter() - started
    print(f"10,000-case CSV import: {elapsed:.2f} s")

    assert response.status_code == 201, response.text
    assert response.json() == {
        "imported": CASES,
        "test_count": CASES,
        "changed": True,
        "metrics": [],
        "unmapped": [],
        "notes": [],
    }
    read = await client.get(f"/api/v1/test-sets/{test_set['id']}", headers=owner.headers)
    assert read.json()["test_count"] == CASES
    last = await client.get(
        "/api/v1/tests",
        params={"test_set_id": test_set["id"], "sort": "position", "limit": 1, "offset": CASES - 1},
        headers=owner.headers,
    )
    (case,) = last.json()["items"]
    assert case["input"].startswith(f"Case {CASES - 1}:")
    assert case["metadata"] == {"source": f"generator row {CASES - 1}"}
