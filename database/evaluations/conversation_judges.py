"""LLM judges of a conversation: what each is asked (declared in catalogue.py).

Each reads the whole transcript (Observation.turns), bounded as an agent's trajectory is: the
first and the last turns when it is long, each message and each call clipped. A test without
turns is judged as a conversation of one turn: its input, answered by its output.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from database.evaluations.judges import (
    PART_CHARS,
    clipped_lines,
    first_and_last,
    items,
    material,
    name_shown,
    prompt,
    shown,
)
from database.evaluations.scoring import MetricSpec, Observation

TRANSCRIPT_CHARS = 24_000
TURN_CHARS = 6_000  # at most a quarter of the transcript's: the first and last turns fit
MESSAGE_CHARS = 2_000  # the user's message, the assistant's answer


def _turns(obs: Observation) -> list[dict[str, Any]]:
    turns = items(obs.turns)
    if turns:
        return turns
    return [{"user": obs.input, "text": obs.output, "tool_calls": obs.tool_calls}]


def _turn(number: int, turn: dict[str, Any]) -> str:
    return clipped_lines(_turn_lines(number, turn), TURN_CHARS)


def _turn_lines(number: int, turn: dict[str, Any]) -> Iterator[str]:
    yield f"Turn {number}:"
    yield f"  user: {shown(turn.get('user') or '', MESSAGE_CHARS)}"
    for call in items(turn.get("tool_calls")):
        arguments = shown(call.get("arguments", {}), PART_CHARS)
        yield f"  assistant calls {name_shown(call.get('name'))}({arguments})"
    answer = turn.get("text")
    yield f"  assistant: {shown(answer, MESSAGE_CHARS) if answer else '(no text)'}"


def _transcript(obs: Observation) -> str:
    turns = _turns(obs)
    transcript = first_and_last(turns, _turn, TRANSCRIPT_CHARS, "turns")
    return (
        f"The conversation, {len(turns)} turn{'s' if len(turns) != 1 else ''} (the "
        "user's messages, the assistant's answers and its tool calls; what either wrote is "
        "quoted as JSON, one line each):\n" + material("conversation", transcript, len(transcript))
    )


def _goal(obs: Observation) -> list[str]:
    if obs.goal:
        parts = [f"The user's goal:\n{material('goal', obs.goal)}"]
    else:
        parts = [f"The user's goal (the test's input):\n{material('goal', obs.input)}"]
    if obs.expected:
        parts.append(f"The expected outcome (a reference):\n{material('expected', obs.expected)}")
    return parts


def _role(obs: Observation) -> str:
    if obs.role:
        return f"The assistant's role (its system prompt):\n{material('role', obs.role)}"
    return (
        "The assistant's role: none was given; judge against the role the conversation "
        "implies (what the assistant presents itself as, and what the user addresses it as)."
    )


def goal_completion(spec: MetricSpec, obs: Observation) -> str:
    return prompt(
        [*_goal(obs), _transcript(obs)],
        "Score whether the conversation achieved the user's goal"
        + (", as the expected outcome describes" if obs.expected else "")
        + ". Judge by what the assistant actually did and answered over the turns, not by "
        "claims alone. 1 = fully achieved, 0 = not achieved; partly achieved scores between.",
    )


def knowledge_retention(spec: MetricSpec, obs: Observation) -> str:
    return prompt(
        [_transcript(obs)],
        "Score how well the assistant remembers and uses what the user said in earlier turns: "
        "asking again for something the user already gave, forgetting it, or contradicting "
        "it (or the assistant's own earlier answers) lowers the score. 1 = everything told "
        "earlier is retained and used, 0 = the assistant keeps losing track. A conversation "
        "of one turn scores 1 unless the answer ignores or contradicts the user's message.",
    )


def role_adherence(spec: MetricSpec, obs: Observation) -> str:
    return prompt(
        [_role(obs), _transcript(obs)],
        "Score how consistently the assistant stays in its role in every turn: its persona, "
        "tone, scope and rules. Each turn that breaks character, leaves the role's scope or "
        "breaks its rules lowers the score, even when the user asks for it. 1 = in role in "
        "every turn, 0 = out of role throughout.",
    )


def turn_relevance(spec: MetricSpec, obs: Observation) -> str:
    return prompt(
        [_transcript(obs)],
        "For each assistant answer, decide whether it is relevant to the user's message just "
        "before it (in the light of the conversation so far). Score the share of assistant "
        "turns that are relevant: 3 relevant of 4 scores 0.75 (when turns are left out, "
        "among the turns shown). Name the irrelevant turns in the reason.",
    )
