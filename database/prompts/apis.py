from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Path, Query, status

from database.deps import DbSession, Member, Pagination, Viewer, commit_before_waiting
from database.organizations.audit import RequestMetaDep, record_deletion
from database.prompts import crud, service
from database.prompts.schemas import (
    LABEL_RULE,
    LabelName,
    LabelSet,
    PromptCreate,
    PromptRead,
    PromptUpdate,
    PromptVersionCreate,
    PromptVersionRead,
    RenderRequest,
    RenderResult,
)
from database.routing import api_router
from utils.errors import InvalidInput, NotFound
from utils.problems import errors
from utils.schemas import Page

router = api_router(prefix="/prompts", tags=["prompts"])
Label = Annotated[LabelName, Path(description=LABEL_RULE)]


async def _one(session: DbSession, prompt_id: uuid.UUID) -> PromptRead:
    prompt = await service.get_prompt_or_404(session, prompt_id)
    return (await service.to_reads(session, [prompt]))[0]


@router.get(
    "",
    operation_id="prompts_list",
    summary="List prompts",
)
async def list_prompts(
    session: DbSession,
    _: Viewer,
    page: Pagination,
    project_id: uuid.UUID | None = None,
    q: Annotated[str | None, Query(max_length=200, description="Name contains")] = None,
) -> Page[PromptRead]:
    """The project's prompts with their latest version number and labels."""
    rows, total = await crud.list_prompts(
        session, project_id=project_id, q=q, limit=page.limit, offset=page.offset
    )
    items = await service.to_reads(session, rows)
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    operation_id="prompts_create",
    summary="Create a prompt and its version 1",
    responses=errors(409),
)
async def create_prompt(body: PromptCreate, session: DbSession, principal: Member) -> PromptRead:
    """A prompt is a Jinja2 template (text or chat messages) rendered in a sandbox."""
    prompt = await service.create_prompt(session, principal, body)
    return (await service.to_reads(session, [prompt]))[0]


@router.get(
    "/{prompt_id}",
    operation_id="prompts_read",
    summary="Read a prompt",
)
async def read_prompt(prompt_id: uuid.UUID, session: DbSession, _: Viewer) -> PromptRead:
    """Its name, latest version and labels."""
    return await _one(session, prompt_id)


@router.patch(
    "/{prompt_id}",
    operation_id="prompts_update",
    summary="Rename a prompt or change its description",
    responses=errors(409),
)
async def update_prompt(
    prompt_id: uuid.UUID, body: PromptUpdate, session: DbSession, _: Member
) -> PromptRead:
    """Its versions are immutable: change the text with `prompts_create_version`."""
    prompt = await service.get_prompt_or_404(session, prompt_id)
    await service.update_prompt(session, prompt, body)
    return await _one(session, prompt_id)


@router.delete(
    "/{prompt_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="prompts_delete",
    summary="Delete a prompt",
)
async def delete_prompt(
    prompt_id: uuid.UUID, session: DbSession, principal: Member, meta: RequestMetaDep
) -> None:
    """With all its versions and labels."""
    prompt = await service.get_prompt_or_404(session, prompt_id)
    await crud.delete_prompt(session, prompt)
    await record_deletion(
        session,
        principal,
        meta,
        "prompt",
        prompt.id,
        name=prompt.name,
        project_id=prompt.project_id,
    )


@router.get(
    "/{prompt_id}/versions",
    operation_id="prompts_list_versions",
    summary="List a prompt's versions",
)
async def list_versions(
    prompt_id: uuid.UUID, session: DbSession, _: Viewer, page: Pagination
) -> Page[PromptVersionRead]:
    """Newest first, paginated."""
    prompt = await service.get_prompt_or_404(session, prompt_id)
    rows, total = await crud.list_versions(session, prompt.id, limit=page.limit, offset=page.offset)
    items = [await service.version_read(session, row) for row in rows]
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


@router.post(
    "/{prompt_id}/versions",
    status_code=status.HTTP_201_CREATED,
    operation_id="prompts_create_version",
    summary="Save a new immutable version (numbered after the latest)",
)
async def create_version(
    prompt_id: uuid.UUID, body: PromptVersionCreate, session: DbSession, _: Member
) -> PromptVersionRead:
    """Optionally moves labels to it."""
    version = await service.add_version(session, prompt_id, body)
    return await service.version_read(session, version)


@router.get(
    "/{prompt_id}/versions/{ref}",
    operation_id="prompts_read_version",
    summary="A version by number, by label, or `latest`",
)
async def read_version(
    prompt_id: uuid.UUID,
    ref: Annotated[str, Path(max_length=100)],
    session: DbSession,
    _: Viewer,
) -> PromptVersionRead:
    """The template, its variables and the labels pointing at it."""
    prompt = await service.get_prompt_or_404(session, prompt_id)
    return await service.version_read(session, await service.resolve_version(session, prompt, ref))


@router.put(
    "/{prompt_id}/labels/{label}",
    operation_id="prompts_set_label",
    summary="Point a label at a version (moves it)",
)
async def set_label(
    prompt_id: uuid.UUID, label: Label, body: LabelSet, session: DbSession, _: Member
) -> PromptRead:
    """Labels such as `production` or `staging` name one version at a time."""
    prompt = await service.get_prompt_or_404(session, prompt_id, for_update=True)
    await service.set_label(session, prompt, label, body.version)
    return await _one(session, prompt_id)


@router.delete(
    "/{prompt_id}/labels/{label}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="prompts_delete_label",
    summary="Delete a label",
)
async def delete_label(prompt_id: uuid.UUID, label: Label, session: DbSession, _: Member) -> None:
    """The version it pointed at stays."""
    prompt = await service.get_prompt_or_404(session, prompt_id)
    await service.delete_label(session, prompt, label)


@router.post(
    "/{prompt_id}/render",
    operation_id="prompts_render",
    summary="Render a version with variables",
    responses=errors(429),
)
async def render_prompt(
    prompt_id: uuid.UUID, body: RenderRequest, session: DbSession, principal: Viewer
) -> RenderResult:
    """Strict: a variable the template uses and the request leaves out is a 422 naming it. An
    organization renders at most two at a time (in each server process): more are a 429 with
    `Retry-After`."""
    prompt = await service.get_prompt_or_404(session, prompt_id)
    try:
        version = await service.resolve_version(session, prompt, body.version)
    except NotFound as exc:  # the prompt is found; the version is the body's field
        raise InvalidInput(exc.detail, field="version") from exc
    # No connection held while the render waits for a thread and runs: thirty queued renders
    # held thirty pooled connections, and every other tenant's request waited for one.
    await commit_before_waiting(session)
    return await service.render_version(
        version, body.variables, organization_id=principal.organization_id
    )
