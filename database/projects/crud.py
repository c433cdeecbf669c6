"""Queries of projects. Flush, never commit."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from database.projects.models import Project
from utils.crud import delete_once, flush_unique, paginate

DUPLICATE_NAME = "A project with this name already exists in the organization"


async def create_project(session: AsyncSession, project: Project) -> Project:
    session.add(project)
    await flush_unique(session, DUPLICATE_NAME)
    return project


async def get_project(
    session: AsyncSession, project_id: uuid.UUID, *, for_update: bool = False
) -> Project | None:
    if for_update:
        return await session.get(Project, project_id, with_for_update=True, populate_existing=True)
    return await session.get(Project, project_id)


async def list_projects(
    session: AsyncSession, *, q: str | None, limit: int, offset: int
) -> tuple[list[Project], int]:
    query = select(Project).order_by(Project.name, Project.id)
    if q:
        query = query.where(Project.name.icontains(q, autoescape=True))
    return await paginate(session, query, limit=limit, offset=offset)


async def save_project(session: AsyncSession) -> None:
    await flush_unique(session, DUPLICATE_NAME)


async def delete_project(session: AsyncSession, project: Project) -> None:
    """A 404 when another request deleted it first: only the deleting request records it."""
    await delete_once(session, project, "Project")
