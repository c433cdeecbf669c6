from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import Field

from utils.schemas import InputModel, Name, OutputModel, example

MAX_MEMBERS_PER_CALL = 10_000


class TestSetCreate(InputModel):
    model_config = example(
        {
            "project_id": "3f1c2a9e-6b7d-4e58-9a01-2c3d4e5f6a7b",
            "name": "smoke",
            "description": "Ten questions every release must answer",
            "test_ids": [
                "8b0e7c6d-1a2b-4c3d-8e9f-0a1b2c3d4e5f",
                "9c1f8d7e-2b3c-4d4e-9f0a-1b2c3d4e5f60",
            ],
        }
    )

    project_id: uuid.UUID
    name: Name
    description: str | None = Field(default=None, max_length=10_000)
    test_ids: list[uuid.UUID] = Field(
        default_factory=list, max_length=MAX_MEMBERS_PER_CALL, description="Initial tests, in order"
    )


class TestSetUpdate(InputModel):
    model_config = example({"description": "Twelve questions every release must answer"})

    name: Name | None = None
    description: str | None = Field(default=None, max_length=10_000)


class TestSetRead(OutputModel):
    id: uuid.UUID
    project_id: uuid.UUID
    name: str
    description: str | None
    test_count: int
    latest_version: int | None = Field(description="Number of the newest published version")
    created_at: datetime
    updated_at: datetime


class MembersAdd(InputModel):
    model_config = example(
        {
            "test_ids": [
                "8b0e7c6d-1a2b-4c3d-8e9f-0a1b2c3d4e5f",
                "9c1f8d7e-2b3c-4d4e-9f0a-1b2c3d4e5f60",
            ]
        }
    )

    test_ids: list[uuid.UUID] = Field(min_length=1, max_length=MAX_MEMBERS_PER_CALL)


class MembersReplace(InputModel):
    model_config = example(
        {
            "test_ids": [
                "9c1f8d7e-2b3c-4d4e-9f0a-1b2c3d4e5f60",
                "8b0e7c6d-1a2b-4c3d-8e9f-0a1b2c3d4e5f",
            ]
        }
    )

    test_ids: list[uuid.UUID] = Field(
        max_length=MAX_MEMBERS_PER_CALL, description="The whole membership, in order"
    )


class MembersChanged(OutputModel):
    test_count: int
    added: int = Field(default=0, description="Tests the set did not hold before")


class VersionCreate(InputModel):
    model_config = example({"note": "Before the March release"})

    note: str | None = Field(default=None, max_length=2000)


class VersionRead(OutputModel):
    id: uuid.UUID
    test_set_id: uuid.UUID
    number: int
    content_hash: str
    case_count: int
    note: str | None
    created_at: datetime


class VersionCaseRead(OutputModel):
    position: int
    test_id: uuid.UUID | None
    case: dict[str, Any]


class ImportedMetric(OutputModel):
    id: uuid.UUID
    name: str
    type: str
    created: bool = Field(description="false: the project's metric of that name was reused")


class LeftOut(OutputModel):
    """Assertions of the file with no Assay equivalent: listed, never silently dropped."""

    type: str = Field(description="As the file names it")
    count: int
    lines: list[int] = Field(description="Where (the first 20)")
    file: str | None = Field(description="The attached file it is in; null: the upload")
    reason: str


class ImportResult(OutputModel):
    imported: int = Field(description="Tests written (a sync keeps the tests it already holds)")
    test_count: int = Field(description="Tests in the set after the import")
    changed: bool = Field(description="false: a sync found the set holding these cases already")
    metrics: list[ImportedMetric] = Field(
        default_factory=list,
        description="The file's assertions as metrics (each test gives its own parameters),"
        " added to the set's default metrics",
    )
    unmapped: list[LeftOut] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list, description="Anything else not imported")
