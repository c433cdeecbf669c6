"""Queries of prompts, their versions and labels. Flush, never commit."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from database.prompts.models import Prompt, PromptLabel, PromptVersion
from utils.crud import delete_once, flush_unique, paginate

DUPLICATE_NAME = "A prompt with this name already exists in the project"


async def create_prompt(session: AsyncSession, prompt: Prompt) -> Prompt:
    session.add(prompt)
    await flush_unique(session, DUPLICATE_NAME)
    return prompt


async def get_prompt(
    session: AsyncSession, prompt_id: uuid.UUID, *, for_update: bool = False
) -> Prompt | None:
    query = select(Prompt).where(Prompt.id == prompt_id)
    if for_update:
        query = query.with_for_update()
    return await session.scalar(query)


async def list_prompts(
    session: AsyncSession, *, project_id: uuid.UUID | None, q: str | None, limit: int, offset: int
) -> tuple[list[Prompt], int]:
    query = select(Prompt).order_by(Prompt.name, Prompt.id)
    if project_id is not None:
        query = query.where(Prompt.project_id == project_id)
    if q:
        query = query.where(Prompt.name.icontains(q, autoescape=True))
    return await paginate(session, query, limit=limit, offset=offset)


async def save_prompt(session: AsyncSession) -> None:
    await flush_unique(session, DUPLICATE_NAME)


async def delete_prompt(session: AsyncSession, prompt: Prompt) -> None:
    """A 404 when another request deleted it first: only the deleting request records it."""
    await delete_once(session, prompt, "Prompt")


async def latest_numbers(
    session: AsyncSession, prompt_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, int]:
    rows = await session.execute(
        select(PromptVersion.prompt_id, func.max(PromptVersion.number))
        .where(PromptVersion.prompt_id.in_(prompt_ids))
        .group_by(PromptVersion.prompt_id)
    )
    return {prompt_id: number for prompt_id, number in rows.all()}


async def add_version(session: AsyncSession, version: PromptVersion) -> PromptVersion:
    session.add(version)
    await session.flush()
    return version


async def get_version(
    session: AsyncSession, prompt_id: uuid.UUID, number: int
) -> PromptVersion | None:
    return await session.scalar(
        select(PromptVersion).where(
            PromptVersion.prompt_id == prompt_id, PromptVersion.number == number
        )
    )


async def get_version_by_id(session: AsyncSession, version_id: uuid.UUID) -> PromptVersion | None:
    return await session.get(PromptVersion, version_id)


async def list_versions(
    session: AsyncSession, prompt_id: uuid.UUID, *, limit: int, offset: int
) -> tuple[list[PromptVersion], int]:
    query = (
        select(PromptVersion)
        .where(PromptVersion.prompt_id == prompt_id)
        .order_by(PromptVersion.number.desc())
    )
    return await paginate(session, query, limit=limit, offset=offset)


async def labels(
    session: AsyncSession, prompt_ids: Sequence[uuid.UUID]
) -> list[tuple[uuid.UUID, str, int]]:
    """(prompt id, label, version number) of the prompts' labels."""
    rows = await session.execute(
        select(PromptLabel.prompt_id, PromptLabel.name, PromptVersion.number)
        .join(PromptVersion, PromptVersion.id == PromptLabel.version_id)
        .where(PromptLabel.prompt_id.in_(prompt_ids))
        .order_by(PromptLabel.name)
    )
    return [(row[0], row[1], row[2]) for row in rows.all()]


async def version_for_label(
    session: AsyncSession, prompt_id: uuid.UUID, name: str
) -> PromptVersion | None:
    return await session.scalar(
        select(PromptVersion)
        .join(PromptLabel, PromptLabel.version_id == PromptVersion.id)
        .where(PromptLabel.prompt_id == prompt_id, PromptLabel.name == name)
    )


async def set_label(
    session: AsyncSession, prompt: Prompt, name: str, version: PromptVersion
) -> None:
    statement = pg_insert(PromptLabel).values(
        prompt_id=prompt.id,
        name=name,
        organization_id=prompt.organization_id,
        version_id=version.id,
    )
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[PromptLabel.prompt_id, PromptLabel.name],
            set_={"version_id": version.id, "updated_at": func.now()},
        )
    )


async def delete_label(session: AsyncSession, prompt_id: uuid.UUID, name: str) -> bool:
    result = await session.execute(
        delete(PromptLabel)
        .where(PromptLabel.prompt_id == prompt_id, PromptLabel.name == name)
        .returning(PromptLabel.name)
    )
    return result.first() is not None
