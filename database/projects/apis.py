from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Query, status

from database.deps import DbSession, Member, Pagination, Viewer
from database.organizations.audit import RequestMetaDep, record_deletion
from database.projects import crud, service
from database.projects.schemas import ProjectCreate, ProjectRead, ProjectUpdate
from database.routing import api_router
from utils.problems import errors
from utils.schemas import Page

router = api_router(prefix="/projects", tags=["projects"])


@router.get(
    "",
    operation_id="projects_list",
    summary="List projects",
)
async def list_projects(
    session: DbSession,
    _: Viewer,
    page: Pagination,
    q: Annotated[str | None, Query(max_length=200, description="Name contains")] = None,
) -> Page[ProjectRead]:
    """The organization's projects, by name, paginated."""
    rows, total = await crud.list_projects(session, q=q, limit=page.limit, offset=page.offset)
    items = [ProjectRead.model_validate(row) for row in rows]
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    operation_id="projects_create",
    summary="Create a project",
    responses=errors(409),
)
async def create_project(body: ProjectCreate, session: DbSession, principal: Member) -> ProjectRead:
    """A project holds tests, test sets, prompts, models, metrics and runs; names are unique in the
    organization."""
    return ProjectRead.model_validate(await service.create_project(session, principal, body))


@router.get(
    "/{project_id}",
    operation_id="projects_read",
    summary="Read a project",
)
async def read_project(project_id: uuid.UUID, session: DbSession, _: Viewer) -> ProjectRead:
    """Its name, description, default judge and baseline run."""
    return ProjectRead.model_validate(await service.get_project_or_404(session, project_id))


@router.patch(
    "/{project_id}",
    operation_id="projects_update",
    summary="Update a project",
    responses=errors(409),
)
async def update_project(
    project_id: uuid.UUID, body: ProjectUpdate, session: DbSession, _: Member
) -> ProjectRead:
    """Change its name, description or default judge model; fields left out stay as they are."""
    project = await service.get_project_or_404(session, project_id)
    return ProjectRead.model_validate(await service.update_project(session, project, body))


@router.delete(
    "/{project_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="projects_delete",
    summary="Delete the project with its tests, test sets and prompts",
)
async def delete_project(
    project_id: uuid.UUID, session: DbSession, principal: Member, meta: RequestMetaDep
) -> None:
    """Everything in the project goes with it; this cannot be undone."""
    project = await service.get_project_or_404(session, project_id)
    await crud.delete_project(session, project)
    await record_deletion(session, principal, meta, "project", project.id, name=project.name)
