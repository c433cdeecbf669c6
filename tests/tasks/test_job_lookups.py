"""A job's host lookups are its organization's (utils.ssrf counts each organization's lookups
under way apart): a job of one organization whose model's name never answers holds none of
another organization's lookups. The system's lookup is replaced by one that notes whose
lookups were under way when it was asked."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from database.core import Database
from database.setup import DatabaseUrls
from tasks.worker import JobContext
from tests.helpers import Account
from tests.tasks.conftest import enqueue_jobs, new_kind, wait_for_status
from tests.tasks.test_worker import running_pool
from utils import ssrf


def owners_noting(monkeypatch: pytest.MonkeyPatch) -> dict[str, set[str]]:
    """For each host looked up, the organizations with lookups under way as it was asked (its
    own among them): refused, as a name that does not exist."""
    noted: dict[str, set[str]] = {}

    def getaddrinfo(host: str) -> list[Any]:
        with ssrf._lookups_lock:  # its lookup is counted, under this lock, before it runs
            noted[host] = set(ssrf._lookups_of)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(ssrf, "_getaddrinfo", getaddrinfo)
    return noted


async def test_a_jobs_lookups_are_counted_as_its_organizations(
    committed_database: Database,
    accounts: list[Account],
    database_urls: DatabaseUrls,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    noted = owners_noting(monkeypatch)
    kind = new_kind()

    async def handler(ctx: JobContext) -> None:
        with pytest.raises(ssrf.UnresolvedHost):
            await ssrf.vet(f"https://{ctx.job.id}.test/v1", field="base_url", allow_private=False)

    first = accounts[0]
    async with running_pool(committed_database, database_urls, {kind: handler}):
        [job] = await enqueue_jobs(committed_database, first, kind)
        await wait_for_status(committed_database, first, [job], "done")

    assert noted[f"{job}.test"] == {str(first.organization_id)}
