"""The judge of a judge metric: asks the judge model what the catalogue says to ask, and reads
its verdict (a JSON object with a score between 0 and 1 and a reason)."""

from __future__ import annotations

from dataclasses import replace

from app.engine.calls import DeltaSink, call_model, cost
from app.engine.judge_replies import UnreadableVerdict, read_verdict
from app.engine.plan import Plan
from database.evaluations.scoring import MetricSpec, Verdict
from providers.targets import TargetConfig, TargetError, TargetRequest


class ModelJudge:
    def __init__(
        self, config: TargetConfig, *, allow_private: bool, on_delta: DeltaSink | None
    ) -> None:
        self.config = replace(config, tools=[])  # a judge answers; it calls no tool
        # As repeatable as the model allows: temperature 0, unless the judge model's own
        # configuration sets one (reasoning models refuse any temperature but their own).
        own = config.parameters.get("temperature") is not None
        self.parameters: dict[str, float] = {} if own else {"temperature": 0}
        self.allow_private = allow_private
        self.on_delta = on_delta

    async def __call__(self, prompt: str) -> Verdict:
        request = TargetRequest(input=prompt, parameters=self.parameters)
        try:
            reply = await call_model(
                self.config, request, allow_private=self.allow_private, on_delta=self.on_delta
            )
        except TargetError as error:
            return Verdict(
                score=0.0, reason=error.message, error=f"judge call failed: {error.message}"
            )
        verdict = Verdict(
            score=0.0,
            reason=reply.output[:500],
            input_tokens=reply.input_tokens,
            output_tokens=reply.output_tokens,
            cost=cost(self.config, reply),
        )
        try:
            answer = read_verdict(reply.output, prompt)
        except UnreadableVerdict as unreadable:
            verdict.error = str(unreadable)
            return verdict
        verdict.score, verdict.reason = answer.score, answer.reason
        return verdict


def judge_for(plan: Plan, spec: MetricSpec, on_delta: DeltaSink | None) -> ModelJudge | None:
    """The metric's judge, or None when its judge model configuration is gone."""
    config = plan.judges.get(spec.judge_model_id or "")
    if config is None:
        return None
    return ModelJudge(config, allow_private=plan.allow_private, on_delta=on_delta)
