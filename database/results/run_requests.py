"""`POST /runs` with an Idempotency-Key: a client that lost the answer (a dropped connection, a
proxy's 502, a retried CI job) sends the request again with the same key and gets the run it
made, rather than start a second one that calls the providers and spends the budget again."""

from __future__ import annotations

import hashlib
import json

from sqlalchemy.ext.asyncio import AsyncSession

from database.results import service
from database.results.crud.run_requests import hold_request_key, run_of_request
from database.results.models import Run
from database.results.schemas import RunCreate
from utils.auth import Principal
from utils.errors import InvalidInput

KEY_HEADER = "Idempotency-Key"


async def start_run(
    session: AsyncSession, principal: Principal, body: RunCreate, key: str | None
) -> tuple[Run, bool]:
    """The run asked for, made now; or, for a key sent before with the same request, the run
    made then (True: made before). A key sent before with another request is refused."""
    if key is None:
        return await service.create_run(session, principal, body), False
    digest = request_digest(body)
    await hold_request_key(session, principal.organization_id, key)
    earlier = await run_of_request(session, key)
    if earlier is None:
        return await service.create_run(session, principal, body, request=(key, digest)), False
    if earlier.request_digest != digest:
        raise InvalidInput(
            "this key was sent before with another run request: give each request its own",
            field=KEY_HEADER,
        )
    return earlier, True


def request_digest(body: RunCreate) -> str:
    """What was asked, as a digest: the same request, however its JSON was written. Fields
    left at their defaults are not in it, so a field added to the request later does not
    change the digest of one asked before (a client retrying across a deploy)."""
    given = body.model_dump(mode="json", exclude_defaults=True)
    asked = json.dumps(given, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(asked.encode()).hexdigest()
