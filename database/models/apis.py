from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Query, status

from database.deps import (
    DbSession,
    Member,
    Pagination,
    RuntimeDep,
    Viewer,
    commit_before_waiting,
)
from database.models import crud, service
from database.models.models import ModelConfig
from database.models.schemas import (
    ConnectionTestRequest,
    ConnectionTestResult,
    ModelConfigCreate,
    ModelConfigRead,
    ModelConfigUpdate,
    Provider,
    tool_schemas,
)
from database.organizations.audit import RequestMetaDep, record, record_deletion
from database.routing import api_router
from utils.problems import errors
from utils.save_checks import check_schemas, schemas_checked_by_handler
from utils.schemas import Page

router = api_router(prefix="/models", tags=["models"])


@router.get(
    "",
    operation_id="models_list",
    summary="Model configurations (targets and judges)",
)
async def list_models(
    session: DbSession,
    principal: Viewer,
    page: Pagination,
    provider: Annotated[Provider | None, Query()] = None,
) -> Page[ModelConfigRead]:
    """Provider keys and HTTP headers are shown masked; to viewers, URLs show their host only."""
    rows, total = await crud.list_models(
        session, provider=provider, limit=page.limit, offset=page.offset
    )
    items = [service.to_read(row, principal) for row in rows]
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    operation_id="models_create",
    dependencies=[Depends(schemas_checked_by_handler)],
    summary="Create a model configuration",
    responses=errors(409),
)
async def create_model(
    body: ModelConfigCreate,
    session: DbSession,
    runtime: RuntimeDep,
    principal: Member,
    meta: RequestMetaDep,
) -> ModelConfigRead:
    """A provider model, an OpenAI-compatible endpoint, your application over HTTP, or the offline
    `demo` provider."""
    await check_schemas(tool_schemas(body.tools), field="tools")
    config = await service.create_model(session, runtime, principal, body)
    await record(
        session,
        principal,
        action="model.created",
        target_type="model",
        target_id=config.id,
        details={
            "name": config.name,
            "provider": config.provider,
            "secrets_set": _secret_fields(config),
        },
        request_meta=meta,
    )
    return service.to_read(config, principal)


@router.get(
    "/{model_id}",
    operation_id="models_read",
    summary="Read a model configuration",
)
async def read_model(model_id: uuid.UUID, session: DbSession, principal: Viewer) -> ModelConfigRead:
    """Secrets are shown masked; to viewers, URLs show their host only."""
    return service.to_read(await service.get_model_or_404(session, model_id), principal)


@router.patch(
    "/{model_id}",
    operation_id="models_update",
    dependencies=[Depends(schemas_checked_by_handler)],
    summary="Update a model configuration",
    responses=errors(409),
)
async def update_model(
    model_id: uuid.UUID,
    body: ModelConfigUpdate,
    session: DbSession,
    runtime: RuntimeDep,
    principal: Member,
    meta: RequestMetaDep,
) -> ModelConfigRead:
    """Fields left out stay as they are; send `api_key` to replace the stored key."""
    await check_schemas(tool_schemas(body.tools), field="tools")
    config = await service.get_model_or_404(session, model_id)
    before = _secret_fields(config)
    await service.update_model(session, runtime, config, body)
    secrets_set, secrets_cleared = _secrets_written(body, before, _secret_fields(config))
    await record(
        session,
        principal,
        action="model.updated",
        target_type="model",
        target_id=config.id,
        details={
            "name": config.name,
            "fields": sorted(body.model_fields_set - {"api_key"}),
            "secrets_set": secrets_set,
            "secrets_cleared": secrets_cleared,
        },
        request_meta=meta,
    )
    return service.to_read(config, principal)


@router.delete(
    "/{model_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="models_delete",
    summary="Delete a model configuration",
)
async def delete_model(
    model_id: uuid.UUID, session: DbSession, principal: Member, meta: RequestMetaDep
) -> None:
    """Runs that used it keep their results."""
    config = await service.get_model_or_404(session, model_id)
    await crud.delete_model(session, config)
    await record_deletion(
        session, principal, meta, "model", config.id, name=config.name, provider=config.provider
    )


@router.post(
    "/{model_id}/test-connection",
    operation_id="models_test_connection",
    summary="Make one real call with a short timeout; report latency and reply, or the error",
    responses=errors(429),
)
async def test_connection(
    model_id: uuid.UUID,
    session: DbSession,
    runtime: RuntimeDep,
    principal: Member,
    body: ConnectionTestRequest | None = None,
) -> ConnectionTestResult:
    """Answers 200 either way: `ok` says whether the call worked. An organization makes at most
    `ASSAY_CONNECTION_TESTS_PER_HOUR` an hour: each is a real call, perhaps paid."""
    stored = await service.get_model_or_404(session, model_id)
    await service.count_connection_test(runtime, principal)
    # No connection held while the endpoint takes its time (up to 15 s): sixteen checks of one
    # that hangs held every pooled connection, and every other request waited for one.
    await commit_before_waiting(session)
    return await service.test_connection(runtime, stored, body or ConnectionTestRequest())


# --- what the audit log says of secrets: which were written, never their values ---------------


def _secret_fields(config: ModelConfig) -> list[str]:
    """The secret fields a configuration holds: its API key, and each HTTP header by name."""
    held = ["api_key"] if config.api_key_encrypted else []
    return held + [f"http.headers.{name}" for name in config.http_header_names or []]


def _secrets_written(
    body: ModelConfigUpdate, before: list[str], after: list[str]
) -> tuple[list[str], list[str]]:
    """(set, cleared): a key sent is set; a target sent sets each of its headers (values are
    never compared); whatever was held and is no longer was cleared."""
    sent = body.model_fields_set
    secrets_set = ["api_key"] if "api_key" in sent and body.api_key is not None else []
    if "http" in sent:
        secrets_set += [name for name in after if name.startswith("http.headers.")]
    return secrets_set, [name for name in before if name not in after]
