"""The provider contract: one coroutine, `complete(ChatRequest) -> ChatResponse`.

Every LLM backend (OpenAI-compatible servers, Anthropic, the embedded local model, replay
cassettes, scripted test providers) implements this, so the LLM agent, the coordinator and the
rate limiter never know which one they talk to. Provider SDKs run with their own retries off:
the engine retries, using `ProviderError.retryable` / `.retry_after`.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal

from .._exceptions import TaskError

__all__ = [
    "Message",
    "ToolSpec",
    "ToolCall",
    "Usage",
    "ChatRequest",
    "ChatResponse",
    "Provider",
    "ProviderError",
    "FunctionProvider",
    "split_model",
    "note_wait",
    "waits_measured",
    "attempt_wait_meter",
]


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(slots=True)
class Message:
    role: Literal["system", "user", "assistant", "tool"]
    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)  # assistant messages only
    tool_call_id: str | None = None  # tool messages only
    name: str | None = None  # tool messages: the tool's name


@dataclass(slots=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]  # a JSON schema for the arguments object


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.input_tokens + other.input_tokens,
                     self.output_tokens + other.output_tokens,
                     self.cached_tokens + other.cached_tokens)

    def to_dict(self) -> dict[str, int]:
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "cached_tokens": self.cached_tokens}


@dataclass(slots=True)
class ChatRequest:
    model: str  # the model name without the provider prefix
    messages: list[Message]
    tools: list[ToolSpec] = field(default_factory=list)
    max_tokens: int = 512
    temperature: float = 0.2
    #: ask for JSON matching this schema (native structured output, or grammar for local:)
    json_schema: dict[str, Any] | None = None

    def canonical(self) -> str:
        """A stable serialisation (no secrets in it): the key of caches and cassettes."""
        return json.dumps({
            "model": self.model,
            "messages": [
                {"role": m.role, "content": m.content, "tool_call_id": m.tool_call_id,
                 "name": m.name,
                 "tool_calls": [{"id": c.id, "name": c.name, "arguments": c.arguments}
                                for c in m.tool_calls]}
                for m in self.messages
            ],
            "tools": [{"name": t.name, "description": t.description,
                       "parameters": t.parameters} for t in self.tools],
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "json_schema": self.json_schema,
        }, sort_keys=True, separators=(",", ":"))


@dataclass(slots=True)
class ChatResponse:
    text: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    finish_reason: str = "stop"  # stop | length | tool_calls
    #: Seconds the call waited for the provider before it was served (a shared local model
    #: serves one call at a time). The provider also counts it with `note_wait`.
    queued_seconds: float = 0.0


class ProviderError(TaskError):
    """A provider call failed. `status` is the HTTP status when there was one.

    `retryable` says whether the engine should try again (429, 5xx, timeouts, malformed
    output); 400, auth and spend-limit errors are not. `retry_after` is the server's
    Retry-After in seconds, honoured by the engine's backoff.
    """

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = True,
                 retry_after: float | None = None, provider: str | None = None) -> None:
        super().__init__(message, retryable=retryable)
        self.status = status
        self.retry_after = retry_after
        self.provider = provider
        #: the tokens the call was billed for when the server answered, but unusably (a
        #: malformed answer): they count in the run's totals and budget all the same
        self.usage: Usage | None = None


class Provider(ABC):
    """An LLM backend. `name` is the prefix in `model: PROVIDER:MODEL`."""

    name: str = "provider"

    @abstractmethod
    async def complete(self, request: ChatRequest) -> ChatResponse:
        """Send one request; raise ProviderError on failure."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections, models, ... Default: nothing to release."""


Handler = Callable[[ChatRequest], "ChatResponse | str | Awaitable[ChatResponse | str]"]


class FunctionProvider(Provider):
    """A provider whose answers come from a Python function: scripted, offline tests.

    The function receives the ChatRequest and returns a ChatResponse or plain text (sync or
    async). Every request is kept in `requests` for assertions.
    """

    name = "function"

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[ChatRequest] = []

    async def complete(self, request: ChatRequest) -> ChatResponse:
        self.requests.append(request)
        out = self.handler(request)
        if hasattr(out, "__await__"):
            out = await out  # type: ignore[misc]
        if isinstance(out, str):
            words = sum(len(m.content.split()) for m in request.messages)
            return ChatResponse(text=out, usage=Usage(words, len(out.split())), model=request.model)
        return out  # type: ignore[return-value]


# Seconds the current attempt spent waiting for a shared resource rather than working (a
# call queued for a model that serves one call at a time). The executor opens a meter per
# attempt (`waits_measured`); whoever makes an attempt wait says how long (`note_wait`).
_waits: ContextVar[list[float] | None] = ContextVar("parallel_agents_waits", default=None)


def note_wait(seconds: float) -> None:
    """Count `seconds` the current attempt waited (not worked): the run's serial time,
    speedup and critical path leave it out. Outside an attempt, nothing happens."""
    meter = _waits.get()
    if meter is not None and seconds > 0:
        meter[0] += seconds


def attempt_wait_meter() -> list[float]:
    """Open the meter of the attempt running in the current asyncio task (the executor does,
    at the start of each attempt: a task has its own context, so it needs no reset)."""
    meter = [0.0]
    _waits.set(meter)
    return meter


@contextmanager
def waits_measured() -> Iterator[list[float]]:
    """A meter (`[seconds]`) that `note_wait` fills in this block and in the asyncio tasks
    created in it."""
    meter = [0.0]
    token = _waits.set(meter)
    try:
        yield meter
    finally:
        _waits.reset(token)


def split_model(spec: str) -> tuple[str, str]:
    """`"openai:gpt-4o-mini"` -> `("openai", "gpt-4o-mini")`; a bare name means `local:`."""
    if ":" in spec:
        provider, _, model = spec.partition(":")
        return provider.strip().lower(), model.strip()
    return "local", spec.strip()
