"""The tenant: one module sets it, every transaction gets it from there, and only the code that
establishes who a request is may change it within a transaction."""

from __future__ import annotations

import ast
import uuid
from pathlib import Path

from sqlalchemy import text

from database.core import Database, Tenant, acting_as, enter_tenant, on_commit

ROOT = Path(__file__).resolve().parents[2]
SOURCE_PACKAGES = (
    "app",
    "bench",
    "database",
    "migrations",
    "notifications",
    "providers",
    "tasks",
    "utils",
)
TENANT_MODULE = "database/core.py"
# The bare asyncpg app bench.request_path measures Assay against: no part of the service, it
# sets the tenant itself, as it must to do the same work under the same row-level security.
BASELINE_APP = "bench/raw_app.py"
# Authentication: the request's dependencies, and the flows that create or choose the
# organization a caller acts for (register, login, switching, a new organization, API keys).
ESTABLISHERS = {
    "database/organizations/service.py",
    "database/users/members.py",
    "database/users/service.py",
}
# The planner's settings for a block of a transaction (utils.crud.local_settings), which
# refuses any other name (tests/database/test_local_settings.py).
PLANNER_MODULE = "utils/crud.py"
# Who acts for a tenant in a transaction apart, before the session's: recording a key's use.
APART = {"database/organizations/crud/__init__.py"}


def _modules() -> dict[str, ast.Module]:
    return {
        str(path.relative_to(ROOT)): ast.parse(path.read_text(), filename=str(path))
        for package in SOURCE_PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def test_only_the_core_module_sets_the_tenant_setting():
    setters = {
        name
        for name, tree in _modules().items()
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and ("set_config" in node.value or "set_tenant" in node.value)
    }
    assert setters == {TENANT_MODULE, BASELINE_APP, PLANNER_MODULE}


def test_only_authentication_changes_the_tenant_of_an_open_transaction():
    def calls_of(tree: ast.Module) -> set[str]:
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                func = node.func
                names.add(func.id if isinstance(func, ast.Name) else getattr(func, "attr", ""))
        return names

    modules = {name: calls_of(tree) for name, tree in _modules().items() if name != TENANT_MODULE}
    changers = {name for name, calls in modules.items() if calls & {"enter_tenant", "acting_as"}}
    assert changers == ESTABLISHERS
    assert {name for name, calls in modules.items() if "acting_apart" in calls} == APART


async def _settings(session) -> tuple[str, str]:
    row = (
        await session.execute(
            text(
                "SELECT current_setting('app.organization_id', true),"
                " current_setting('app.user_id', true)"
            )
        )
    ).one()
    return row[0], row[1]


async def test_a_transaction_acts_for_its_tenant_and_acting_as_comes_back(database: Database):
    organization, user, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    async with database.transaction(Tenant(organization)) as session:
        assert await _settings(session) == (str(organization), "")
        async with acting_as(session, Tenant(other, user)):
            assert await _settings(session) == (str(other), str(user))
        assert await _settings(session) == (str(organization), "")
        await enter_tenant(session, Tenant(None, user))
        assert await _settings(session) == ("", str(user))
    async with database.transaction() as session:
        assert await _settings(session) == ("", "")


async def test_on_commit_runs_after_a_commit_only(committed_database: Database):
    """What counts written rows (metrics) runs once the transaction commits: a savepoint
    rolled back inside it drops what was registered in it, not what came before it; a
    rolled-back transaction runs nothing."""
    ran: list[str] = []
    async with committed_database.transaction() as session:
        on_commit(session, lambda: ran.append("before the savepoint"))
        savepoint = await session.begin_nested()
        on_commit(session, lambda: ran.append("inside the savepoint"))
        await savepoint.rollback()
        kept = await session.begin_nested()
        on_commit(session, lambda: ran.append("in a savepoint kept"))
        await kept.commit()
        assert ran == []
    assert ran == ["before the savepoint", "in a savepoint kept"]

    ran.clear()
    try:
        async with committed_database.transaction() as session:
            on_commit(session, lambda: ran.append("rolled back"))
            raise RuntimeError("the request failed")
    except RuntimeError:
        pass
    async with committed_database.transaction() as session:
        pass  # a later transaction on the same pool runs nothing left over
    assert ran == []
