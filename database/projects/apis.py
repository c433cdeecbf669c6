from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, status

from database.deps import DbSession, Member, Pagination, Viewer
from database.projects import crud, service
from database.projects.schemas import ProjectCreate, ProjectRead, ProjectUpdate
from utils.schemas import Page

router = APIRouter(prefix="/projects", tags=["projects"])


@router.get("")
async def list_projects(
    session: DbSession,
    _: Viewer,
    page: Pagination,
    q: Annotated[str | None, Query(max_length=200, description="Name contains")] = None,
) -> Page[ProjectRead]:
    rows, total = await crud.list_projects(session, q=q, limit=page.limit, offset=page.offset)
    items = [ProjectRead.model_validate(row) for row in rows]
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_project(body: ProjectCreate, session: DbSession, principal: Member) -> ProjectRead:
    return ProjectRead.model_validate(await service.create_project(session, principal, body))


@router.get("/{project_id}")
async def read_project(project_id: uuid.UUID, session: DbSession, _: Viewer) -> ProjectRead:
    return ProjectRead.model_validate(await service.get_project_or_404(session, project_id))


@router.patch("/{project_id}")
async def update_project(
    project_id: uuid.UUID, body: ProjectUpdate, session: DbSession, _: Member
) -> ProjectRead:
    project = await service.get_project_or_404(session, project_id)
    return ProjectRead.model_validate(await service.update_project(session, project, body))


@router.delete(
    "/{project_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete the project with its tests, test sets and prompts",
)
async def delete_project(project_id: uuid.UUID, session: DbSession, _: Member) -> None:
    project = await service.get_project_or_404(session, project_id)
    await crud.delete_project(session, project)
