"""Recording run events: in the transaction that makes the change, then a NOTIFY after commit.

`seq` values come from `runs.event_seq`, incremented by an UPDATE that holds the run's row lock
until commit: two writers of one run take turns, so a run's events become visible in `seq`
order and a reader that has seen seq N has seen everything before it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import event, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from notifications.models import RunEvent
from utils import fastjson

# Event types. A stream ends after a terminal one.
RUN_STARTED = "run.started"
RESULT_RECORDED = "result.recorded"
RUN_PROGRESS = "run.progress"
RUN_FINISHED = "run.finished"
RUN_CANCELLED = "run.cancelled"
TERMINAL_EVENTS = frozenset({RUN_FINISHED, RUN_CANCELLED})
# Live only, never stored.
OUTPUT_DELTA = "output.delta"
EVALUATION_DELTA = "evaluation.delta"

_PENDING_KEY = "assay_notify_runs"

_ALLOCATE = text(
    "UPDATE runs SET event_seq = event_seq + :count WHERE id = :run_id RETURNING event_seq"
)
_INSERT = text(
    "INSERT INTO run_events (run_id, seq, organization_id, type, data)"
    " SELECT :run_id, e.seq, :organization_id, e.type, e.data"
    " FROM jsonb_to_recordset(CAST(:events AS JSONB))"
    " AS e(seq BIGINT, type VARCHAR(32), data JSONB)"
)


async def record(
    session: AsyncSession,
    *,
    run_id: uuid.UUID,
    organization_id: uuid.UUID,
    events: Sequence[tuple[str, dict[str, Any]]],
) -> int:
    """Appends events to the run's log; returns the last seq. Publishing follows the commit."""
    if not events:
        return 0
    last = (await session.execute(_ALLOCATE, {"count": len(events), "run_id": run_id})).scalar_one()
    first = last - len(events) + 1
    await session.execute(
        _INSERT,
        {
            "run_id": run_id,
            "organization_id": organization_id,
            "events": fastjson.dumps(
                [
                    {"seq": seq, "type": kind, "data": data}
                    for seq, (kind, data) in enumerate(events, start=first)
                ],
                default=str,
            ),
        },
    )
    session.info.setdefault(_PENDING_KEY, set()).add(run_id)
    return int(last)


async def events_after(
    session: AsyncSession, run_id: uuid.UUID, after: int, *, limit: int
) -> list[RunEvent]:
    rows = await session.scalars(
        select(RunEvent)
        .where(RunEvent.run_id == run_id, RunEvent.seq > after)
        .order_by(RunEvent.seq)
        .limit(limit)
    )
    return list(rows.all())


# --- after commit: hand the run ids to this process's publisher ------------------------------

_publish: Callable[[set[uuid.UUID]], None] | None = None


def install_publisher(callback: Callable[[set[uuid.UUID]], None] | None) -> None:
    global _publish
    _publish = callback


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    runs = session.info.pop(_PENDING_KEY, None)
    if runs and _publish is not None:
        _publish(runs)


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_PENDING_KEY, None)
