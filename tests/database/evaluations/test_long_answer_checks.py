"""Checks of long answers, without a database: a word count of a long answer is scored in the
check thread and counts without a list of every word; a similarity check is scored there when
its edit distances compare many cells, over one answer or every turn."""

from __future__ import annotations

import random
import threading
import tracemalloc
from typing import Any

import pytest

from database.evaluations import checks, long_answers
from database.evaluations.catalogue import CATALOGUE, score, validate_parameters
from database.evaluations.scoring import MetricSpec, Observation

CHECK_THREAD = "assay-check"


def spec(metric_type: str, **parameters: Any) -> MetricSpec:
    checked = validate_parameters(metric_type, parameters)
    return MetricSpec(name=metric_type, type=metric_type, parameters=checked, threshold=0.8)


@pytest.fixture
def threads_counting(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The thread each word count ran in."""
    seen: list[str] = []
    real = long_answers.count_words

    def counting(text: str) -> int:
        seen.append(threading.current_thread().name)
        return real(text)

    monkeypatch.setattr(long_answers, "count_words", counting)
    return seen


@pytest.fixture
def threads_comparing(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The thread each edit distance ran in."""
    seen: list[str] = []
    real = checks.fuzz

    class Recording:
        @staticmethod
        def ratio(a: str, b: str) -> float:
            seen.append(threading.current_thread().name)
            return real.ratio(a, b)

    monkeypatch.setattr(checks, "fuzz", Recording)
    return seen


# --- word-count -------------------------------------------------------------------------------


async def test_a_long_answers_words_are_counted_in_the_check_thread(
    threads_counting: list[str],
) -> None:
    long_answer = Observation(output="ab " * 400_000, input="q")  # 1.2 M characters
    verdict = await score(spec("word-count", max=100), long_answer, None)
    assert (verdict.score, verdict.reason) == (0.0, "400000 words, more than 100")
    verdict = await score(spec("word-count", max=100), Observation(output="a b", input="q"), None)
    assert (verdict.score, verdict.reason) == (1.0, "2 words")
    assert [name.startswith(CHECK_THREAD) for name in threads_counting] == [True, False]


@pytest.mark.parametrize(
    ("bounds", "reason"),
    [({"min": 3}, "2 words, fewer than 3"), ({"min": 3, "max": 5}, "2 words, fewer than 3")],
)
async def test_a_word_count_says_which_bound_it_missed(bounds, reason) -> None:
    """Only the bound missed, never a bound not set (it read `outside [None, 12]`)."""
    verdict = await score(spec("word-count", **bounds), Observation(output="a b", input="q"), None)
    assert (verdict.score, verdict.reason) == (0.0, reason)


def test_a_word_count_reads_the_answers_its_scope_names() -> None:
    turns = [{"turn": i, "user": "u", "text": "a b"} for i in range(1, 5)]
    observation = Observation(output="ab " * 400_000, input="q", turns=turns)
    declared = CATALOGUE["word-count"]
    assert declared.in_thread(spec("word-count", max=5), observation)  # the last answer
    assert not declared.in_thread(spec("word-count", max=5, scope="each"), observation)


def test_words_are_counted_as_split_counts_them_across_windows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(long_answers, "WORD_WINDOW", 3)  # words across every boundary
    chance = random.Random(11)
    alphabet = ["a", "é", "語", " ", "\n", "\t", "\u00a0", "\u2028", "\u3000", "\x1f"]
    for _ in range(3000):
        text = "".join(chance.choice(alphabet) for _ in range(chance.randint(0, 30)))
        assert long_answers.count_words(text) == len(text.split()), repr(text)


def test_counting_words_holds_no_list_of_them() -> None:
    answer = "ab " * 2_000_000  # 2 M words: a list of them takes well over 100 MB
    tracemalloc.start()
    try:
        assert long_answers.count_words(answer) == 2_000_000
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024


# --- similarity -------------------------------------------------------------------------------


def _cjk(chance: random.Random, n: int) -> str:
    return "".join(chr(chance.randint(0x4E00, 0x9FFF)) for _ in range(n))


def test_turns_compared_with_a_long_reference_are_scored_in_the_thread() -> None:
    # Five turns of some 10,000 characters against a reference of 10,000: under the turns'
    # characters read (100,000), but 5e8 cells of edit distance.
    chance = random.Random(3)
    turns: list[dict[str, Any]] = [
        {"turn": i, "user": "u", "text": _cjk(chance, 9_999)} for i in range(1, 6)
    ]
    observation = Observation(output=turns[-1]["text"], input="q", turns=turns)
    metric = spec("similarity", value=_cjk(chance, 10_000), scope="each")
    assert CATALOGUE["similarity"].in_thread(metric, observation)


@pytest.mark.parametrize(
    ("answer", "reference", "heavy"),
    [(1_000, 1_000, False), (3_000, 3_000, False), (5_000, 5_000, True), (100_000, 200, True)],
)
def test_one_answer_is_compared_in_the_thread_by_the_cells_it_costs(
    answer: int, reference: int, heavy: bool
) -> None:
    metric = spec("similarity", value="r" * reference)
    given = Observation(output="a" * answer, input="q")
    assert CATALOGUE["similarity"].in_thread(metric, given) is heavy
    expected = Observation(output="a" * answer, input="q", expected="r" * reference)
    assert CATALOGUE["similarity"].in_thread(spec("similarity"), expected) is heavy


async def test_a_costly_similarity_runs_in_the_check_thread_and_scores_the_same(
    threads_comparing: list[str],
) -> None:
    chance = random.Random(5)
    reference = _cjk(chance, 4_000)
    turns: list[dict[str, Any]] = [
        {"turn": i, "user": "u", "text": reference[: 3_000 + i]} for i in range(1, 4)
    ]
    observation = Observation(output=turns[-1]["text"], input="q", turns=turns)
    costly = await score(spec("similarity", value=reference, scope="each"), observation, None)
    cheap = await score(spec("similarity", value=reference[:50]), Observation("x", "q"), None)
    assert costly.error is None and costly.reason == "all 3 turns pass"
    assert cheap.error is None and cheap.score == 0.0
    in_thread = [name.startswith(CHECK_THREAD) for name in threads_comparing]
    assert in_thread == [True, True, True, False]
