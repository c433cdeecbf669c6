"""NOTIFY after commit: run ids on `assay_run_events` (coalesced: at most one per run every
`interval` seconds from this process, but a run's end at once), and live-only deltas on
`assay_run_deltas`.

A NOTIFY only says "look": listeners read the events themselves from `run_events`, so a lost
notification delays an event (until the hub's next poll), never loses it. Whoever records a
run's events in a transaction calls `publish_after_commit`; the NOTIFY follows the commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Callable, Collection, Iterable
from typing import Any

import structlog
from sqlalchemy import event as orm_event
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from database.core import Database
from utils.storable import storable

log = structlog.get_logger(__name__)

EVENTS_CHANNEL = "assay_run_events"
DELTAS_CHANNEL = "assay_run_deltas"
INTERVAL = 0.1
MAX_PAYLOAD = 7000  # bytes; PostgreSQL refuses NOTIFY payloads from 8000
MAX_PENDING_DELTAS = 2000  # per run: beyond this, deltas are dropped (they are best effort)

_NOTIFY = text(
    "SELECT pg_notify(u.channel, u.payload)"
    " FROM unnest(CAST(:channels AS TEXT[]), CAST(:payloads AS TEXT[])) AS u(channel, payload)"
)


# --- after commit: hand the changed runs to this process's publisher --------------------------

_PENDING_KEY = "assay_notify_runs"
_ENDED_KEY = "assay_notify_ended_runs"
_publish: Callable[[set[uuid.UUID], set[uuid.UUID]], None] | None = None


def install_publisher(callback: Callable[[set[uuid.UUID], set[uuid.UUID]], None] | None) -> None:
    global _publish
    _publish = callback


def publish_after_commit(session: AsyncSession, run_id: uuid.UUID, *, ended: bool = False) -> None:
    """The run's new events are announced once this transaction commits (never if it rolls
    back); `ended`: they end the run."""
    session.info.setdefault(_PENDING_KEY, set()).add(run_id)
    if ended:
        session.info.setdefault(_ENDED_KEY, set()).add(run_id)


# A savepoint's release or rollback fires these too (a run's end compares it with its baseline
# in one): what is pending waits for the transaction itself.


@orm_event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return
    runs = session.info.pop(_PENDING_KEY, None)
    ended = session.info.pop(_ENDED_KEY, set())
    if runs and _publish is not None:
        _publish(runs, ended)


@orm_event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    if session.in_nested_transaction():
        return
    session.info.pop(_PENDING_KEY, None)
    session.info.pop(_ENDED_KEY, None)


class Publisher:
    def __init__(self, database: Database, *, interval: float = INTERVAL) -> None:
        self.database = database
        self.interval = interval
        self._events_due: dict[uuid.UUID, float] = {}
        self._deltas_due: dict[uuid.UUID, float] = {}
        self._deltas: dict[uuid.UUID, list[dict[str, Any]]] = {}
        self._last_sent: dict[tuple[str, uuid.UUID], float] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # Called on the event loop (from the after-commit hook, or for a live delta); never block.

    def runs_changed(
        self, run_ids: Iterable[uuid.UUID], ended: Collection[uuid.UUID] = frozenset()
    ) -> None:
        """`ended`: runs whose end is among the changes. Coalescing bounds the notifications
        of runs under way; an end comes once per run, and the clients following a run (the
        CLI waiting on a gate, a dashboard) are waiting for it: it is sent at once."""
        now = time.monotonic()
        for run_id in run_ids:
            if run_id in ended:
                self._events_due[run_id] = now
            elif run_id not in self._events_due:
                last = self._last_sent.get((EVENTS_CHANNEL, run_id), 0.0)
                self._events_due[run_id] = max(now, last + self.interval)
        self._wake.set()

    def delta(self, run_id: uuid.UUID, event: dict[str, Any]) -> None:
        # A target's text may hold what no NOTIFY can carry (a lone surrogate, a NUL): sent,
        # it would fail the whole send, other runs' pending deltas with it.
        event = {**event, "text": storable(event.get("text", ""))}
        pending = self._deltas.setdefault(run_id, [])
        if event.get("reset"):  # a retried attempt: what is pending for it is void
            pending[:] = [other for other in pending if not _same_stream(other, event)]
        last = pending[-1] if pending else None
        if last is not None and _same_stream(last, event):
            last["text"] += event["text"]  # tokens of one answer travel together
        elif len(pending) < MAX_PENDING_DELTAS:
            pending.append(dict(event))
        else:
            return
        if run_id not in self._deltas_due:
            sent = self._last_sent.get((DELTAS_CHANNEL, run_id), 0.0)
            self._deltas_due[run_id] = max(time.monotonic(), sent + self.interval)
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="publisher")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        with contextlib.suppress(Exception):  # a last send of what is pending
            await self._send_due(float("inf"))

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self._send_due(time.monotonic())
            except Exception as exc:  # the database may be restarting: the hubs poll anyway
                log.warning("sending notifications failed", error=str(exc))
            upcoming = [*self._events_due.values(), *self._deltas_due.values()]
            timeout = max(0.0, min(upcoming) - time.monotonic()) if upcoming else None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    async def _send_due(self, now: float) -> None:
        runs = [run for run, due in self._events_due.items() if due <= now]
        # A run's pending deltas go with its events, and before them (one transaction's
        # NOTIFYs arrive in order): the last tokens of an answer never trail its result.
        with_events = set(runs)
        delta_runs = [
            run for run, due in self._deltas_due.items() if due <= now or run in with_events
        ]
        if not runs and not delta_runs:
            return
        channels: list[str] = []
        payloads: list[str] = []
        for run in delta_runs:
            del self._deltas_due[run]
            for payload in _delta_payloads(run, self._deltas.pop(run, [])):
                channels.append(DELTAS_CHANNEL)
                payloads.append(payload)
        for run in runs:
            del self._events_due[run]
            channels.append(EVENTS_CHANNEL)
            payloads.append(str(run))
        sent_at = time.monotonic()
        for run in runs:
            self._last_sent[(EVENTS_CHANNEL, run)] = sent_at
        for run in delta_runs:
            self._last_sent[(DELTAS_CHANNEL, run)] = sent_at
        self._forget_before(sent_at - 10 * self.interval)
        async with self.database.engine.connect() as connection:
            await connection.execute(_NOTIFY, {"channels": channels, "payloads": payloads})
            await connection.commit()

    def _forget_before(self, horizon: float) -> None:
        stale = [key for key, sent in self._last_sent.items() if sent < horizon]
        for key in stale:
            del self._last_sent[key]


def _same_stream(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys = ("type", "position", "repetition", "metric")
    return all(a.get(key) == b.get(key) for key in keys)


def _delta_payloads(run_id: uuid.UUID, events: list[dict[str, Any]]) -> list[str]:
    """The run's pending deltas as NOTIFY payloads under the size limit (text longer than a
    payload is split across deltas: they are concatenated by the reader anyway)."""
    payloads: list[str] = []
    batch: list[dict[str, Any]] = []
    size = 0
    for event in _split_long(events):
        encoded = len(json.dumps(event, ensure_ascii=False).encode())
        if batch and size + encoded > MAX_PAYLOAD - 100:
            payloads.append(json.dumps({"run": str(run_id), "events": batch}, ensure_ascii=False))
            batch, size = [], 0
        batch.append(event)
        size += encoded
    if batch:
        payloads.append(json.dumps({"run": str(run_id), "events": batch}, ensure_ascii=False))
    return payloads


def _split_long(events: list[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    limit = MAX_PAYLOAD // 8  # characters: up to 4 bytes each, plus JSON escaping
    for event in events:
        text_ = event.get("text", "")
        if len(text_) <= limit:
            yield event
            continue
        for start in range(0, len(text_), limit):
            yield {**event, "text": text_[start : start + limit]}
