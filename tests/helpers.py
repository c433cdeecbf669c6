"""Small async helpers that create test data through the HTTP API."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from database.core import Database, Tenant

PASSWORD = "correct-horse-42"
# (password, a phrase of the reason it is refused)
WEAK_PASSWORDS = [
    ("short-1", "at least 10"),
    ("onlyletterslong", "digit or symbol"),
    ("1234567890!!", "letter"),
    ("aaaa1aaaa1aaaa1", "repeat"),
    ("x" * 70 + "é1", "72 bytes"),
]
_counter = itertools.count()
_NAME = re.compile(r"[A-Za-z_][\w-]*(?:\.[\w-]+)*")
_PLACED = re.compile(r"(?:body|query|path|header|cookie)\.")


@dataclass
class Account:
    user_id: uuid.UUID
    organization_id: uuid.UUID
    email: str
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}-{next(_counter)}-{uuid.uuid4().hex[:8]}@example.com"


async def register(
    client: httpx.AsyncClient,
    *,
    email: str | None = None,
    name: str = "Test User",
    organization_name: str | None = None,
) -> Account:
    body = {"email": email or unique_email(), "password": PASSWORD, "name": name}
    if organization_name:
        body["organization_name"] = organization_name
    response = await client.post("/api/v1/auth/register", json=body)
    assert response.status_code == 201, response.text
    data = response.json()
    return Account(
        user_id=uuid.UUID(data["user"]["id"]),
        organization_id=uuid.UUID(data["organization"]["id"]),
        email=data["user"]["email"],
        access_token=data["access_token"],
        refresh_token=data["refresh_token"],
    )


async def login(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> httpx.Response:
    return await client.post("/api/v1/auth/login", data={"username": email, "password": password})


async def invite(
    client: httpx.AsyncClient, inviter: Account, email: str, role: str = "member"
) -> dict:
    """An invitation to inviter's organization, as created (with its token)."""
    response = await client.post(
        f"/api/v1/organizations/{inviter.organization_id}/invitations",
        json={"email": email, "role": role},
        headers=inviter.headers,
    )
    assert response.status_code == 201, response.text
    return response.json()


async def accept_invitation(
    client: httpx.AsyncClient, account: Account, token: str
) -> httpx.Response:
    return await client.post(
        "/api/v1/auth/accept-invitation", json={"token": token}, headers=account.headers
    )


async def add_member(
    client: httpx.AsyncClient, owner: Account, role: str, *, name: str = "Member"
) -> Account:
    """Registers a new user, invites them to owner's organization with `role` and has them
    accept; returns them acting in that organization."""
    person = await register(client, name=name)
    invitation = await invite(client, owner, person.email, role)
    accepted = await accept_invitation(client, person, invitation["token"])
    assert accepted.status_code == 200, accepted.text
    return await switch(client, person, owner.organization_id)


async def create_api_key(
    client: httpx.AsyncClient, owner: Account, role: str = "member", **extra: object
) -> dict:
    response = await client.post(
        f"/api/v1/organizations/{owner.organization_id}/api-keys",
        json={"name": f"{role} key", "role": role, **extra},
        headers=owner.headers,
    )
    assert response.status_code == 201, response.text
    return response.json()


def assert_problem(response: httpx.Response, status: int, *, field: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status
    assert body["request_id"] == response.headers["x-request-id"]
    sent = _names_sent(response.request)
    for error in body.get("errors") or []:
        # A field the request sent is named where it was sent (`body.name`, `query.limit`),
        # whoever refused it (request validation or the service's own check).
        if _NAME.fullmatch(error["field"]) and error["field"].split(".")[0] in sent:
            assert _PLACED.match(error["field"]), error
    if field is not None:
        fields = [error["field"] for error in body.get("errors", [])]
        assert any(f == field or f.endswith(f".{field}") for f in fields), fields
    return body


def _names_sent(request: httpx.Request) -> set[str]:
    """The query's parameters and a JSON body's top-level fields."""
    names = set(request.url.params.keys())
    try:
        body = json.loads(request.content)
    except (httpx.RequestNotRead, ValueError, RecursionError):
        return names
    return names | set(body) if isinstance(body, dict) else names


def bearer(token: str) -> dict[str, str]:
    """Headers sending `token` (an access token or an API key) as a bearer credential."""
    return {"Authorization": f"Bearer {token}"}


async def switch(
    client: httpx.AsyncClient, account: Account, organization_id: uuid.UUID
) -> Account:
    """`account` acting in another of their organizations (a fresh login session there)."""
    response = await client.post(
        "/api/v1/auth/switch-organization",
        json={"organization_id": str(organization_id)},
        headers=account.headers,
    )
    assert response.status_code == 200, response.text
    tokens = response.json()
    return Account(
        user_id=account.user_id,
        organization_id=organization_id,
        email=account.email,
        access_token=tokens["access_token"],
        refresh_token=tokens["refresh_token"],
    )


@asynccontextmanager
async def tenant_session(
    database: Database, organization_id: uuid.UUID, user_id: uuid.UUID | None = None
) -> AsyncIterator[AsyncSession]:
    """A committed transaction on the test database, scoped to one tenant (row-level security)."""
    async with database.transaction(Tenant(organization_id, user_id)) as session:
        yield session


async def remove_account(owner_engine: AsyncEngine, account: Account) -> None:
    """Deletes a committed account's organization (everything in it goes with it) and user."""
    async with owner_engine.begin() as connection:
        await connection.execute(
            text("DELETE FROM organizations WHERE id = :id"), {"id": account.organization_id}
        )
        await connection.execute(text("DELETE FROM users WHERE id = :id"), {"id": account.user_id})


# --- the test library (projects, tests, test sets, model configurations) ----------------------


def unique_name(prefix: str = "item") -> str:
    return f"{prefix} {next(_counter)}-{uuid.uuid4().hex[:6]}"


async def create_model(client: httpx.AsyncClient, account: Account, **extra: object) -> dict:
    """A model configuration of the offline `demo` provider."""
    body = {"name": unique_name("model"), "provider": "demo", **extra}
    response = await client.post("/api/v1/models", json=body, headers=account.headers)
    assert response.status_code == 201, response.text
    return response.json()


async def create_project(client: httpx.AsyncClient, account: Account, **extra: object) -> dict:
    body = {"name": unique_name("project"), **extra}
    response = await client.post("/api/v1/projects", json=body, headers=account.headers)
    assert response.status_code == 201, response.text
    return response.json()


async def create_test(
    client: httpx.AsyncClient, account: Account, project_id: str, **fields: object
) -> dict:
    """A test of `project_id`; `input` defaults to a unique prompt unless messages are given."""
    body: dict[str, object] = {"project_id": project_id, **fields}
    if "input" not in body and "messages" not in body:
        body["input"] = unique_name("What is")
    response = await client.post("/api/v1/tests", json=body, headers=account.headers)
    assert response.status_code == 201, response.text
    return response.json()


async def create_test_set(
    client: httpx.AsyncClient,
    account: Account,
    project_id: str,
    test_ids: Sequence[str] = (),
    **extra: object,
) -> dict:
    body = {
        "project_id": project_id,
        "name": unique_name("set"),
        "test_ids": list(test_ids),
        **extra,
    }
    response = await client.post("/api/v1/test-sets", json=body, headers=account.headers)
    assert response.status_code == 201, response.text
    return response.json()


async def create_run_body(
    client: httpx.AsyncClient, account: Account, tests: Sequence[dict[str, Any]]
) -> tuple[list[str], dict[str, Any]]:
    """A project with `tests` (created in bulk, 1,000 a request), a test set of them in order,
    the demo model and a `contains` metric: the tests' ids, and the body of a run over them."""
    project = await create_project(client, account)
    test_ids: list[str] = []
    for start in range(0, len(tests), 1000):
        created = await client.post(
            "/api/v1/tests/bulk",
            json={"project_id": project["id"], "tests": list(tests[start : start + 1000])},
            headers=account.headers,
        )
        assert created.status_code == 201, created.text
        test_ids += created.json()["ids"]
    test_set = await create_test_set(client, account, project["id"], test_ids)
    model = await create_model(client, account)
    metric = await client.post(
        "/api/v1/metrics",
        json={"project_id": project["id"], "name": "contains", "type": "contains"},
        headers=account.headers,
    )
    assert metric.status_code == 201, metric.text
    return test_ids, {
        "test_set_id": test_set["id"],
        "target_model_id": model["id"],
        "metric_ids": [metric.json()["id"]],
    }


_WAITING_FOR_LOCKS = text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")


async def until_waiting_for_locks(
    owner_engine: AsyncEngine, count: int, done: asyncio.Task[object] | None = None
) -> None:
    """Until `count` statements wait for a lock (or `done` has finished without waiting)."""
    async with owner_engine.connect() as connection:
        for _ in range(400):
            waiting = await connection.scalar(_WAITING_FOR_LOCKS)
            await connection.rollback()  # a transaction keeps its first view of the activity
            if (done is not None and done.done()) or waiting >= count:
                return
            await asyncio.sleep(0.025)
    raise AssertionError(f"{count} statements never waited for a lock")


_T = TypeVar("_T")


@contextmanager
def statements_sent(
    database: Database, noted: Callable[[str, Any], Any] = lambda statement, _: statement
) -> Iterator[list[Any]]:
    """What `noted` makes of each statement the database's engine sends meanwhile (and its
    parameters): by default, its SQL."""
    sent: list[Any] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.append(noted(statement, parameters))

    engine = database.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", record)


async def longest_stall(during: Awaitable[_T]) -> tuple[_T, float]:
    """Awaits `during` while the event loop ticks every 10 ms; its result and the longest gap
    between two ticks (how long the loop was held)."""
    gaps: list[float] = []
    task = asyncio.ensure_future(during)
    last = time.perf_counter()
    while not task.done():
        await asyncio.sleep(0.01)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
    return task.result(), max(gaps, default=0.0)


async def read_while_deleting(
    chunks: AsyncIterator[bytes], delete: Callable[[], Awaitable[None]]
) -> bytes:
    """Reads a streamed document; once a page has left, deletes (some of) its source."""
    received, deleted = [], False
    async for chunk in chunks:
        received.append(chunk)
        if not deleted and len(chunk) > 1000:
            await delete()
            deleted = True
    return b"".join(received)


async def beside_a_deletion(
    client, owner, owner_engine, table: str, row_id: str, deleting: str, other: tuple
) -> tuple[Any, Any]:
    """`other` (method, path, body) sent while `deleting` (a path) deletes the row, both
    waiting on a lock held until both wait: the deletion goes first."""
    async with owner_engine.connect() as holder:
        held = await holder.begin()
        await holder.execute(text(f"SELECT FROM {table} WHERE id = :id FOR UPDATE"), {"id": row_id})
        deletion = asyncio.create_task(client.delete(deleting, headers=owner.headers))
        await until_waiting_for_locks(owner_engine, 1)
        method, path, body = other
        answer = asyncio.create_task(client.request(method, path, json=body, headers=owner.headers))
        await until_waiting_for_locks(owner_engine, 2)
        await held.rollback()
    return await deletion, await answer
