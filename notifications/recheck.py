"""Open streams whose credential is no longer good end within a bounded time.

Who may watch a run is decided when its stream opens; a stream then lives up to its lifetime.
So each stream carries what authorised it (its `Credential`: the issuer, a login session or an
API key, and the check that asks about it), and every recheck interval the hub's clock collects
the distinct issuers of its open streams and asks about each once, a batch of them per short
transaction. The streams of an issuer no longer good end with the reason; a check that fails
(the database away) ends nothing: the next interval asks again.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from database.core import Database
from notifications.rounds import Rounds

log = structlog.get_logger(__name__)

ISSUERS_PER_TRANSACTION = 200


@dataclass(frozen=True, slots=True)
class Issuer:
    """What issued a stream's credential: a user's login session, or an organization's API
    key."""

    organization_id: uuid.UUID
    user_id: uuid.UUID | None = None
    session_id: uuid.UUID | None = None
    api_key_id: uuid.UUID | None = None


class IssuerCheck(Protocol):
    """Of `issuers`, those no longer good, each with why (a line for the client). Given a
    transaction acting for no tenant, it acts for each issuer's own."""

    def __call__(
        self, session: AsyncSession, issuers: Sequence[Issuer]
    ) -> Awaitable[Mapping[Issuer, str]]: ...


@dataclass(frozen=True, slots=True)
class Credential:
    """What authorised a stream, the check that asks whether it still does, and how often to
    ask while the stream is open."""

    issuer: Issuer
    check: IssuerCheck
    recheck_seconds: float


class Watched(Protocol):
    """An open stream as the recheck sees it (notifications.hub.Subscriber)."""

    @property
    def credential(self) -> Credential | None: ...

    @property
    def ending(self) -> str | None: ...

    def revoke(self, reason: str) -> None: ...


class CredentialRecheck:
    """Driven by the hub's clock: one round at a time, each round `recheck_seconds` (the
    shortest of the open streams') after the one before."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.rounds = Rounds()

    def tick(self, streams: Iterable[Watched], now: float) -> asyncio.Task[None] | None:
        """Starts a round if one is due and a stream has a credential: the round, if so."""
        if not self.rounds.due(now):
            return None
        watched: dict[IssuerCheck, dict[Issuer, list[Watched]]] = {}
        interval = math.inf
        for stream in streams:
            credential = stream.credential
            if credential is None or stream.ending is not None:
                continue
            interval = min(interval, credential.recheck_seconds)
            by_issuer = watched.setdefault(credential.check, {})
            by_issuer.setdefault(credential.issuer, []).append(stream)
        if not watched:
            return None
        return self.rounds.start(
            self._recheck(watched), now, interval, name="stream-credential-recheck"
        )

    async def stop(self) -> None:
        await self.rounds.stop()

    async def _recheck(self, watched: dict[IssuerCheck, dict[Issuer, list[Watched]]]) -> None:
        for check, streams_of in watched.items():
            issuers = list(streams_of)
            for start in range(0, len(issuers), ISSUERS_PER_TRANSACTION):
                batch = issuers[start : start + ISSUERS_PER_TRANSACTION]
                try:
                    async with self.database.transaction() as session:
                        ended = await check(session, batch)
                except Exception as exc:  # the streams stay open: the next round asks again
                    log.warning(
                        "rechecking stream credentials failed", issuers=len(batch), error=str(exc)
                    )
                    continue
                for issuer, reason in ended.items():
                    for stream in streams_of.get(issuer, ()):
                        stream.revoke(reason)
                if ended:
                    log.info("streams of credentials no longer good ended", issuers=len(ended))
