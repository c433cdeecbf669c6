"""Tests: creation and edits (bulk creation, which may add to a set, is test_sets')."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from database.projects.service import require_project
from database.tests import crud
from database.tests.models import TestCase
from database.tests.schemas import INPUT_FIELDS, NEEDS_INPUT, TestCreate, TestUpdate, has_input
from utils.auth import Principal
from utils.crud import apply_update, refuse_nulls
from utils.errors import InvalidInput, NotFound

NOT_NULL = ("context", "tags", "variables", "metadata")


async def get_test_or_404(
    session: AsyncSession, test_id: uuid.UUID, *, to_edit: bool = False, deleting: bool = False
) -> TestCase:
    """The test; `to_edit`, `deleting`: locked for an edit or its deletion
    (`crud.get_test_to_edit`)."""
    if to_edit or deleting:
        test = await crud.get_test_to_edit(session, test_id, deleting=deleting)
    else:
        test = await crud.get_test(session, test_id)
    if test is None:
        raise NotFound("Test not found")
    return test


async def read_test_or_404(session: AsyncSession, test_id: uuid.UUID) -> dict[str, Any]:
    """The test as `TestRead` shows it, as a plain row (the read path loads no entity)."""
    test = await crud.read_test(session, test_id)
    if test is None:
        raise NotFound("Test not found")
    return test


async def create_test(session: AsyncSession, principal: Principal, body: TestCreate) -> TestCase:
    await require_project(session, body.project_id, field="project_id")
    fields = body.model_dump(mode="json", exclude={"project_id"})
    meta = fields.pop("metadata")
    return await crud.create_test(
        session,
        TestCase(
            organization_id=principal.organization_id,
            project_id=body.project_id,
            meta=meta,
            **fields,
        ),
    )


async def update_test(session: AsyncSession, test: TestCase, body: TestUpdate) -> TestCase:
    changes = body.model_dump(mode="json", exclude_unset=True)
    refuse_nulls(changes, *NOT_NULL)
    # The fields sent were judged as the request was read; those left out are not judged
    # again, so a test stored before a limit it breaks stays editable. Only the rule across
    # fields is checked, on the test as the edit would leave it.
    _refuse_without_input({**crud.case_fields(test), **changes}, sent=changes)
    if "metadata" in changes:
        changes["meta"] = changes.pop("metadata")
    apply_update(test, changes)
    await crud.save_test(session)
    return test


def _refuse_without_input(edited: dict[str, Any], *, sent: dict[str, Any]) -> None:
    """A 422 when the edit would leave the test no input, naming input (what the rule asks for
    first) and whichever of the others this edit emptied."""
    if has_input(edited["input"], edited["messages"], edited.get("conversation")):
        return
    emptied = [field for field in INPUT_FIELDS if field == "input" or field in sent]
    raise InvalidInput(
        f"This edit would leave the test nothing to send: {NEEDS_INPUT}",
        errors=[{"field": field, "message": NEEDS_INPUT} for field in emptied],
    )
