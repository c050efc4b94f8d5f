"""`anthropic:` - the Messages API over the official `anthropic` SDK (`max_retries=0`).

Structured output: Anthropic has no JSON-schema response format, so a request with a
`json_schema` and no tools forces a single tool, `json_output`, whose input schema is that
schema; its input becomes the answer text. With tools as well, the schema goes into the
system prompt instead (forcing one tool would rule out the others).
"""

from __future__ import annotations

import inspect
import json
from typing import Any

import anthropic

from ._http import (
    check_allow_network,
    parse_raw_response,
    estimate_tokens,
    malformed,
    redact,
    shown_url,
    status_error,
    transport_error,
)
from .base import ChatRequest, ChatResponse, Message, Provider, ToolCall, Usage
from .limits import RateLimiter, limiter_for, parse_retry_after

__all__ = ["AnthropicProvider", "to_anthropic_messages"]

JSON_TOOL = "json_output"
#: recent SDKs (2.x) dropped `temperature` from messages.create; older ones take it
_SDK_TAKES_TEMPERATURE = "temperature" in inspect.signature(
    anthropic.resources.messages.AsyncMessages.create).parameters


def to_anthropic_messages(messages: list[Message]) -> tuple[str, list[dict[str, Any]]]:
    """(system, messages): system messages are joined; tool results become user turns."""
    system_parts: list[str] = []
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            system_parts.append(m.content)
            continue
        if m.role == "tool":
            block = {"type": "tool_result", "tool_use_id": m.tool_call_id or "",
                     "content": m.content}
            if out and out[-1]["role"] == "user" and isinstance(out[-1]["content"], list) and \
                    all(b.get("type") == "tool_result" for b in out[-1]["content"]):
                out[-1]["content"].append(block)
            else:
                out.append({"role": "user", "content": [block]})
            continue
        if m.role == "assistant" and m.tool_calls:
            blocks: list[dict[str, Any]] = []
            if m.content:
                blocks.append({"type": "text", "text": m.content})
            blocks += [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
                       for c in m.tool_calls]
            out.append({"role": "assistant", "content": blocks})
            continue
        out.append({"role": m.role, "content": m.content})
    return "\n\n".join(system_parts), out


class AnthropicProvider(Provider):
    name = "anthropic"

    def __init__(self, *, api_key: str | None, base_url: str | None = None,
                 key_env: str | None = "ANTHROPIC_API_KEY", rpm: int | None = None,
                 tpm: int | None = None, timeout: float = 60.0, max_concurrency: int = 64,
                 limiter: RateLimiter | None = None, limiter_period: float = 60.0) -> None:
        self.base_url = base_url
        self._api_key = api_key
        self._key_env = key_env
        self._limiter = limiter
        self._limiter_settings = {"rpm": rpm, "tpm": tpm, "max_concurrency": max_concurrency,
                                  "period": limiter_period}
        self._client = anthropic.AsyncAnthropic(api_key=api_key or "no-key", base_url=base_url,
                                                max_retries=0, timeout=timeout)

    def __repr__(self) -> str:  # never show the key, nor a password in the URL
        shown = shown_url(self.base_url, "") or None
        return f"AnthropicProvider(base_url={shown!r})"

    def limiter(self, model: str) -> RateLimiter:
        if self._limiter is not None:
            return self._limiter
        return limiter_for(self.name + "@" + (self.base_url or "default"), model,
                           **self._limiter_settings)

    def _kwargs(self, request: ChatRequest) -> dict[str, Any]:
        system, messages = to_anthropic_messages(request.messages)
        kwargs: dict[str, Any] = {"model": request.model, "messages": messages,
                                  "max_tokens": request.max_tokens}
        if _SDK_TAKES_TEMPERATURE:
            kwargs["temperature"] = request.temperature
        tools = [{"name": t.name, "description": t.description, "input_schema": t.parameters}
                 for t in request.tools]
        if request.json_schema is not None:
            if tools:
                system += ("\n\nWhen you give your final answer, answer with JSON only, matching "
                           "this JSON schema:\n" + json.dumps(request.json_schema))
            else:
                tools = [{"name": JSON_TOOL, "description": "Give the answer as structured data.",
                          "input_schema": request.json_schema}]
                kwargs["tool_choice"] = {"type": "tool", "name": JSON_TOOL}
        if tools:
            kwargs["tools"] = tools
        if system.strip():
            kwargs["system"] = system.strip()
        return kwargs

    async def complete(self, request: ChatRequest) -> ChatResponse:
        check_allow_network(self.name, self.base_url)
        kwargs = self._kwargs(request)
        limiter = self.limiter(request.model)
        estimate = estimate_tokens((m.content for m in request.messages), request.max_tokens)
        lease = await limiter.acquire(estimate)
        try:
            raw = await self._client.messages.with_raw_response.create(**kwargs)
        except anthropic.APIStatusError as exc:
            headers = dict(exc.response.headers)
            err = status_error(self.name, request.model, exc.status_code, headers, exc.body,
                               [self._api_key], self._key_env)
            if exc.status_code in (429, 529) and err.retryable:
                lease.rate_limited(parse_retry_after(headers), headers)
            else:
                lease.failure(headers)
            # `from None`: the SDK's error may hold what the server echoed (a key) or the
            # URL with its credentials; ours says what matters, with those masked.
            raise err from None
        except anthropic.APIConnectionError as exc:
            lease.failure()
            raise transport_error(self.name, request.model, exc, self.base_url,
                                  isinstance(exc, anthropic.APITimeoutError)) from None
        except anthropic.AnthropicError as exc:
            lease.failure()
            raise malformed(self.name, request.model,
                            redact(str(exc), [self._api_key])[:200]) from None
        return await parse_raw_response(raw, lambda parsed: self._to_response(parsed, request),
                                        lease, self.name, request.model, [self._api_key])

    def _to_response(self, message: Any, request: ChatRequest) -> ChatResponse:
        # First what the answer cost: an unusable answer is paid for all the same.
        u = getattr(message, "usage", None)
        usage = Usage()
        if u is not None:
            cached = getattr(u, "cache_read_input_tokens", 0) or 0
            created = getattr(u, "cache_creation_input_tokens", 0) or 0
            # Anthropic's input_tokens excludes cache reads/writes; ours counts all input
            usage = Usage((u.input_tokens or 0) + cached + created, u.output_tokens or 0, cached)
        content = getattr(message, "content", None)
        if content is None:
            raise malformed(self.name, request.model, "no content in the answer", usage)
        texts: list[str] = []
        calls: list[ToolCall] = []
        for block in content:
            kind = getattr(block, "type", None)
            if kind == "text":
                texts.append(block.text)
            elif kind == "tool_use":
                if not isinstance(block.input, dict):
                    raise malformed(self.name, request.model,
                                    f"tool call {block.name!r} input is not an object", usage)
                calls.append(ToolCall(id=block.id, name=block.name, arguments=block.input))
        text = "".join(texts)
        forced = [c for c in calls if c.name == JSON_TOOL]
        if request.json_schema is not None and forced:
            text, calls = json.dumps(forced[0].arguments), []
        elif request.json_schema is not None and not calls:
            try:
                json.loads(text)
            except json.JSONDecodeError as exc:
                raise malformed(self.name, request.model,
                                "asked for JSON but the answer is not valid JSON", usage) from exc
        stop = getattr(message, "stop_reason", None)
        finish = ("tool_calls" if calls else "length" if stop == "max_tokens" else "stop")
        return ChatResponse(text=text, tool_calls=calls, usage=usage,
                            model=getattr(message, "model", "") or request.model,
                            finish_reason=finish)

    async def aclose(self) -> None:
        await self._client.close()
