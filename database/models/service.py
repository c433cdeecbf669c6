"""Model configurations: per-provider rules, the SSRF guard, encrypted secrets, masked reads."""

from __future__ import annotations

import json
import uuid
from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import crud
from database.models.models import ModelConfig
from database.models.schemas import (
    HOSTED_PROVIDERS,
    ConnectionTestRequest,
    ConnectionTestResult,
    HttpTarget,
    HttpTargetRead,
    ModelConfigCreate,
    ModelConfigRead,
    ModelConfigUpdate,
)
from providers import json_paths
from providers.targets import TargetConfig, TargetError, TargetRequest, call_target
from utils.auth import Principal, Role
from utils.crud import refuse_nulls
from utils.errors import InvalidInput, NotFound
from utils.runtime import Runtime
from utils.secrets import SecretBox, SecretUnreadable, mask
from utils.ssrf import check_url, lookups_for
from utils.templates import check_template_off_loop
from utils.url_redaction import shown_origin

DEMO_MODEL = "demo"
CONNECTION_TEST_TIMEOUT = 15.0


async def get_model_or_404(session: AsyncSession, model_id: uuid.UUID) -> ModelConfig:
    config = await crud.get_model(session, model_id)
    if config is None:
        raise NotFound("Model configuration not found")
    return config


def check_jsonpath(expression: str, *, field: str) -> None:
    try:
        json_paths.checked(expression)
    except Exception as exc:  # the parser raises several kinds
        raise InvalidInput(f"not a valid JSONPath: {exc}", field=field) from exc


async def _check(runtime: Runtime, provider: str, values: dict[str, Any], has_key: bool) -> None:
    """The rules of each provider, on the configuration as it will be saved."""
    allow_private = runtime.settings.allow_private_networks
    http: dict[str, Any] | None = values.get("http")
    needs_model = provider in HOSTED_PROVIDERS or provider == "openai-compatible"
    if needs_model and not values.get("model"):
        raise InvalidInput(f"is required for the {provider} provider", field="model")
    if provider in HOSTED_PROVIDERS and not has_key:
        raise InvalidInput(f"is required for the {provider} provider", field="api_key")
    if provider == "openai-compatible" and not values.get("base_url"):
        raise InvalidInput("is required for openai-compatible providers", field="base_url")
    if provider == "http":
        if http is None:
            raise InvalidInput("is required for the http provider", field="http")
        await check_url(http["url"], field="http.url", allow_private=allow_private)
        await check_template_off_loop(http["body_template"], field="http.body_template")
        check_jsonpath(http["response_path"], field="http.response_path")
        if http.get("tool_calls_path"):
            check_jsonpath(http["tool_calls_path"], field="http.tool_calls_path")
        if http.get("stream_path"):
            check_jsonpath(http["stream_path"], field="http.stream_path")
    elif http is not None:
        raise InvalidInput("is only for the http provider", field="http")
    if values.get("base_url"):
        if provider in ("http", "demo"):
            raise InvalidInput(f"is not used by the {provider} provider", field="base_url")
        await check_url(
            values["base_url"],
            field="base_url",
            allow_private=allow_private,
        )


def _store_secrets(config: ModelConfig, box: SecretBox, values: dict[str, Any]) -> None:
    if "api_key" in values:
        key = values["api_key"]
        config.api_key_encrypted = box.encrypt(key) if key else None
        config.api_key_hint = mask(key) if key else None
    if "http" in values and config.provider == "http":
        http = values["http"]
        if http is None:
            config.base_url = None
            config.http_method = config.body_template = config.response_path = None
            config.tool_calls_path = config.stream_path = None
            config.http_headers_encrypted = None
            config.http_header_names = None
            return
        config.base_url = http["url"]
        config.http_method = http["method"]
        config.body_template = http["body_template"]
        config.response_path = http["response_path"]
        config.tool_calls_path = http.get("tool_calls_path")
        config.stream_path = http.get("stream_path")
        headers = http["headers"]
        config.http_headers_encrypted = box.encrypt(json.dumps(headers)) if headers else None
        config.http_header_names = sorted(headers)


def _plain_values(
    body: ModelConfigCreate | ModelConfigUpdate, *, exclude_unset: bool
) -> dict[str, Any]:
    values = body.model_dump(exclude_unset=exclude_unset, exclude={"api_key"})
    if values.get("http") is not None and body.http is not None:
        # A target given replaces the stored one whole: its unset fields take their defaults
        # (exclude_unset would drop them from the nested dump).
        values["http"] = body.http.model_dump()
    if values.get("tools") is not None:  # as providers take them: no null descriptions
        values["tools"] = [tool.model_dump(exclude_none=True) for tool in body.tools or []]
    if "parameters" in values and values["parameters"] is not None:
        values["parameters"] = {k: v for k, v in values["parameters"].items() if v is not None}
    if "api_key" in body.model_fields_set or (not exclude_unset and body.api_key is not None):
        values["api_key"] = body.api_key.get_secret_value().strip() if body.api_key else None
    return values


COLUMNS = (
    "name",
    "model",
    "parameters",
    "timeout_seconds",
    "requests_per_minute",
    "stream",
    "input_price_per_mtok",
    "output_price_per_mtok",
    "tools",
)


# Providers whose tokens stream as they come; an http target streams server-sent events when
# it says where each event's piece of text is (its stream_path).
STREAMING_PROVIDERS = ("openai", "openai-compatible", "anthropic", "google", "groq", "mistral")


def _check_stream(provider: str, stream: object, http: dict[str, Any] | None) -> None:
    """`stream` on the configuration as it will be saved."""
    if not stream:
        return
    if provider == "http":
        if not (http or {}).get("stream_path"):
            raise InvalidInput(
                "an http target streams only with an http.stream_path: the JSONPath to the"
                " piece of text in each server-sent event's data, e.g. $.delta",
                field="stream",
            )
    elif provider not in STREAMING_PROVIDERS:
        raise InvalidInput(
            f"streaming is supported for the {', '.join(STREAMING_PROVIDERS)} providers, and"
            " for http targets with an http.stream_path",
            field="stream",
        )


async def create_model(
    session: AsyncSession, runtime: Runtime, principal: Principal, body: ModelConfigCreate
) -> ModelConfig:
    values = _plain_values(body, exclude_unset=False)
    await _check(runtime, body.provider, values, has_key=body.api_key is not None)
    _check_stream(body.provider, values.get("stream"), values.get("http"))
    config = ModelConfig(
        organization_id=principal.organization_id,
        provider=body.provider,
        base_url=body.base_url,
        **{column: values[column] for column in COLUMNS},
    )
    if body.provider == "demo" and not config.model:
        config.model = DEMO_MODEL
    _store_secrets(config, runtime.secret_box, values)
    return await crud.create_model(session, config)


async def update_model(
    session: AsyncSession, runtime: Runtime, config: ModelConfig, body: ModelConfigUpdate
) -> ModelConfig:
    changes = _plain_values(body, exclude_unset=True)
    refuse_nulls(changes, "name", "timeout_seconds", "parameters", "stream", "tools")
    if config.provider == "http" and "base_url" in changes:  # its column holds http.url
        raise InvalidInput("is not used by the http provider", field="base_url")
    merged = {
        "model": config.model,
        "base_url": config.base_url if config.provider != "http" else None,
        **changes,
    }
    if "http" not in changes:
        merged["http"] = _current_http(config, runtime.secret_box)
    has_key = (
        changes.get("api_key") is not None
        if "api_key" in changes
        else bool(config.api_key_encrypted)
    )
    await _check(runtime, config.provider, merged, has_key=has_key)
    _check_stream(config.provider, changes.get("stream", config.stream), merged["http"])
    if (
        config.api_key_encrypted
        and changes.get("base_url", config.base_url) != config.base_url
        and "api_key" not in changes
    ):
        # The stored key would go to the new address unseen by whoever moved it there: the
        # key is masked to everyone, and a member must not be able to send it elsewhere.
        raise InvalidInput(
            "the stored key would be sent to the new base_url: give api_key again (or null)",
            field="api_key",
        )
    for column in COLUMNS:
        if column in changes:
            setattr(config, column, changes[column])
    if "base_url" in changes:
        config.base_url = changes["base_url"]
    _store_secrets(config, runtime.secret_box, changes)
    await crud.save_model(session)
    return config


def _headers(config: ModelConfig, box: SecretBox) -> dict[str, str]:
    if not config.http_headers_encrypted:
        return {}
    return dict(json.loads(box.decrypt(config.http_headers_encrypted)))


def _current_http(config: ModelConfig, box: SecretBox) -> dict[str, Any] | None:
    if config.provider != "http" or config.base_url is None:
        return None
    try:
        headers = _headers(config, box)
    except SecretUnreadable as exc:
        raise InvalidInput(
            "the stored headers cannot be decrypted (the key they were stored under is no"
            " longer configured): give http again, with its headers",
            field="http",
        ) from exc
    try:
        target = HttpTarget(
            url=config.base_url,
            method=config.http_method or "POST",
            headers=headers,
            body_template=config.body_template or "",
            response_path=config.response_path or "$",
            tool_calls_path=config.tool_calls_path,
            stream_path=config.stream_path,
        )
    except ValidationError as exc:  # stored before a rule it breaks (a header's value, say)
        where = ".".join(str(part) for part in exc.errors()[0]["loc"])
        raise InvalidInput(
            f"the stored target's {where} is no longer accepted: give http again",
            field="http",
        ) from None
    return target.model_dump()


def to_read(config: ModelConfig, reader: Principal) -> ModelConfigRead:
    """The configuration as `reader` may see it: URLs whole only to those who may edit it (an
    endpoint may carry its key in its path or query, as Azure Functions' `?code=` does), as
    webhooks' are."""
    whole = reader.role.at_least(Role.member)

    def shown(url: str) -> str:
        return url if whole else shown_origin(url)

    http = None
    if config.provider == "http" and config.base_url:
        http = HttpTargetRead(
            url=shown(config.base_url),
            method=config.http_method or "POST",
            headers={name: "…" for name in config.http_header_names or []},
            body_template=config.body_template or "",
            response_path=config.response_path or "",
            tool_calls_path=config.tool_calls_path,
            stream_path=config.stream_path,
        )
    return ModelConfigRead(
        id=config.id,
        name=config.name,
        provider=config.provider,
        model=config.model,
        base_url=shown(config.base_url) if config.provider != "http" and config.base_url else None,
        api_key=config.api_key_hint,
        parameters=config.parameters,
        timeout_seconds=config.timeout_seconds,
        requests_per_minute=config.requests_per_minute,
        stream=config.stream,
        input_price_per_mtok=config.input_price_per_mtok,
        output_price_per_mtok=config.output_price_per_mtok,
        http=http,
        tools=list(config.tools or []),
        demo=config.provider == "demo",
        created_at=config.created_at,
        updated_at=config.updated_at,
    )


def resolve(config: ModelConfig, box: SecretBox) -> TargetConfig:
    """Decrypts what the engine needs to call this model."""
    return TargetConfig(
        id=config.id,
        name=config.name,
        provider=config.provider,
        model=config.model,
        base_url=config.base_url,
        api_key=box.decrypt(config.api_key_encrypted) if config.api_key_encrypted else None,
        parameters=dict(config.parameters),
        timeout_seconds=config.timeout_seconds,
        requests_per_minute=config.requests_per_minute,
        input_price_per_mtok=config.input_price_per_mtok,
        output_price_per_mtok=config.output_price_per_mtok,
        http_method=config.http_method,
        http_headers=_headers(config, box),
        body_template=config.body_template,
        response_path=config.response_path,
        stream=config.stream,
        tools=list(config.tools or []),
        tool_calls_path=config.tool_calls_path,
        stream_path=config.stream_path,
    )


async def count_connection_test(runtime: Runtime, principal: Principal) -> None:
    """Counts a test-connection against the organization's hourly allowance (then 429)."""
    allowance = f"{runtime.settings.connection_tests_per_hour}/hour"
    await runtime.rate_limiter.hit("connection-tests", str(principal.organization_id), allowance)


async def test_connection(
    runtime: Runtime, config: ModelConfig, request: ConnectionTestRequest
) -> ConnectionTestResult:
    """One real call with a short timeout: its latency and reply, or the error in plain words."""
    try:
        target = resolve(config, runtime.secret_box)
    except SecretUnreadable:
        return ConnectionTestResult(
            ok=False,
            latency_ms=None,
            reply=None,
            error="the stored API key or headers cannot be decrypted (they were saved under an "
            "encryption key this server no longer holds); enter them again",
        )
    try:
        with lookups_for(config.organization_id):
            reply = await call_target(
                target,
                TargetRequest(input=request.input),
                allow_private_networks=runtime.settings.allow_private_networks,
                time_limit=min(target.timeout_seconds, CONNECTION_TEST_TIMEOUT),
            )
    except TargetError as exc:
        return ConnectionTestResult(ok=False, latency_ms=None, reply=None, error=exc.message)
    return ConnectionTestResult(
        ok=True,
        latency_ms=round(reply.latency_ms, 1),
        reply=reply.output,
        error=None,
        input_tokens=reply.input_tokens,
        output_tokens=reply.output_tokens,
    )
