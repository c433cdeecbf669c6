"""The messages Assay POSTs to webhook receivers, as schemas: the API document lists each under
`webhooks` (app/main.py registers them), and a test holds the messages real runs send to them.

A message is a Standard Webhooks body, `{"type", "timestamp", "data"}` (webhooks.message); the
data of the run events is built by database/results/run_webhooks.py, of `webhook.test` by
webhooks.send_test. This layer lies below database.results, so the few words it shares with it
(a run's ending status, a gate's status, a comparison's verdict) are spelled here, and a test
holds them to the originals."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from utils.schemas import example

EndStatus = Literal["completed", "failed", "stopped", "cancelled"]
GateStatus = Literal["passed", "failed", "undecided"]
Verdict = Literal["improved", "regressed", "equivalent", "inconclusive"]


class _Part(BaseModel):
    """Exactly the fields sent, no other: a field added to a message is added here too, or
    the test of the messages real runs send fails."""

    model_config = ConfigDict(extra="forbid")


class RunEndCounts(_Part):
    total: int = Field(description="Cases times repetitions")
    done: int
    passed: int
    failed: int
    errored: int


class RunEndGate(_Part):
    """The verdict of the run's gate (its full result: `GET /api/v1/runs/{run_id}`)."""

    status: GateStatus
    reasons: list[str] = Field(description="Why, in words: each failed check or doubt")
    baseline_run_id: uuid.UUID | None
    verdict: Verdict | None = Field(
        description="The overall verdict of the comparison with the baseline, when one was made"
    )


class FailedRunEndGate(RunEndGate):
    status: Literal["failed"]


class RunEndLinks(_Part):
    """Paths on the Assay server (relative: a receiver prefixes its base URL)."""

    run: str = Field(description="`/api/v1/runs/{run_id}`")
    results: str = Field(description="`/api/v1/runs/{run_id}/results`")
    summary: str = Field(description="`/api/v1/runs/{run_id}/summary`")
    events: str = Field(description="`/public/runs/{run_id}/events`, the run's live stream")


class RegressionLinks(RunEndLinks):
    compare: str = Field(
        description="`/api/v1/runs/{run_id}/compare?baseline={baseline_run_id}`, the whole"
        " comparison"
    )


class _RunEndData(_Part):
    """The run as it ended: the data of every run event."""

    run_id: uuid.UUID
    project_id: uuid.UUID
    test_set_id: uuid.UUID | None
    name: str | None
    status: EndStatus = Field(description="`stopped`: its budget ran out")
    error: str | None = Field(description="Why it failed or stopped")
    counts: RunEndCounts
    pass_rate: float | None = Field(description="Null when no result was rated")
    gate: RunEndGate | None = Field(description="Null for a run without a gate")
    links: RunEndLinks


class RunCompletedData(_RunEndData):
    status: Literal["completed"]


class RunFailedData(_RunEndData):
    status: Literal["failed", "stopped"] = Field(description="`stopped`: its budget ran out")


class RunCancelledData(_RunEndData):
    status: Literal["cancelled"]


class GateFailedData(_RunEndData):
    gate: FailedRunEndGate


class RegressedMetric(_Part):
    """A metric whose pass rate regressed: its rates on the paired cases."""

    name: str
    baseline: float | None
    candidate: float | None
    delta: float | None = Field(description="Candidate minus baseline")
    reason: str


class RegressionFound(_Part):
    baseline_run_id: uuid.UUID = Field(description="The project's baseline run")
    verdict: Verdict = Field(description="The comparison's overall verdict")
    reason: str = Field(description="The overall comparison's, in words")
    metrics: list[RegressedMetric] = Field(
        description="The metrics that regressed (none when only the overall pass rate did)"
    )


class RegressionData(_RunEndData):
    status: Literal["completed"]
    regression: RegressionFound
    links: RegressionLinks


class WebhookTestData(_Part):
    webhook_id: uuid.UUID
    project_id: uuid.UUID
    message: str


# --- the messages ---------------------------------------------------------------------------

_TIMESTAMP = Field(
    description="When the event happened (UTC, with milliseconds); an attempt's own time is its"
    " `webhook-timestamp` header"
)
_RUN = "0192f0c4-7d2e-7a3b-9c4d-5e6f7a8b9c0d"
_PROJECT = "0192f0a1-1b2c-7d3e-8f4a-5b6c7d8e9f0a"
_BASELINE = "0192efb9-3c4d-7e5f-8a6b-7c8d9e0f1a2b"
_PATH = f"/api/v1/runs/{_RUN}"
_LINKS = {
    "run": _PATH,
    "results": f"{_PATH}/results",
    "summary": f"{_PATH}/summary",
    "events": f"/public/runs/{_RUN}/events",
}


def _run_example(event: str, **data: Any) -> ConfigDict:
    """A message's example, as run_webhooks builds its data."""
    whole = {
        "run_id": _RUN,
        "project_id": _PROJECT,
        "test_set_id": "0192f0b2-2a3b-7c4d-9e5f-6a7b8c9d0e1f",
        "name": "prompt v2",
        "status": "completed",
        "error": None,
        "counts": {"total": 20, "done": 20, "passed": 20, "failed": 0, "errored": 0},
        "pass_rate": 1.0,
        "gate": None,
        "links": _LINKS,
        **data,
    }
    return _example(event, whole)


def _example(event: str, data: dict[str, Any]) -> ConfigDict:
    return example({"type": event, "timestamp": "2026-12-02T05:49:25.880Z", "data": data})


_FAILED_COUNTS = {"total": 20, "done": 20, "passed": 13, "failed": 7, "errored": 0}
_REGRESSED = (
    "pass rate 100% → 65.0%, \u221235.0 points, 95% CI \u221255 to \u221215,"
    " McNemar p = 0.008 (Holm 0.008): regressed"
)
_FAILED_GATE = {
    "status": "failed",
    "reasons": ["pass rate 65.0% is below the floor of 90.0%", _REGRESSED],
    "baseline_run_id": _BASELINE,
    "verdict": "regressed",
}


class RunCompletedMessage(_Part):
    """A run completed: every case has its results."""

    model_config = _run_example("run.completed")

    type: Literal["run.completed"]
    timestamp: datetime = _TIMESTAMP
    data: RunCompletedData


class RunFailedMessage(_Part):
    """A run failed, or its budget stopped it (`status: stopped`): the results so far stand."""

    model_config = _run_example(
        "run.failed",
        status="stopped",
        error="budget reached: 0.6000 USD spent of 0.5000; 18 result(s) not run",
        counts={"total": 20, "done": 2, "passed": 2, "failed": 0, "errored": 0},
    )

    type: Literal["run.failed"]
    timestamp: datetime = _TIMESTAMP
    data: RunFailedData


class RunCancelledMessage(_Part):
    """A run was cancelled."""

    model_config = _run_example(
        "run.cancelled",
        status="cancelled",
        counts={"total": 20, "done": 5, "passed": 5, "failed": 0, "errored": 0},
    )

    type: Literal["run.cancelled"]
    timestamp: datetime = _TIMESTAMP
    data: RunCancelledData


class GateFailedMessage(_Part):
    """A run's gate failed (sent beside the run's own event, as a message of its own)."""

    model_config = _run_example(
        "gate.failed", counts=_FAILED_COUNTS, pass_rate=0.65, gate=_FAILED_GATE
    )

    type: Literal["gate.failed"]
    timestamp: datetime = _TIMESTAMP
    data: GateFailedData


class RegressionMessage(_Part):
    """A completed run regressed against the project's baseline run, compared as
    `GET /api/v1/runs/{run_id}/compare?baseline=project` does (with the run's gate's margin):
    a metric's pass rate or the overall one regressed."""

    model_config = _run_example(
        "regression",
        counts=_FAILED_COUNTS,
        pass_rate=0.65,
        gate=_FAILED_GATE,
        regression={
            "baseline_run_id": _BASELINE,
            "verdict": "regressed",
            "reason": _REGRESSED,
            "metrics": [
                {
                    "name": "mentions the refund policy",
                    "baseline": 1.0,
                    "candidate": 0.65,
                    "delta": -0.35,
                    "reason": f"mentions the refund policy {_REGRESSED}",
                }
            ],
        },
        links={**_LINKS, "compare": f"{_PATH}/compare?baseline={_BASELINE}"},
    )

    type: Literal["regression"]
    timestamp: datetime = _TIMESTAMP
    data: RegressionData


class WebhookTestMessage(_Part):
    """Sent on request only (`webhooks_test`), to whatever the webhook subscribes to."""

    model_config = _example(
        "webhook.test",
        {
            "webhook_id": "0192f0d5-4e5f-7a6b-8c7d-9e0f1a2b3c4d",
            "project_id": _PROJECT,
            "message": "A test delivery from Assay: the signature verifies with your secret.",
        },
    )

    type: Literal["webhook.test"]
    timestamp: datetime = _TIMESTAMP
    data: WebhookTestData


# Each message type, its schema and its summary in the API document.
WEBHOOK_MESSAGES: dict[str, tuple[type[_Part], str]] = {
    "run.completed": (RunCompletedMessage, "A run completed"),
    "run.failed": (RunFailedMessage, "A run failed or was stopped by its budget"),
    "run.cancelled": (RunCancelledMessage, "A run was cancelled"),
    "gate.failed": (GateFailedMessage, "A run's gate failed"),
    "regression": (RegressionMessage, "A run regressed against the project's baseline"),
    "webhook.test": (WebhookTestMessage, "A test message"),
}
