"""A run's gate: checked when the run is created (its baseline resolved and finished, the
metrics it names the run's own), decided when the run ends, in the transaction that ends it.

`passed`, `failed` (a regression where `fail_on` asks, or a floor missed) or `undecided` (the
run did not complete, no result rated or too many errored, or a comparison the gate needs
inconclusive or not to be made). A gate with `fail_on: never` and no `max_dropped` needs no
comparison: a baseline it cannot be compared with is a note there, not a doubt.
A run that did not complete is undecided whatever else; otherwise a floor missed or a
regression fails the gate whatever else is in doubt.

An errored result has no verdict, and pass rates leave it out: a gate does not let errors
hide what they may. The floor is in doubt when it is met only by leaving them out, and a
comparison when the run errs more than its baseline by more than `min_effect`."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from database.projects.models import Project
from database.results import crud, events, run_webhooks
from database.results.comparison import CompareOptions, compare
from database.results.comparison_schemas import Comparison
from database.results.crud import figures
from database.results.models import CHUNK_JOB, TERMINAL, Run
from database.results.schemas import GateResult, GateSpec
from tasks import queue
from utils.errors import Conflict, InvalidInput

log = structlog.get_logger(__name__)

# A rate computed as a mean of shares (thirds, say) may fall a rounding error short of a
# floor it equals.
_ROUNDING = 1e-9


async def completed_baseline(
    session: AsyncSession, project_id: uuid.UUID, baseline_id: uuid.UUID, *, field: str
) -> Run:
    """A completed run of the project, named in a request's `field` (422 when there is none,
    409 while it is not completed: a part of a run is no baseline)."""
    # Held until the request commits: a repeat reopening it meanwhile (it locks the run)
    # waits, and then sees it taken as a baseline.
    baseline = await crud.get_run(session, baseline_id, for_share=True)
    if baseline is None or baseline.project_id != project_id:
        raise InvalidInput("no such run in this project", field=field)
    if baseline.status != "completed":
        raise Conflict(f"The baseline run has not completed: it is {baseline.status}")
    return baseline


async def prepare(
    session: AsyncSession, project: Project, spec: GateSpec, metrics: list[dict[str, Any]]
) -> dict[str, Any]:
    """The gate as the run stores it, its baseline resolved now: a later change of the
    project's baseline does not move a gate already set."""
    names = {metric["name"] for metric in metrics}
    named = spec.fail_on if isinstance(spec.fail_on, list) else []
    if len(set(named)) != len(named):
        raise InvalidInput("lists a metric more than once", field="gate.fail_on")
    for field, listed in (
        ("fail_on", named),
        ("min_metric_pass_rates", spec.min_metric_pass_rates),
    ):
        unknown = sorted(set(listed) - names)
        if unknown:
            raise InvalidInput(
                f"not metrics of this run: {', '.join(unknown)}", field=f"gate.{field}"
            )
    baseline_id: uuid.UUID | None = None
    if spec.baseline == "project":
        baseline_id = project.baseline_run_id
    elif spec.baseline is not None:
        baseline_id = spec.baseline
    if baseline_id is not None:
        await completed_baseline(session, project.id, baseline_id, field="gate.baseline")
    return {
        **spec.model_dump(mode="json"),
        "baseline_run_id": str(baseline_id) if baseline_id else None,
    }


async def end_run(
    session: AsyncSession,
    run: Run,
    status: str,
    *,
    error: str | None = None,
    before: Sequence[events.Event] = (),
    spent: float = 0.0,
) -> bool:
    """Ends a run that has not ended yet: its status, the end event and, with a gate, the
    gate's result and a `run.verdict` event right after; then the messages to the project's
    webhooks. False when it had already ended. `before` and `spent`: a batch's events and cost,
    written with the end, since a transaction updates the run's row once (crud.update_run)."""
    # Decided under the lock, written once, on the run as it stands: a chunk that loaded it
    # before a repeat raised its total and repetitions may be the one ending it.
    current = await crud.get_run(session, run.id, for_update=True)
    if current is None or current.status in TERMINAL:
        return False
    run = current
    changes = [*before, await events.ended(session, run, status, error=error)]
    gate_result = None
    if run.gate is not None:
        try:
            async with session.begin_nested():  # a failed decision leaves the end intact
                result = await decide(session, run, status, error)
        except Exception as exc:  # a gate must never keep a run from ending
            log.exception("gate not decided", run_id=str(run.id))
            result = GateResult(
                status="undecided",
                reasons=[f"the gate could not be decided ({type(exc).__name__})"],
                baseline_run_id=None,
                comparison=None,
            )
        gate_result = result.model_dump(mode="json")
        changes.append(events.verdict(gate_result))
    await events.record(
        session, run, changes, spent=spent, status=status, error=error, gate_result=gate_result
    )
    await run_webhooks.announce_end(session, run, status, error=error, gate_result=gate_result)
    if status != "completed":  # its chunks not yet begun are called off, not left to a worker
        await queue.withdraw(session, kind=CHUNK_JOB, key="run_id", values=[str(run.id)])
    return True


async def decide(
    session: AsyncSession, run: Run, status: str, error: str | None = None
) -> GateResult:
    gate = run.gate or {}
    baseline_id = gate.get("baseline_run_id")
    failed: list[str] = []
    doubts: list[str] = []
    if status != "completed":  # a part of a run says nothing final about the whole
        return GateResult(
            status="undecided",
            reasons=[f"the run did not complete: it {status}" + (f" ({error})" if error else "")],
            baseline_run_id=uuid.UUID(baseline_id) if baseline_id else None,
            comparison=None,
        )
    rate, errored, results = await figures.pass_rate(session, run)
    if rate is None:  # nothing passed or failed: no floor, baseline or margin can speak for it
        doubts.append(f"no result was rated ({errored} of {results} errored)")
    if results and errored / results > gate.get("max_error_rate", 0.1):
        doubts.append(
            f"{errored} of {results} results errored, above the allowed share of "
            f"{gate.get('max_error_rate', 0.1):.0%}"
        )
    floor = gate.get("min_pass_rate")
    if floor is not None:
        await _overall_floor(session, run, floor, (rate, errored), failed, doubts)
    if gate.get("min_metric_pass_rates"):
        await _metric_floors(session, run, gate["min_metric_pass_rates"], errored, failed, doubts)
    comparison = None
    notes: list[str] = []
    wants_comparison = gate.get("fail_on", "regression") != "never"
    if baseline_id is not None:
        found = await _comparison(session, run, uuid.UUID(baseline_id), gate)
        if isinstance(found, str):
            # Only what the gate asks of the comparison (a regression, or max_dropped's count
            # of tests missing, which every baseline's test may be) is in doubt without it.
            needed = wants_comparison or gate.get("max_dropped") is not None
            (doubts if needed else notes).append(found)
        else:
            comparison = _judged(found, gate, failed, doubts)
            doubts.extend(await _not_compared(session, run, found, gate))
            if wants_comparison:
                await _errors_beside_baseline(
                    session, (errored, results), uuid.UUID(baseline_id), gate, doubts
                )
    elif gate.get("baseline") == "project":
        # Nothing to compare with (a project's first gated run): the floors decide, and with
        # none the regression the gate asks about cannot be ruled out.
        note = "the project had no baseline run when this run was created: nothing compared"
        has_floors = floor is not None or bool(gate.get("min_metric_pass_rates"))
        (doubts if wants_comparison and not has_floors else notes).append(note)
    elif wants_comparison:
        notes.append("no baseline named: no regression looked for, only the floors and errors")
    status = "failed" if failed else "undecided" if doubts else "passed"
    return GateResult(
        status=status,
        reasons=failed + doubts + notes,
        baseline_run_id=uuid.UUID(baseline_id) if baseline_id else None,
        comparison=comparison,
    )


async def _overall_floor(
    session: AsyncSession,
    run: Run,
    floor: float,
    rated: tuple[float | None, int],
    failed: list[str],
    doubts: list[str],
) -> None:
    """The pass rate against its floor: failed below it, in doubt when only the errored
    results (counted as failures) would take it below."""
    rate, errored = rated
    if rate is None:  # a doubt of the whole gate (decide)
        return
    if rate < floor - _ROUNDING:
        failed.append(f"pass rate {rate:.1%} is below the floor of {floor:.1%}")
    elif (
        errored
        and (least := await figures.pass_rate_if_errors_failed(session, run)) is not None
        and least < floor - _ROUNDING
    ):
        doubts.append(
            f"pass rate {rate:.1%} meets the floor of {floor:.1%} only without its"
            f" {errored} errored results: counted as failures, they make it {least:.1%}"
        )


async def _metric_floors(
    session: AsyncSession,
    run: Run,
    floors: dict[str, float],
    errored: int,
    failed: list[str],
    doubts: list[str],
) -> None:
    """Each metric's pass rate against its floor, as the overall one is; what it could not
    score is its own errored evaluations and its cases' errored results (a case it does not
    apply to, with no evaluation, is no error)."""
    found = {m.name: m for m in await figures.metrics(session, run)}
    for name, minimum in floors.items():
        metric = found.get(name)
        rate = metric.pass_rate if metric is not None else None
        if metric is None or rate is None:
            doubts.append(f"{name}: no evaluation to hold against its floor")
        elif rate < minimum - _ROUNDING:
            failed.append(f"{name} pass rate {rate:.1%} is below its floor of {minimum:.1%}")
        elif metric.errored + errored:
            least, errors = await figures.metric_pass_rate_if_errors_failed(session, run, name)
            if errors and least is not None and least < minimum - _ROUNDING:
                doubts.append(
                    f"{name} pass rate {rate:.1%} meets its floor of {minimum:.1%} only without"
                    f" the {errors} errors it could not score: counted as failures, they make"
                    f" it {least:.1%}"
                )


async def _errors_beside_baseline(
    session: AsyncSession,
    errors: tuple[int, int],
    baseline_id: uuid.UUID,
    gate: dict[str, Any],
    doubts: list[str],
) -> None:
    """A doubt when the run's share of errored results is above its baseline's by more than
    `min_effect`: the cases they stand for might have regressed unseen."""
    baseline = await crud.get_run(session, baseline_id)
    errored, results = errors
    if baseline is None or not results:
        return
    _, baseline_errored, baseline_results = await figures.pass_rate(session, baseline)
    share = errored / results
    baseline_share = baseline_errored / baseline_results if baseline_results else 0.0
    min_effect = gate.get("min_effect", 0.02)
    if share - baseline_share > min_effect + _ROUNDING:
        doubts.append(
            f"{errored} of {results} results errored ({share:.1%}), against"
            f" {baseline_share:.1%} of the baseline's: more than {min_effect * 100:g} points"
            " above, and what they would have shown is unknown"
        )


async def _comparison(
    session: AsyncSession, run: Run, baseline_id: uuid.UUID, gate: dict[str, Any]
) -> Comparison | str:
    """The run compared with its baseline as the gate compares, or why it cannot be."""
    baseline = await crud.get_run(session, baseline_id)
    if baseline is None:
        return "the baseline run no longer exists"
    if baseline.status != "completed":
        return f"the baseline run is {baseline.status}, not completed"
    try:
        return await compare(
            session, run, baseline, CompareOptions(min_effect=gate.get("min_effect", 0.02))
        )
    except InvalidInput as exc:
        return f"no comparison with the baseline: {exc.detail}"


async def _not_compared(
    session: AsyncSession, run: Run, found: Comparison, gate: dict[str, Any]
) -> list[str]:
    """A doubt for each metric `fail_on` lists that the comparison lacks, naming the run
    without evaluations of it (a comparison has the metrics both runs evaluated)."""
    fail_on = gate.get("fail_on")
    if not isinstance(fail_on, list):
        return []
    compared = {metric.name for metric in found.metrics}
    missing = [name for name in fail_on if name not in compared]
    if not missing:
        return []
    evaluated = {metric.name for metric in await figures.metrics(session, run)}
    return [
        f"{name}: not compared (the baseline has no such metric)"
        if name in evaluated
        else f"{name}: not compared (this run has no evaluation of it)"
        for name in missing
    ]


def _judged(
    found: Comparison, gate: dict[str, Any], failed: list[str], doubts: list[str]
) -> dict[str, Any]:
    """What the gate asks of the comparison (`fail_on`, `max_dropped`), into `failed` and
    `doubts`; the comparison as the gate's result keeps it."""
    dropped, allowed = found.cases.only_in_baseline, gate.get("max_dropped")
    if allowed is not None and dropped > allowed:
        failed.append(
            f"{dropped} of the baseline's tests are not in this run, more than the {allowed}"
            " allowed (max_dropped)"
        )
    fail_on = gate.get("fail_on", "regression")
    required = [found.overall] if fail_on == "regression" else []
    for metric in found.metrics:
        if fail_on == "regression" or (isinstance(fail_on, list) and metric.name in fail_on):
            required.append(metric.pass_rate)
    for tested in required:
        if tested.verdict == "regressed":
            failed.append(tested.reason)
        elif tested.verdict == "inconclusive" and not tested.not_worse:
            doubts.append(tested.reason)
    return {
        "verdict": found.verdict,
        "overall": {"verdict": found.overall.verdict, "reason": found.overall.reason},
        "metrics": {
            m.name: {"verdict": m.pass_rate.verdict, "reason": m.pass_rate.reason}
            for m in found.metrics
        },
    }
