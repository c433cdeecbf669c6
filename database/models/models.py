from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from database.core import Base, IdMixin, TimestampMixin

PROVIDERS = (
    "openai",
    "anthropic",
    "google",
    "groq",
    "mistral",
    "openai-compatible",
    "http",
    "demo",
)


class ModelConfig(IdMixin, TimestampMixin, Base):
    """What a run calls, as target or judge: a provider's model, or a team's HTTP endpoint.

    Secrets (the provider API key, HTTP headers) are stored encrypted, never in clear.
    """

    __tablename__ = "model_configs"
    __table_args__ = (
        UniqueConstraint("organization_id", "name"),
        CheckConstraint(
            "provider IN (" + ", ".join(f"'{p}'" for p in PROVIDERS) + ")", name="provider"
        ),
    )

    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    provider: Mapped[str] = mapped_column(String(32))
    model: Mapped[str | None] = mapped_column(String(200))
    base_url: Mapped[str | None] = mapped_column(Text)
    parameters: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    timeout_seconds: Mapped[float] = mapped_column(Float, default=60.0)
    requests_per_minute: Mapped[int | None] = mapped_column(Integer)
    # Ask for a streamed answer (every provider but demo; http with a stream_path): live
    # output.delta / evaluation.delta.
    stream: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    input_price_per_mtok: Mapped[Decimal | None] = mapped_column(Numeric(14, 6))
    output_price_per_mtok: Mapped[Decimal | None] = mapped_column(Numeric(14, 6))
    api_key_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    api_key_hint: Mapped[str | None] = mapped_column(String(32))
    # The `http` provider: the team's own endpoint.
    http_method: Mapped[str | None] = mapped_column(String(8))
    http_headers_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    http_header_names: Mapped[list[str] | None] = mapped_column(JSONB)
    body_template: Mapped[str | None] = mapped_column(Text)
    response_path: Mapped[str | None] = mapped_column(Text)
    tools: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list, server_default="[]")
    tool_calls_path: Mapped[str | None] = mapped_column(Text)
    # http: a JSONPath to each server-sent event's piece of the answer, when streaming.
    stream_path: Mapped[str | None] = mapped_column(Text)
