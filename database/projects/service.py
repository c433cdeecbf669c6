"""Project rules: defaults must point at model configurations this organization can see."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from database.models import crud as model_crud
from database.projects import crud
from database.projects.models import Project
from database.projects.schemas import ProjectCreate, ProjectUpdate
from utils.auth import Principal
from utils.crud import apply_update, refuse_nulls
from utils.errors import InvalidInput, NotFound

MODEL_FIELDS = ("default_target_model_id", "default_judge_model_id")


async def get_project_or_404(session: AsyncSession, project_id: uuid.UUID) -> Project:
    project = await crud.get_project(session, project_id)
    if project is None:
        raise NotFound("Project not found")
    return project


async def require_project(session: AsyncSession, project_id: uuid.UUID, *, field: str) -> Project:
    """A project named in a request body: unknown (or another organization's) is a 422."""
    project = await crud.get_project(session, project_id)
    if project is None:
        raise InvalidInput("no such project", field=field)
    return project


async def _check_models(session: AsyncSession, changes: dict[str, object]) -> None:
    for field in MODEL_FIELDS:
        model_id = changes.get(field)
        if (
            isinstance(model_id, uuid.UUID)
            and await model_crud.get_model(session, model_id) is None
        ):
            raise InvalidInput("no such model configuration", field=field)


async def create_project(
    session: AsyncSession, principal: Principal, body: ProjectCreate
) -> Project:
    await _check_models(session, body.model_dump())
    return await crud.create_project(
        session, Project(organization_id=principal.organization_id, **body.model_dump())
    )


async def update_project(session: AsyncSession, project: Project, body: ProjectUpdate) -> Project:
    changes = body.model_dump(exclude_unset=True)
    refuse_nulls(changes, "name")
    await _check_models(session, changes)
    apply_update(project, changes)
    await crud.save_project(session)
    return project
