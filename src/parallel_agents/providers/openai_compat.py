"""`openai:` - any OpenAI-compatible chat-completions server (OpenAI, vLLM, Ollama, llama-server).

The official SDK with `max_retries=0` (the engine retries), called through its raw-response API
so the `x-ratelimit-*` headers reach the shared limiter on every answer, errors included.
"""

from __future__ import annotations

import json
from typing import Any

import openai

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

__all__ = ["OpenAIProvider", "to_openai_messages"]


def to_openai_messages(messages: list[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "tool":
            out.append({"role": "tool", "tool_call_id": m.tool_call_id or "", "content": m.content})
        elif m.role == "assistant" and m.tool_calls:
            out.append({
                "role": "assistant",
                "content": m.content or None,
                "tool_calls": [{"id": c.id, "type": "function",
                                "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
                               for c in m.tool_calls],
            })
        else:
            out.append({"role": m.role, "content": m.content})
    return out


class OpenAIProvider(Provider):
    """Chat completions over the official `openai` SDK.

    `api_key` may be a placeholder for servers that take none (Ollama, llama-server); it is never
    logged, and every error message is passed through `redact`.
    """

    name = "openai"

    def __init__(self, *, api_key: str | None, base_url: str | None = None,
                 key_env: str | None = "OPENAI_API_KEY", rpm: int | None = None,
                 tpm: int | None = None, timeout: float = 60.0, max_concurrency: int = 64,
                 limiter: RateLimiter | None = None, limiter_period: float = 60.0) -> None:
        self.base_url = base_url
        self._api_key = api_key
        self._key_env = key_env
        self._limiter = limiter
        self._limiter_settings = {"rpm": rpm, "tpm": tpm, "max_concurrency": max_concurrency,
                                  "period": limiter_period}
        self._client = openai.AsyncOpenAI(api_key=api_key or "no-key", base_url=base_url,
                                          max_retries=0, timeout=timeout)

    def __repr__(self) -> str:  # never show the key, nor a password in the URL
        shown = shown_url(self.base_url, "") or None
        return f"OpenAIProvider(base_url={shown!r})"

    def limiter(self, model: str) -> RateLimiter:
        if self._limiter is not None:
            return self._limiter
        return limiter_for(self.name + "@" + (self.base_url or "default"), model,
                           **self._limiter_settings)

    async def complete(self, request: ChatRequest) -> ChatResponse:
        check_allow_network(self.name, self.base_url)
        kwargs: dict[str, Any] = {
            "model": request.model,
            "messages": to_openai_messages(request.messages),
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
        }
        if request.tools:
            kwargs["tools"] = [{"type": "function", "function": {
                "name": t.name, "description": t.description, "parameters": t.parameters}}
                for t in request.tools]
        if request.json_schema is not None:
            kwargs["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "output", "schema": request.json_schema}}
        limiter = self.limiter(request.model)
        estimate = estimate_tokens((m.content for m in request.messages), request.max_tokens)
        lease = await limiter.acquire(estimate)
        try:
            raw = await self._client.chat.completions.with_raw_response.create(**kwargs)
        except openai.APIStatusError as exc:
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
        except openai.APIConnectionError as exc:  # includes APITimeoutError
            lease.failure()
            raise transport_error(self.name, request.model, exc, self.base_url,
                                  isinstance(exc, openai.APITimeoutError)) from None
        except openai.OpenAIError as exc:
            lease.failure()
            raise malformed(self.name, request.model,
                            redact(str(exc), [self._api_key])[:200]) from None
        return await parse_raw_response(raw, lambda parsed: self._to_response(parsed, request),
                                        lease, self.name, request.model, [self._api_key])

    def _to_response(self, completion: Any, request: ChatRequest) -> ChatResponse:
        # First what the answer cost: an unusable answer is paid for all the same.
        usage = Usage()
        if getattr(completion, "usage", None) is not None:
            details = getattr(completion.usage, "prompt_tokens_details", None)
            usage = Usage(completion.usage.prompt_tokens or 0,
                          completion.usage.completion_tokens or 0,
                          (getattr(details, "cached_tokens", 0) or 0) if details else 0)
        if not getattr(completion, "choices", None):
            raise malformed(self.name, request.model, "no choices in the answer", usage)
        choice = completion.choices[0]
        message = choice.message
        calls = []
        for call in message.tool_calls or []:
            try:
                args = json.loads(call.function.arguments or "{}")
            except json.JSONDecodeError as exc:
                raise malformed(self.name, request.model,
                                f"tool call {call.function.name!r} has invalid JSON arguments",
                                usage) from exc
            if not isinstance(args, dict):
                raise malformed(self.name, request.model,
                                f"tool call {call.function.name!r} arguments are not an object",
                                usage)
            calls.append(ToolCall(id=call.id, name=call.function.name, arguments=args))
        text = message.content or ""
        if request.json_schema is not None and not calls:
            try:
                json.loads(text)
            except json.JSONDecodeError as exc:
                raise malformed(self.name, request.model,
                                "asked for JSON but the answer is not valid JSON", usage) from exc
        finish = "tool_calls" if calls else (choice.finish_reason or "stop")
        if finish not in ("stop", "length", "tool_calls"):
            finish = "stop"
        return ChatResponse(text=text, tool_calls=calls, usage=usage,
                            model=completion.model or request.model, finish_reason=finish)

    async def aclose(self) -> None:
        await self._client.close()
