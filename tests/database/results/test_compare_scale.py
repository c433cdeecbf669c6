"""GET /runs/{id}/compare over a few thousand cases, checked against a reference computed here,
independently, from the rows as written: per-case shares over repetitions (errored ones left
out), cases missing on either side, ties, a binary and a graded metric, slices, and the paired
bootstrap drawn again with numpy from the seed the response names."""

from __future__ import annotations

import math
import random
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pytest
from scipy import stats
from sqlalchemy import text

from database.core import Database, Tenant
from tests.helpers import Account, create_run_body, register
from tests.utils.test_statistics_sign_flip import ExactLaw, monte_carlo_error

CASES = 3000
REPETITIONS = 3
BEHAVIORS = ("answer", "refuse", "summarise")

_RESULTS = text("""
INSERT INTO results (id, organization_id, run_id, position, repetition, test_id, input, output,
                     status, latency_ms, input_tokens, output_tokens, cost, cached)
SELECT id, :organization, :run, position, repetition, test_id, '{}'::jsonb, 'answer', status,
       latency, 10, tokens, cost, false
FROM unnest(CAST(:ids AS UUID[]), CAST(:positions AS INT[]), CAST(:repetitions AS INT[]),
            CAST(:test_ids AS UUID[]), CAST(:statuses AS TEXT[]), CAST(:latencies AS FLOAT8[]),
            CAST(:tokens AS INT[]), CAST(:costs AS FLOAT8[]))
    AS r(id, position, repetition, test_id, status, latency, tokens, cost)
""")
_EVALUATIONS = text("""
INSERT INTO evaluations (id, organization_id, result_id, run_id, position, metric_name,
                         metric_type, score, passed, error)
SELECT gen_random_uuid(), :organization, result_id, :run, r.position, name, kind, score,
       passed, error
FROM unnest(CAST(:result_ids AS UUID[]), CAST(:names AS TEXT[]), CAST(:kinds AS TEXT[]),
            CAST(:scores AS FLOAT8[]), CAST(:passes AS BOOLEAN[]), CAST(:errors AS TEXT[]))
    AS e(result_id, name, kind, score, passed, error)
JOIN results r ON r.id = e.result_id
""")
_FINISH = text("UPDATE runs SET status = 'completed', finished_at = now() WHERE id = :run")


@dataclass
class Case:
    """One run's repetitions of one case, as written."""

    statuses: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    costs: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    relevance_scores: list[float] = field(default_factory=list)  # NaN: the judge failed

    def share(self) -> float:
        """The share of passing repetitions among the scored ones (NaN: none scored)."""
        scored = [s for s in self.statuses if s != "errored"]
        return sum(s == "passed" for s in scored) / len(scored) if scored else math.nan

    def mean(self, values: list[float]) -> float:
        kept = [v for v, s in zip(values, self.statuses, strict=True) if s != "errored"]
        return sum(kept) / len(kept) if kept else math.nan

    def relevance(self) -> float:
        scores = [s for s in self.relevance_scores if not math.isnan(s)]
        return sum(scores) / len(scores) if scores else math.nan


def _side(rng: random.Random, pass_share: float, missing: int) -> dict[int, Case]:
    """Per position, the repetitions of one run; every `missing`-th case has none."""
    cases = {}
    for position in range(CASES):
        if position % missing == missing // 2:
            continue
        case = Case()
        everything_errored = position % 97 == 5
        for _ in range(REPETITIONS):
            roll = rng.random()
            if everything_errored or roll < 0.05:
                status = "errored"
            else:
                status = "passed" if roll < pass_share - (position % 3) * 0.05 else "failed"
            case.statuses.append(status)
            case.latencies.append(float(rng.randint(40, 400)))  # ties in the quantiles
            case.costs.append(rng.choice((0.001, 0.002)))
            case.tokens.append(rng.randint(20, 40))
        cases[position] = case
    return cases


async def _run(client: httpx.AsyncClient, owner: Account, body: dict[str, Any]) -> str:
    created = await client.post(
        "/api/v1/runs", json={**body, "repetitions": REPETITIONS}, headers=owner.headers
    )
    assert created.status_code == 202, created.text
    return str(created.json()["id"])


async def _write(
    database: Database,
    owner: Account,
    run: str,
    test_ids: list[str],
    cases: dict[int, Case],
    rng: random.Random,
) -> None:
    rows: dict[str, list[Any]] = {
        key: []
        for key in (
            "ids",
            "positions",
            "repetitions",
            "test_ids",
            "statuses",
            "latencies",
            "tokens",
            "costs",
        )
    }
    evaluations: dict[str, list[Any]] = {
        key: [] for key in ("result_ids", "names", "kinds", "scores", "passes", "errors")
    }

    def evaluate(result: uuid.UUID, name: str, kind: str, score: float, error: str | None):
        for key, value in zip(
            evaluations, (result, name, kind, score, score >= 0.5, error), strict=True
        ):
            evaluations[key].append(value)

    for position, case in cases.items():
        for repetition, status in enumerate(case.statuses):
            result = uuid.uuid4()
            values = (
                result,
                position,
                repetition,
                uuid.UUID(test_ids[position]),
                status,
                case.latencies[repetition],
                case.tokens[repetition],
                case.costs[repetition],
            )
            for key, value in zip(rows, values, strict=True):
                rows[key].append(value)
            if status == "errored":
                continue
            evaluate(result, "contains", "contains", float(status == "passed"), None)
            if rng.random() < 0.1:  # the judge failed: not a score
                evaluate(result, "relevance", "answer-relevance", 0.0, "judge timed out")
                case.relevance_scores.append(math.nan)
            else:
                # Eighths: many ties and zero differences, and sums exact in any order, so
                # that the database's means and these are the same floats.
                score = rng.randint(0, 8) / 8
                evaluate(result, "relevance", "answer-relevance", score, None)
                case.relevance_scores.append(score)
    async with database.transaction(Tenant(owner.organization_id)) as session:
        params = {"organization": owner.organization_id, "run": uuid.UUID(run)}
        await session.execute(_RESULTS, {**params, **rows})
        await session.execute(_EVALUATIONS, {**params, **evaluations})
        await session.execute(_FINISH, {"run": uuid.UUID(run)})


def _interval(deltas: np.ndarray, seed: int) -> tuple[float, float]:
    """The 95% BCa interval of the mean delta over 2,000 resamples of the cases (Efron and
    Tibshirani, 14.3: the bias from the resamples below the mean, the acceleration from the
    jackknife's leave-one-out means; tests/utils/test_statistics.py checks the service's
    against scipy's)."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(deltas), size=(2000, len(deltas)))
    means = deltas[draws].mean(axis=1)
    mean = deltas.mean()
    normal = stats.norm
    tied = np.abs(means - mean) <= 1e-12  # (equal but for rounding)
    z0 = normal.ppf((((means < mean) & ~tied).sum() + 0.5 * tied.sum()) / len(means))
    left_out = (deltas.sum() - deltas) / (len(deltas) - 1)
    spread = left_out.mean() - left_out
    a = (spread**3).sum() / (6 * ((spread**2).sum()) ** 1.5)
    levels = [normal.cdf(z0 + (z0 + z) / (1 - a * (z0 + z))) for z in normal.ppf([0.025, 0.975])]
    low, high = np.quantile(means, levels)
    return float(low), float(high)


def _check(found: dict[str, Any], base: list[float], cand: list[float], seed: int) -> np.ndarray:
    """A paired figure against the reference: means, delta, interval."""
    a, b = np.array(base), np.array(cand)
    assert found["cases"] == len(a)
    assert found["baseline"] == pytest.approx(a.mean(), abs=1e-6)
    assert found["candidate"] == pytest.approx(b.mean(), abs=1e-6)
    assert found["delta"] == pytest.approx(b.mean() - a.mean(), abs=1e-6)
    assert tuple(found["ci"]) == pytest.approx(_interval(b - a, seed), abs=2e-6)
    return b - a


def _inverted_cdf(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(math.ceil(len(ordered) * q) - 1, 0)]


async def test_a_large_comparison_matches_a_reference_computed_from_the_rows(client, database):
    owner = await register(client)
    tests = [
        {
            "input": f"question {i}",
            "behavior": BEHAVIORS[i % 3],
            "category": f"c{i % 4}",
            "topic": "all",
        }
        for i in range(CASES)
    ]
    test_ids, run_body = await create_run_body(client, owner, tests)
    rng = random.Random(17)
    sides = {"baseline": _side(rng, 0.85, missing=50), "candidate": _side(rng, 0.8, missing=70)}
    runs = {}
    for name, cases in sides.items():
        runs[name] = await _run(client, owner, run_body)
        await _write(database, owner, runs[name], test_ids, cases, rng)

    response = await client.get(
        f"/api/v1/runs/{runs['candidate']}/compare",
        params={"baseline": runs["baseline"], "flips_limit": 5},
        headers=owner.headers,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    seed = body["method"]["seed"]
    base, cand = sides["baseline"], sides["candidate"]

    # Which cases pair: both runs have them, and each has a scored repetition on both sides.
    both = sorted(set(base) & set(cand))
    rated = [p for p in both if not math.isnan(base[p].share() + cand[p].share())]
    counts = body["cases"]
    assert counts["paired"] == len(rated) and counts["unrated"] == len(both) - len(rated) > 0
    assert counts["only_in_run"] == len(set(cand) - set(base)) > 0
    assert counts["only_in_baseline"] == len(set(base) - set(cand)) > 0
    assert counts["only_in_run_test_ids"] == [test_ids[p] for p in sorted(set(cand) - set(base))]
    assert counts["changed"] == 0

    shares = ([base[p].share() for p in rated], [cand[p].share() for p in rated])
    deltas = _check(body["overall"], *shares, seed)
    # Shares of up to three repetitions are not pass/fail: the sign-flip test of the mean
    # change, against the exact law of its statistic (the differences are multiples of 1/6).
    assert body["overall"]["test"] == "sign-flip"
    exact = ExactLaw(deltas, 1 / 6).p(deltas)
    assert body["overall"]["p_value"] == pytest.approx(exact, abs=4 * monte_carlo_error(exact))

    metrics = {m["name"]: m for m in body["metrics"]}
    assert metrics["contains"]["score"] is None  # binary: its pass rate only
    _check(metrics["contains"]["pass_rate"], *shares, seed)
    graded = [p for p in rated if not math.isnan(base[p].relevance() + cand[p].relevance())]
    score = metrics["relevance"]["score"]
    score_deltas = _check(
        score, [base[p].relevance() for p in graded], [cand[p].relevance() for p in graded], seed
    )
    assert score["test"] == "wilcoxon-signed-rank"
    wilcoxon = stats.wilcoxon(score_deltas, zero_method="wilcox").pvalue
    assert score["p_value"] == pytest.approx(wilcoxon, rel=1e-9)

    # Slices: per behavior and category (one topic for all says nothing), the largest first.
    slices = {(s["field"], s["value"]): s["pass_rate"] for s in body["slices"]}
    assert set(slices) == {("behavior", b) for b in BEHAVIORS} | {
        ("category", f"c{i}") for i in range(4)
    }
    refuse = [i for i, p in enumerate(rated) if p % 3 == 1]
    refuse_deltas = _check(
        slices[("behavior", "refuse")],
        [shares[0][i] for i in refuse],
        [shares[1][i] for i in refuse],
        seed,
    )
    exact = ExactLaw(refuse_deltas, 1 / 6).p(refuse_deltas)
    assert slices[("behavior", "refuse")]["p_value"] == pytest.approx(
        exact, abs=4 * monte_carlo_error(exact)
    )

    # Cost and latency, per case the mean over scored repetitions.
    costs = [(base[p].mean(base[p].costs), cand[p].mean(cand[p].costs)) for p in both]
    costs = [pair for pair in costs if not math.isnan(sum(pair))]
    assert body["cost"]["delta"] == pytest.approx(
        np.mean([c for _, c in costs]) - np.mean([b for b, _ in costs]), abs=1e-6
    )
    latencies = [(base[p].mean(base[p].latencies), cand[p].mean(cand[p].latencies)) for p in both]
    latencies = [pair for pair in latencies if not math.isnan(sum(pair))]
    for key, q in (("latency_p50_ms", 0.5), ("latency_p95_ms", 0.95)):
        assert body[key]["baseline"] == pytest.approx(
            _inverted_cdf([b for b, _ in latencies], q), abs=0.01
        )
        assert body[key]["candidate"] == pytest.approx(
            _inverted_cdf([c for _, c in latencies], q), abs=0.01
        )

    # Flips: a case passes when at least half its scored repetitions do.
    flipped = [p for p, a, b in zip(rated, *shares, strict=True) if (a >= 0.5) != (b >= 0.5)]
    flips = body["flips"]
    assert flips["pass_to_fail"] + flips["fail_to_pass"] == len(flipped)
    assert [item["test_id"] for item in flips["items"]] == [test_ids[p] for p in flipped[:5]]
    assert all(item["baseline"] and item["candidate"] for item in flips["items"])

    again = await client.get(
        f"/api/v1/runs/{runs['candidate']}/compare",
        params={"baseline": runs["baseline"], "flips_limit": 5},
        headers=owner.headers,
    )
    assert again.json() == body
