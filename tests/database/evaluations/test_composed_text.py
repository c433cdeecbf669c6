"""Text checks compare composed text (NFC): an accent typed as its own character or not is the
same text. Composing keeps to the check's bounds: runs of combining marks are cut (CPython
orders a run by insertion sort), a long text is composed a window at a time within the check's
budget, and an answer that needs composing counts as more to read."""

from __future__ import annotations

import random
import unicodedata
from typing import Any

import pytest

from database.evaluations import checks, text_forms
from database.evaluations.catalogue import score
from database.evaluations.scoring import MetricSpec, Observation
from database.evaluations.text_forms import GRAPHEME_JOINER, composed
from utils import check_budget
from utils.check_budget import OutOfTime, one_budget

NFC = unicodedata.normalize("NFC", "Café crème")
NFD = unicodedata.normalize("NFD", "Café crème")


def spec(metric_type: str, **parameters: Any) -> MetricSpec:
    return MetricSpec(name=metric_type, type=metric_type, parameters=parameters, threshold=1.0)


async def passed(metric: MetricSpec, observation: Observation) -> bool | None:
    verdict = await score(metric, observation, None)
    assert verdict.error is None, verdict.error
    return verdict.passed


def test_the_two_forms_differ_as_code_points() -> None:
    assert NFC != NFD and len(NFD) == len(NFC) + 2


@pytest.mark.parametrize("metric_type", ["equals", "contains", "icontains", "starts-with"])
@pytest.mark.parametrize(("answer", "reference"), [(NFC, NFD), (NFD, NFC)])
async def test_an_answer_in_one_form_meets_a_reference_in_the_other(
    metric_type: str, answer: str, reference: str
) -> None:
    said = (
        f"{answer} au lait" if metric_type in ("contains", "icontains", "starts-with") else answer
    )
    as_expected = Observation(output=said, input="q", expected=reference)
    assert await passed(spec(metric_type), as_expected)
    assert await passed(spec(metric_type, value=reference), Observation(output=said, input="q"))


@pytest.mark.parametrize("metric_type", ["equals", "contains", "starts-with"])
async def test_ignoring_case_composes_before_folding(metric_type: str) -> None:
    metric = spec(metric_type, value=NFD.upper(), case_sensitive=False)
    assert await passed(metric, Observation(output=NFC, input="q"))


@pytest.mark.parametrize("metric_type", ["contains-any", "contains-all"])
async def test_values_in_one_form_are_found_in_an_answer_in_the_other(metric_type: str) -> None:
    values = [unicodedata.normalize("NFD", "crème"), unicodedata.normalize("NFD", "Café")]
    assert await passed(spec(metric_type, values=values), Observation(output=NFC, input="q"))


async def test_a_letter_is_not_found_inside_an_accented_one() -> None:
    # Composed, "é" holds no "e", however it was typed.
    assert not await passed(spec("contains", value="Cafe"), Observation(output=NFD, input="q"))


def test_composing_a_window_at_a_time_is_composing_the_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pieces = ["a", "é", "e\u0301", "\u0301", "\u0316", "\u1100", "\u1161", "\u11a8", "한"]
    pieces += ["中", "\u0f73", "\u212b", "A\u030a", "\u0344", "か\u3099", "\u0b47\u0b3e", " "]
    chance = random.Random(11)
    for window in (1, 2, 7):
        monkeypatch.setattr(text_forms, "WINDOW", window)
        for _ in range(2000):
            text = "".join(chance.choice(pieces) for _ in range(chance.randint(1, 20)))
            assert composed(text) == unicodedata.normalize("NFC", text), ascii(text)


def test_runs_of_marks_and_long_texts_are_composed_in_bounded_pieces(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Alternating marks out of their canonical order: composed whole, 200,000 of them would
    # hold the interpreter some 90 s (the time grows as the square of the run).
    normalised: list[tuple[str, str]] = []
    real = unicodedata.normalize

    def recorded(form: Any, text: str) -> str:
        normalised.append((text, real(form, text)))
        return normalised[-1][1]

    monkeypatch.setattr(text_forms.unicodedata, "normalize", recorded)
    answer = "x" + "\u0301\u0316" * 100_000
    result = composed(answer)
    given = [text for text, _ in normalised]
    assert len(given) > 1 and max(map(len, given)) <= text_forms.WINDOW * 1.1
    runs = [run for _, out in normalised for run in out.split(GRAPHEME_JOINER)]
    assert max(map(len, runs)) <= text_forms.MAX_RUN + 1  # a run's marks, and their letter
    in_order = all(run == "".join(sorted(run, key=unicodedata.combining)) for run in runs)
    nothing_lost = sorted(result.replace(GRAPHEME_JOINER, "")) == sorted(answer)
    assert (in_order, nothing_lost) == (True, True)


def test_composing_consults_the_checks_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(check_budget, "CHECK_SECONDS", 0.0)
    with one_budget(), pytest.raises(OutOfTime):
        composed(NFD)
    with one_budget():
        assert composed("plain ASCII") == "plain ASCII"  # nothing to compose, nothing read


@pytest.mark.parametrize("metric_type", ["contains", "equals"])
def test_an_answer_to_compose_counts_as_more_to_read(metric_type: str) -> None:
    metric = spec(metric_type, value="x")
    assert checks.reads_much(metric, Observation(output="é" * 100_000, input="q"))
    assert not checks.reads_much(metric, Observation(output="e" * 100_000, input="q"))
    many = spec("contains-all", values=["é" * 10_000] * 10)
    assert checks.reads_much(many, Observation(output="e", input="q"))
