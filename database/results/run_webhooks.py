"""What a run's end tells the project's webhooks, queued in the transaction that ends the run
(see gates.end_run): `run.completed`, `run.failed` (failed, or stopped by its budget),
`run.cancelled`, `gate.failed`, and `regression` when a completed run, compared with the
project's baseline run as `GET /runs/{id}/compare?baseline=project` does, has a pass rate
regressed. The comparison is made only when an enabled webhook of the project subscribes to
`regression` and the project's baseline is another run."""

from __future__ import annotations

import uuid
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from database.projects import crud as project_crud
from database.projects import webhooks
from database.results import crud, events
from database.results.comparison import CompareOptions, compare
from database.results.comparison_schemas import Comparison
from database.results.crud import figures
from database.results.models import TERMINAL, Run
from utils.errors import InvalidInput

log = structlog.get_logger(__name__)

RUN_EVENTS = {
    "completed": "run.completed",
    "failed": "run.failed",
    "stopped": "run.failed",
    "cancelled": "run.cancelled",
}
REGRESSION = "regression"


async def announce_end(
    session: AsyncSession,
    run: Run,
    status: str,
    *,
    error: str | None,
    gate_result: dict[str, Any] | None,
) -> None:
    """Queues the messages of the run's end to the project's enabled webhooks subscribed to
    them (nothing is read or compared when none is)."""
    subscribed = await webhooks.subscribers(session, run.project_id)
    wanted = {event for webhook in subscribed for event in webhook.events}
    if not wanted:
        return
    data = await _run_data(session, run, status, error, gate_result)
    found: list[tuple[str, dict[str, Any]]] = []
    run_event = RUN_EVENTS.get(status)
    if run_event is not None and run_event in wanted:
        found.append((run_event, data))
    if gate_result is not None and gate_result["status"] == "failed" and "gate.failed" in wanted:
        found.append(("gate.failed", data))
    if status == "completed" and REGRESSION in wanted:
        regression = await _regression(session, run)
        if regression is not None:
            links = {**data["links"], "compare": regression.pop("compare")}
            found.append((REGRESSION, {**data, "regression": regression, "links": links}))
    await webhooks.publish(session, run.organization_id, found, subscribed)


async def _run_data(
    session: AsyncSession,
    run: Run,
    status: str,
    error: str | None,
    gate_result: dict[str, Any] | None,
) -> dict[str, Any]:
    rate, _, _ = await figures.pass_rate(session, run)
    gate = None
    if gate_result is not None:
        comparison = gate_result.get("comparison") or {}
        gate = {
            "status": gate_result["status"],
            "reasons": gate_result["reasons"],
            "baseline_run_id": gate_result.get("baseline_run_id"),
            "verdict": comparison.get("verdict"),
        }
    path = f"/api/v1/runs/{run.id}"
    return {
        "run_id": str(run.id),
        "project_id": str(run.project_id),
        "test_set_id": str(run.test_set_id) if run.test_set_id else None,
        "name": run.name,
        "status": status,
        "error": error,
        "counts": await events.counts(session, run),
        "pass_rate": rate,
        "gate": gate,
        "links": {
            "run": path,
            "results": f"{path}/results",
            "summary": f"{path}/summary",
            "events": f"/public/runs/{run.id}/events",
        },
    }


async def _regression(session: AsyncSession, run: Run) -> dict[str, Any] | None:
    """What regressed against the project's baseline run, or None (no other baseline, no
    regression, or no comparison to be made)."""
    project = await project_crud.get_project(session, run.project_id)
    baseline_id = project.baseline_run_id if project is not None else None
    if baseline_id is None or baseline_id == run.id:
        return None
    baseline = await crud.get_run(session, baseline_id)
    if baseline is None or baseline.project_id != run.project_id or baseline.status not in TERMINAL:
        return None
    try:
        async with session.begin_nested():  # a failed comparison leaves the run's end intact
            found = await compare(session, run, baseline, _options(run))
    except InvalidInput:  # nothing to compare (no case in common)
        return None
    except Exception:  # a webhook must never keep a run from ending
        log.exception("regression not compared", run_id=str(run.id))
        return None
    return _regressed(found, baseline_id)


def _options(run: Run) -> CompareOptions:
    """Compared as the run's gate compares (its margin of no change), else by default: a run
    whose gate found no change that matters is not reported as regressed."""
    margin = (run.gate or {}).get("min_effect")
    return CompareOptions() if margin is None else CompareOptions(min_effect=margin)


def _regressed(found: Comparison, baseline_id: uuid.UUID) -> dict[str, Any] | None:
    metrics = [
        {
            "name": metric.name,
            "baseline": metric.pass_rate.baseline,
            "candidate": metric.pass_rate.candidate,
            "delta": metric.pass_rate.delta,
            "reason": metric.pass_rate.reason,
        }
        for metric in found.metrics
        if metric.pass_rate.verdict == "regressed"
    ]
    if not metrics and found.overall.verdict != "regressed":
        return None
    return {
        "baseline_run_id": str(baseline_id),
        "verdict": found.verdict,
        "reason": found.reason,
        "metrics": metrics,
        "compare": f"/api/v1/runs/{found.run_id}/compare?baseline={baseline_id}",
    }
