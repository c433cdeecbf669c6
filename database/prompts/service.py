"""Prompts: immutable numbered versions, movable labels, sandboxed rendering."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from database.projects.service import require_project
from database.prompts import crud
from database.prompts.models import Prompt, PromptVersion
from database.prompts.schemas import (
    MAX_VERSION_NUMBER,
    PromptCreate,
    PromptRead,
    PromptUpdate,
    PromptVersionCreate,
    PromptVersionRead,
    RenderResult,
)
from utils.auth import Principal
from utils.crud import apply_update, refuse_nulls
from utils.errors import InvalidInput, NotFound, RateLimited
from utils.templates import check_template_off_loop, render_off_loop

LATEST = "latest"
# Renders asked for through the API that one organization may have running at a time in this
# process; more are refused with a 429. The threads those renders share (utils.templates) have
# room for two organizations at their cap, so one flooding them cannot keep the others waiting.
MAX_RENDERS_PER_ORGANIZATION = 2
_renders_running: Counter[uuid.UUID] = Counter()


async def get_prompt_or_404(
    session: AsyncSession, prompt_id: uuid.UUID, *, for_update: bool = False
) -> Prompt:
    prompt = await crud.get_prompt(session, prompt_id, for_update=for_update)
    if prompt is None:
        raise NotFound("Prompt not found")
    return prompt


async def to_reads(session: AsyncSession, prompts: Sequence[Prompt]) -> list[PromptRead]:
    ids = [p.id for p in prompts]
    latest = await crud.latest_numbers(session, ids)
    labels: dict[uuid.UUID, dict[str, int]] = {i: {} for i in ids}
    for prompt_id, name, number in await crud.labels(session, ids):
        labels[prompt_id][name] = number
    return [
        PromptRead(
            id=p.id,
            project_id=p.project_id,
            name=p.name,
            description=p.description,
            latest_version=latest.get(p.id),
            labels=labels[p.id],
            created_at=p.created_at,
            updated_at=p.updated_at,
        )
        for p in prompts
    ]


async def version_read(session: AsyncSession, version: PromptVersion) -> PromptVersionRead:
    names = [
        name
        for _, name, number in await crud.labels(session, [version.prompt_id])
        if number == version.number
    ]
    return PromptVersionRead(
        id=version.id,
        prompt_id=version.prompt_id,
        number=version.number,
        template=version.template,
        system_prompt=version.system_prompt,
        parameters=version.parameters,
        note=version.note,
        labels=names,
        created_at=version.created_at,
    )


async def _check_templates(body: PromptVersionCreate) -> None:
    await check_template_off_loop(body.template, field="template")
    if body.system_prompt:
        await check_template_off_loop(body.system_prompt, field="system_prompt")


async def create_prompt(session: AsyncSession, principal: Principal, body: PromptCreate) -> Prompt:
    await require_project(session, body.project_id, field="project_id")
    await _check_templates(body)
    prompt = await crud.create_prompt(
        session,
        Prompt(
            organization_id=principal.organization_id,
            project_id=body.project_id,
            name=body.name,
            description=body.description,
        ),
    )
    await _add_version(session, prompt, body, number=1)
    return prompt


async def add_version(
    session: AsyncSession, prompt_id: uuid.UUID, body: PromptVersionCreate
) -> PromptVersion:
    """Next number under the prompt's row lock, so concurrent saves never collide. The
    templates are checked first: the check may wait for a template thread, and the lock would
    hold every other save of the prompt (and a connection) meanwhile."""
    await _check_templates(body)
    prompt = await get_prompt_or_404(session, prompt_id, for_update=True)
    latest = (await crud.latest_numbers(session, [prompt.id])).get(prompt.id, 0)
    return await _add_version(session, prompt, body, number=latest + 1)


async def _add_version(
    session: AsyncSession, prompt: Prompt, body: PromptVersionCreate, *, number: int
) -> PromptVersion:
    version = await crud.add_version(
        session,
        PromptVersion(
            organization_id=prompt.organization_id,
            prompt_id=prompt.id,
            number=number,
            template=body.template,
            system_prompt=body.system_prompt,
            parameters=body.parameters.model_dump(exclude_none=True),
            note=body.note,
        ),
    )
    for label in dict.fromkeys(body.labels):
        await crud.set_label(session, prompt, label, version)
    return version


SHOWN_REF_CHARS = 100  # of a version asked for and not found: a request's text, echoed


async def resolve_version(session: AsyncSession, prompt: Prompt, ref: str | int) -> PromptVersion:
    """A version by number, by label, or the latest."""
    text = str(ref).strip()
    if text.isascii() and text.isdigit():
        number = int(text)
        fits = number <= MAX_VERSION_NUMBER  # the column is a 32-bit integer
        version = await crud.get_version(session, prompt.id, number) if fits else None
    elif text == LATEST:
        latest = (await crud.latest_numbers(session, [prompt.id])).get(prompt.id)
        version = await crud.get_version(session, prompt.id, latest) if latest else None
    else:
        version = await crud.version_for_label(session, prompt.id, text)
    if version is None:
        shown = text if len(text) <= SHOWN_REF_CHARS else text[: SHOWN_REF_CHARS - 1] + "…"
        raise NotFound(f"Prompt version {shown!r} not found")
    return version


async def update_prompt(session: AsyncSession, prompt: Prompt, body: PromptUpdate) -> None:
    changes = body.model_dump(exclude_unset=True)
    refuse_nulls(changes, "name")
    apply_update(prompt, changes)
    await crud.save_prompt(session)


async def set_label(session: AsyncSession, prompt: Prompt, name: str, number: int) -> None:
    if name == LATEST:
        raise InvalidInput("`latest` is reserved", field="label")
    version = await crud.get_version(session, prompt.id, number)
    if version is None:
        raise InvalidInput(f"version {number} does not exist", field="version")
    await crud.set_label(session, prompt, name, version)


async def delete_label(session: AsyncSession, prompt: Prompt, name: str) -> None:
    if not await crud.delete_label(session, prompt.id, name):
        raise NotFound("Label not found")


@contextmanager
def _render_slot(organization_id: uuid.UUID) -> Iterator[None]:
    """One of the organization's MAX_RENDERS_PER_ORGANIZATION, held while the body runs; a 429
    when all are taken. (Taken and given back on the event loop: no lock needed.)"""
    if _renders_running[organization_id] >= MAX_RENDERS_PER_ORGANIZATION:
        raise RateLimited(
            f"Too many renders at once; at most {MAX_RENDERS_PER_ORGANIZATION} of an"
            " organization run at a time. Retry in 1 s.",
            headers={"Retry-After": "1"},
        )
    _renders_running[organization_id] += 1
    try:
        yield
    finally:
        _renders_running[organization_id] -= 1
        if not _renders_running[organization_id]:
            del _renders_running[organization_id]


async def render_version(
    version: PromptVersion, variables: dict[str, Any], *, organization_id: uuid.UUID
) -> RenderResult:
    """Rendered in the threads for renders asked for through the API, within the
    organization's cap on renders at a time."""
    context = prompt_context(
        variables, input=variables.get("input"), messages=variables.get("messages")
    )
    with _render_slot(organization_id):
        system = (
            await render_off_loop(
                version.system_prompt, context, template_field="system_prompt", interactive=True
            )
            if version.system_prompt
            else None
        )
        text = await render_off_loop(version.template, context, interactive=True)
    return RenderResult(version=version.number, text=text, system_prompt=system)


def prompt_context(variables: dict[str, Any], *, input: Any, messages: Any) -> dict[str, Any]:
    """What a prompt's template and its system prompt both render with, in a run and in a
    preview alike: the variables, with `input` (the input as given, not as the template made
    it; "" when there is none) and `messages` (the conversation's, [] when there are none)."""
    return {
        **variables,
        "input": "" if input is None else input,
        "messages": [] if messages is None else messages,
    }
