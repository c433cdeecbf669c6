"""Queries of model configurations. Flush, never commit."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from database.models.models import ModelConfig
from utils.crud import delete_once, flush_unique, paginate

DUPLICATE_NAME = "A model configuration with this name already exists in the organization"


async def create_model(session: AsyncSession, config: ModelConfig) -> ModelConfig:
    session.add(config)
    await flush_unique(session, DUPLICATE_NAME)
    return config


async def get_model(session: AsyncSession, model_id: uuid.UUID) -> ModelConfig | None:
    return await session.get(ModelConfig, model_id)


async def list_models(
    session: AsyncSession, *, provider: str | None, limit: int, offset: int
) -> tuple[list[ModelConfig], int]:
    query = select(ModelConfig).order_by(ModelConfig.name, ModelConfig.id)
    if provider:
        query = query.where(ModelConfig.provider == provider)
    return await paginate(session, query, limit=limit, offset=offset)


async def save_model(session: AsyncSession) -> None:
    await flush_unique(session, DUPLICATE_NAME)


async def delete_model(session: AsyncSession, config: ModelConfig) -> None:
    await delete_once(session, config, "Model configuration")
