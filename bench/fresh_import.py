"""Imports at scale: the time of a CSV import as it grows, and a set's first page right after
a 10,000-case import, when the planner's statistics do not know the organization yet
(autovacuum analyses its rows up to a minute later).

Growth: 1,000 to 100,000 cases, each into a new organization's empty set, against the
10,000-case import of the same round (linear growth: a 50,000-case import takes about 5x).

First page, each repeat: statistics of what exists (another organization's set, and the
earlier repeats'), then a new organization imports 10,000 cases into a set and at once lists
the first page of it (in set order, and by creation) and of a 4-test set of its own. Baseline,
measured alongside: the same requests once the organization is analysed."""

from __future__ import annotations

import statistics
import time
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from bench.harness import StolenTime, bench_app, cases_csv
from database import embedded
from database.core import get_database

CASES = 10_000
REPEATS = 3
PASSWORD = "bench-password-1"
TABLES = "tests, test_set_members"
# Every measured import registers an organization: more than the default registration limit.
SETTINGS = {"bcrypt_rounds": 4, "auth_rate_limit": "1000/minute"}


async def _analyze() -> None:
    """As the owner (the runtime role may not), as autovacuum would."""
    url = get_database().engine.url.set(username=embedded.OWNER_ROLE)
    owner = create_async_engine(url, poolclass=NullPool)
    try:
        async with owner.begin() as connection:
            await connection.execute(text(f"ANALYZE {TABLES}"))
    finally:
        await owner.dispose()


async def _organization(client: httpx.AsyncClient, n: int) -> dict[str, Any]:
    """A new organization with a 4-test set and an empty one."""
    registered = await client.post(
        "/api/v1/auth/register",
        json={"email": f"importer-{n}@example.com", "password": PASSWORD, "name": "Bench"},
    )
    headers = {"Authorization": f"Bearer {registered.json()['access_token']}"}
    project = (await client.post("/api/v1/projects", json={"name": "p"}, headers=headers)).json()
    few = await client.post(
        "/api/v1/tests/bulk",
        json={"project_id": project["id"], "tests": [{"input": f"few {i}"} for i in range(4)]},
        headers=headers,
    )
    sets = []
    for name, ids in (("small", few.json()["ids"]), ("imported", [])):
        body = {"project_id": project["id"], "name": name, "test_ids": ids}
        sets.append((await client.post("/api/v1/test-sets", json=body, headers=headers)).json())
    return {"headers": headers, "small": sets[0]["id"], "big": sets[1]["id"]}


# (label, the organization's set, sort)
LISTINGS = (
    (f"the {CASES:,}-test set", "big", "position"),
    ("the same, by creation", "big", "created_at"),
    ("a 4-test set", "small", "position"),
)


async def _first_page(
    client: httpx.AsyncClient, org: dict[str, Any], test_set: str, sort: str
) -> float:
    started = time.perf_counter()
    response = await client.get(
        "/api/v1/tests",
        params={"test_set_id": org[test_set], "sort": sort},
        headers=org["headers"],
    )
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.text
    return elapsed


# Cases per import. Each round imports every size once, so that a burst of load on the shared
# machine weighs on one round's ratios, not on one size; the medians over rounds are reported.
GROWTH = (1_000, 10_000, 50_000, 100_000)
GROWTH_BASELINE = 10_000
GROWTH_ROUNDS = 3


async def _import_seconds(client: httpx.AsyncClient, org: dict[str, Any], content: bytes) -> float:
    started = time.perf_counter()
    response = await client.post(
        f"/api/v1/test-sets/{org['big']}/import",
        content=content,
        headers={**org["headers"], "Content-Type": "text/csv"},
    )
    elapsed = time.perf_counter() - started
    assert response.status_code == 201, response.text
    assert response.json()["test_count"] == content.count(b"\n") - 1  # less the header
    return elapsed


async def growth(client: httpx.AsyncClient, first_organization: int) -> list[str]:
    """The report: import time by size, its ratio to the 10,000-case import of the same
    round, rows/s, and the CPU steal while each size was imported."""
    documents = {cases: cases_csv(cases) for cases in GROWTH}
    times: dict[int, list[float]] = {cases: [] for cases in GROWTH}
    ratios: dict[int, list[float]] = {cases: [] for cases in GROWTH}
    stolen = {cases: StolenTime() for cases in GROWTH}
    n = first_organization
    for _ in range(GROWTH_ROUNDS):
        for cases in GROWTH:
            org = await _organization(client, n)
            n += 1
            with stolen[cases].measure():
                times[cases].append(await _import_seconds(client, org, documents[cases]))
        for cases in GROWTH:
            ratios[cases].append(times[cases][-1] / times[GROWTH_BASELINE][-1])
    lines = [
        f"CSV import as it grows (baseline: the {GROWTH_BASELINE:,}-case import of the same"
        f" round; medians of {GROWTH_ROUNDS} rounds)"
    ]
    for cases in GROWTH:
        seconds, steal = statistics.median(times[cases]), stolen[cases].share
        lines.append(
            f"  {cases:>7,} cases {seconds:8.2f} s  {statistics.median(ratios[cases]):6.2f}x the"
            f" baseline ({cases / GROWTH_BASELINE:g}x its cases)  {cases / seconds:8,.0f} rows/s"
            + ("" if steal is None else f"  CPU steal {steal:.0%}")
        )
    return lines


async def run() -> None:
    fresh: dict[str, list[float]] = {label: [] for label, _, _ in LISTINGS}
    analysed: dict[str, list[float]] = {label: [] for label, _, _ in LISTINGS}
    stolen = StolenTime()
    async with bench_app(**SETTINGS) as client:
        known = await _organization(client, 0)
        await client.post(
            f"/api/v1/test-sets/{known['big']}/import",
            content=cases_csv(200),
            headers={**known["headers"], "Content-Type": "text/csv"},
        )
        for n in range(1, REPEATS + 1):
            await _analyze()
            org = await _organization(client, n)
            imported = await client.post(
                f"/api/v1/test-sets/{org['big']}/import",
                content=cases_csv(CASES),
                headers={**org["headers"], "Content-Type": "text/csv"},
            )
            assert imported.status_code == 201, imported.text
            with stolen.measure():
                for label, test_set, sort in LISTINGS:
                    fresh[label].append(await _first_page(client, org, test_set, sort))
                await _analyze()
                for label, test_set, sort in LISTINGS:
                    times = [await _first_page(client, org, test_set, sort) for _ in range(5)]
                    analysed[label].append(statistics.median(times))
        report = await growth(client, REPEATS + 1)

    print(
        f"first page right after a {CASES:,}-case import (GET /tests?test_set_id=…;"
        f" median of {REPEATS} organizations)"
    )
    for label, _, _ in LISTINGS:
        now, later = statistics.median(fresh[label]), statistics.median(analysed[label])
        print(
            f"  {label:22s} {now * 1000:8.1f} ms at once, {later * 1000:6.1f} ms once analysed"
            f" (baseline): {now / later:.2f}x"
        )
    if stolen.share is not None:
        print(f"  CPU time the hypervisor gave other guests meanwhile: {stolen.share:.0%}")
    print("\n".join(report))


if __name__ == "__main__":
    import uvloop

    async def _growth_only() -> None:
        async with bench_app(**SETTINGS) as client:
            print("\n".join(await growth(client, 1)))

    uvloop.run(_growth_only())
