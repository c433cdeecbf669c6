"""A render's errors name the field of the template rendered (a prompt's system prompt, not
its template), in their field and in their words."""

from __future__ import annotations

import pytest

from utils.errors import InvalidInput
from utils.templates import TemplateTooCostly, render


@pytest.mark.parametrize(
    ("source", "said"),
    [
        ("{{ 1/0 }}", "system prompt failed to render: division by zero"),
        ("{{ ''.__class__ }}", "system prompt not allowed"),
    ],
)
def test_a_system_prompt_failing_to_render_is_named(source: str, said: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        render(source, {}, template_field="system_prompt")
    assert refused.value.detail.startswith(said)
    assert refused.value.errors == [{"field": "system_prompt", "message": refused.value.detail}]


def test_a_costly_system_prompt_is_named() -> None:
    with pytest.raises(TemplateTooCostly) as refused:
        render("{{ 'x' * 10**10 }}", {}, template_field="system_prompt")
    assert refused.value.detail.startswith("system prompt too costly")
    assert [error["field"] for error in refused.value.errors or []] == ["system_prompt"]


def test_a_missing_system_prompt_variable_is_named() -> None:
    with pytest.raises(InvalidInput) as refused:
        render("You are {{ persona }}", {}, template_field="system_prompt")
    assert refused.value.detail == "missing system prompt variable(s): persona"
    assert refused.value.errors == [
        {"field": "variables.persona", "message": "is required by the system prompt"}
    ]


def test_a_template_is_named_as_before() -> None:
    with pytest.raises(InvalidInput) as refused:
        render("{{ 1/0 }}", {})
    assert refused.value.detail == "template failed to render: division by zero"
    assert refused.value.errors == [{"field": "template", "message": refused.value.detail}]


async def test_an_http_targets_body_template_failing_to_render_is_named() -> None:
    """An http target's body template is named in its errors, not taken for a prompt's."""
    from providers.config import TargetRequest
    from providers.errors import TargetError
    from providers.targets import call_target
    from tests.providers.support import target_config

    config = target_config(
        "http",
        "http://127.0.0.1:9/chat",
        api_key=None,
        http_method="POST",
        body_template="{{ 1/0 }}",
        response_path="$.answer",
    )
    with pytest.raises(TargetError) as refused:
        await call_target(config, TargetRequest(input="hi"), allow_private_networks=True)
    assert refused.value.kind == "configuration_error"
    assert str(refused.value) == "body template failed to render: division by zero"
    cause = refused.value.__cause__
    assert isinstance(cause, InvalidInput) and cause.errors == [
        {"field": "http.body_template", "message": str(refused.value)}
    ]
