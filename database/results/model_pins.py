"""A run's models as they were when it was made: a digest of what decides each one's answers
(its target, judges and simulated users' player), so that a run never mixes two models under
one configuration's name. The test set's version and the prompt's are pinned by id; a model
configuration is edited in place, so its digest is kept instead.

What a digest covers: the provider, model, address, parameters, tools, and an HTTP target's
request and reply shape (its headers by name). Not its name, key, header values, timeout,
rate or prices, nor whether a provider's answer is streamed: a key rotated, a timeout raised
or streaming turned on to watch a run changes no answer. A run that calls no target (a
rescore, or recorded outputs) is held to its judges alone."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from database.models import crud as model_crud
from database.models.models import ModelConfig
from database.results.models import Run


def behaviour_digest(config: ModelConfig) -> str:
    http = config.provider == "http"
    shape = {
        "provider": config.provider,
        "model": config.model,
        "base_url": config.base_url,
        "parameters": config.parameters or {},
        "tools": config.tools or [],
        "http_method": config.http_method,
        "http_header_names": sorted(config.http_header_names or []),
        "body_template": config.body_template,
        "response_path": config.response_path,
        "tool_calls_path": config.tool_calls_path,
        # An HTTP target's streamed answer is another endpoint's, read at another path.
        "stream": config.stream if http else None,
        "stream_path": config.stream_path if http else None,
    }
    text = json.dumps(shape, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def model_ids(run: Run) -> list[uuid.UUID]:
    """The models a run asks: its target and its simulated users' player (unless its outputs
    are another run's or recorded ones), and its metrics' judges."""
    judges = [spec.get("judge_model_id") for spec in run.metrics or []]
    calls_target = run.outputs_from_run_id is None and run.recorded_field is None
    asked = [run.target_model_id, run.simulator_model_id] if calls_target else []
    named = [*asked, *judges]
    found = [uuid.UUID(str(model_id)) for model_id in named if model_id]
    return list(dict.fromkeys(found))


async def pin(session: AsyncSession, run: Run) -> None:
    """Records the digests of the run's models as they are now."""
    digests: dict[str, str] = {}
    for model_id in model_ids(run):
        row = await model_crud.get_model(session, model_id)
        if row is not None:
            digests[str(model_id)] = behaviour_digest(row)
    run.model_digests = digests


def changed(run: Run, rows: Iterable[ModelConfig]) -> str | None:
    """Why the run cannot go on with these models (one changed since it was made), or None.
    A run made before digests were kept is not held to them."""
    pinned: dict[str, Any] = run.model_digests or {}
    for row in rows:
        digest = pinned.get(str(row.id))
        if digest is not None and digest != behaviour_digest(row):
            return (
                f"the model configuration {row.name!r} was changed since the run was made: its"
                " results would mix two models; start a new run"
            )
    return None


async def changed_now(session: AsyncSession, run: Run) -> str | None:
    """`changed`, for the run's models as stored now."""
    rows = [await model_crud.get_model(session, model_id) for model_id in model_ids(run)]
    return changed(run, [row for row in rows if row is not None])


def changed_judges(baseline: Run, candidate: Run) -> dict[str, str]:
    """The metrics of both runs that another judge scored in the candidate, each with how it
    changed: another model, or the same one configured otherwise (where both runs kept its
    digest). A run that froze no judge for a metric is not held to one."""
    judges = [_judges(run) for run in (baseline, candidate)]
    changes: dict[str, str] = {}
    for name in judges[0].keys() & judges[1].keys():
        before, after = judges[0][name], judges[1][name]
        if before != after:
            changes[name] = f"judge model {before} → {after}"
            continue
        digests = [(run.model_digests or {}).get(before) for run in (baseline, candidate)]
        if None not in digests and digests[0] != digests[1]:
            changes[name] = f"judge model {before} configured otherwise"
    return changes


def _judges(run: Run) -> dict[str, str]:
    return {
        spec["name"]: str(spec["judge_model_id"])
        for spec in run.metrics or []
        if spec.get("judge_model_id")
    }
