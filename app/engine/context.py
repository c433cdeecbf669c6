"""What the engine needs of the job it runs (`tasks.worker.JobContext` is one)."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession


class JobContext(Protocol):
    @property
    def kind(self) -> str: ...

    @property
    def payload(self) -> dict[str, Any]: ...

    @property
    def attempt(self) -> int:
        """This attempt's number, 1 for the first."""
        ...

    def transaction(self) -> AbstractAsyncContextManager[AsyncSession]:
        """A transaction acting for the job's organization."""
        ...
