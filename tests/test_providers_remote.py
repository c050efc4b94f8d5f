"""openai: and anthropic: providers over real HTTP against the loopback fake server."""

from __future__ import annotations

import asyncio
import json
import logging
import traceback
from collections.abc import Iterator
from typing import Any

import pytest

from parallel_agents import Executor
from parallel_agents._exceptions import UsageError
from parallel_agents.plan import Plan, Pool, Task
from parallel_agents.providers import _http
from parallel_agents.providers.anthropic import AnthropicProvider
from parallel_agents.providers.base import (
    ChatRequest,
    Message,
    ProviderError,
    ToolCall,
    ToolSpec,
)
from parallel_agents.providers.limits import RateLimiter
from parallel_agents.providers.openai_compat import OpenAIProvider
from tests.fakes.openai_server import FakeLLMServer, Reply

KEY = "sk-test-SECRET0123456789abcdef"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as srv:
        yield srv


@pytest.fixture(autouse=True)
def _clean(server: FakeLLMServer) -> None:
    server.reset()


def openai_provider(server: FakeLLMServer, **kw: Any) -> OpenAIProvider:
    kw.setdefault("limiter", RateLimiter())
    return OpenAIProvider(api_key=KEY, base_url=server.openai_base_url, **kw)


def anthropic_provider(server: FakeLLMServer, **kw: Any) -> AnthropicProvider:
    kw.setdefault("limiter", RateLimiter())
    return AnthropicProvider(api_key=KEY, base_url=server.anthropic_base_url, **kw)


def ask(text: str = "hello there", **kw: Any) -> ChatRequest:
    return ChatRequest(model="gpt-test", messages=[Message("system", "be brief"),
                                                   Message("user", text)], **kw)


def call(provider: Any, request: ChatRequest) -> Any:
    async def go() -> Any:
        try:
            return await provider.complete(request)
        finally:
            await provider.aclose()
    return asyncio.run(go())


def error_of(provider: Any, request: ChatRequest) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        call(provider, request)
    return info.value


TOOLS = [ToolSpec("read_file", "Read a file", {
    "type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]})]


# ---- openai: ------------------------------------------------------------------------------

def test_openai_text_usage_and_the_key_sent_as_bearer(server: FakeLLMServer) -> None:
    server.enqueue(Reply.text("four words of answer"))
    response = call(openai_provider(server), ask("two words"))
    assert response.text == "four words of answer"
    assert response.usage.input_tokens == 4 and response.usage.output_tokens == 4
    assert response.finish_reason == "stop"
    assert server.requests[0].auth == f"Bearer {KEY}"
    assert server.requests[0].body["messages"][1] == {"role": "user", "content": "two words"}


def test_openai_tool_calls_both_ways(server: FakeLLMServer) -> None:
    server.enqueue(Reply.tool_call("read_file", {"path": "a.txt"}))
    history = [Message("user", "read a.txt"),
               Message("assistant", "", tool_calls=[ToolCall("call_0", "read_file",
                                                             {"path": "b.txt"})]),
               Message("tool", "contents of b", tool_call_id="call_0", name="read_file")]
    response = call(openai_provider(server), ChatRequest("gpt-test", history, tools=TOOLS))
    assert response.finish_reason == "tool_calls"
    assert [(c.name, c.arguments) for c in response.tool_calls] == [("read_file",
                                                                     {"path": "a.txt"})]
    sent = server.requests[0].body
    assert sent["tools"][0]["function"]["name"] == "read_file"
    assert sent["messages"][1]["tool_calls"][0]["function"] == {
        "name": "read_file", "arguments": json.dumps({"path": "b.txt"})}
    assert sent["messages"][2] == {"role": "tool", "tool_call_id": "call_0",
                                   "content": "contents of b"}


def test_openai_structured_output_sends_json_schema(server: FakeLLMServer) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    server.enqueue(Reply.json({"n": 3}))
    response = call(openai_provider(server), ask(json_schema=schema))
    assert json.loads(response.text) == {"n": 3}
    fmt = server.requests[0].body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["schema"] == schema


@pytest.mark.parametrize("reply, fragment", [
    (Reply.malformed(), "malformed"),
    (Reply.server_error(), "HTTP 500"),
    (Reply.overloaded(), "HTTP 529"),
])
def test_openai_retryable_failures(server: FakeLLMServer, reply: Reply, fragment: str) -> None:
    server.enqueue(reply)
    err = error_of(openai_provider(server), ask())
    assert err.retryable and fragment in str(err)


def test_openai_json_answer_that_is_not_json_is_retryable(server: FakeLLMServer) -> None:
    server.enqueue(Reply.bad_json_content())
    err = error_of(openai_provider(server), ask(json_schema={"type": "object"}))
    assert err.retryable and "not valid JSON" in str(err)


def test_openai_timeout_is_retryable(server: FakeLLMServer) -> None:
    server.enqueue(Reply.hang(3.0))
    err = error_of(openai_provider(server, timeout=0.3), ask())
    assert err.retryable and "timed out" in str(err)


def test_connection_refused_is_retryable() -> None:
    provider = OpenAIProvider(api_key=KEY, base_url="http://127.0.0.1:9/v1", timeout=2,
                              limiter=RateLimiter())
    err = error_of(provider, ask())
    assert err.retryable and "connection failed" in str(err)


def test_errors_mask_credentials_in_the_base_url() -> None:
    url = "http://u:cred-pass-777@127.0.0.1:9/v1?api_key=cred-key-888"
    for provider in (OpenAIProvider(api_key=KEY, base_url=url, timeout=2, limiter=RateLimiter()),
                     AnthropicProvider(api_key=KEY, base_url=url, timeout=2,
                                       limiter=RateLimiter())):
        err = error_of(provider, ask())
        assert "connection failed talking to http://***@127.0.0.1:9/v1?***" in str(err)
        assert "cred-" not in str(err) + repr(provider)
        assert "cred-" not in "".join(traceback.format_exception(err))


def test_openai_400_is_not_retryable(server: FakeLLMServer) -> None:
    server.enqueue(Reply.error(400, "max_tokens is too large", "invalid_request_error"))
    err = error_of(openai_provider(server), ask())
    assert not err.retryable and err.status == 400
    assert "max_tokens is too large" in str(err) and "retrying will not help" in str(err)


def test_openai_spend_limit_429_is_not_retryable(server: FakeLLMServer) -> None:
    server.enqueue(Reply.error(429, "You exceeded your current quota", "insufficient_quota"))
    err = error_of(openai_provider(server), ask())
    assert not err.retryable and "spend limit" in str(err)


@pytest.mark.parametrize("headers, expected", [({"retry_after": 2}, 2.0),
                                               ({"retry_after_ms": 750}, 0.75)])
def test_openai_429_carries_retry_after(server: FakeLLMServer, headers: dict[str, float],
                                        expected: float) -> None:
    server.enqueue(Reply.rate_limited(**headers))
    limiter = RateLimiter()
    err = error_of(openai_provider(server, limiter=limiter), ask())
    assert err.retryable and err.status == 429 and err.retry_after == pytest.approx(expected)
    assert limiter.state().paused_for > expected - 0.5  # the whole provider pauses


def test_no_api_key_in_errors_or_logs(server: FakeLLMServer,
                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server.enqueue(Reply.error(401, f"Incorrect API key provided: {KEY}. Find your key at ...",
                               "invalid_api_key"),
                   Reply.error(401, "Incorrect API key provided: sk-test-***********cdef",
                               "invalid_api_key"))
    errors = [error_of(openai_provider(server), ask()) for _ in range(2)]
    for err in errors:
        assert not err.retryable and "authentication failed" in str(err)
        assert "$OPENAI_API_KEY" in str(err)
        assert KEY not in str(err) and "sk-test" not in str(err)
        # Nor in a traceback: the SDK's error (which holds the echoed key) is not chained.
        text = "".join(traceback.format_exception(err))
        assert KEY not in text and err.__cause__ is None
    assert KEY not in caplog.text
    assert KEY not in repr(openai_provider(server))


def test_network_guard_refuses_remote_hosts_but_allows_loopback(
        server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_http, "ALLOW_NETWORK_CALLS", False)
    remote = OpenAIProvider(api_key=KEY, base_url="https://api.example.invalid/v1",
                            limiter=RateLimiter())
    with pytest.raises(UsageError, match="remote model calls are disabled"):
        call(remote, ask())
    hidden = OpenAIProvider(api_key=KEY, base_url="https://u:cred-pass-777@example.invalid/v1",
                            limiter=RateLimiter())
    with pytest.raises(UsageError, match=r"https://\*\*\*@example.invalid/v1 is not") as refused:
        call(hidden, ask())
    assert "cred-pass-777" not in str(refused.value)
    server.enqueue(Reply.text("fine"))
    assert call(openai_provider(server), ask()).text == "fine"


def test_network_guard_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARALLEL_AGENTS_ALLOW_NETWORK", "0")
    remote = AnthropicProvider(api_key=KEY, base_url=None, limiter=RateLimiter())
    with pytest.raises(UsageError, match="the default API is not a loopback server"):
        call(remote, ask())


def test_the_engine_retry_honours_retry_after(server: FakeLLMServer) -> None:
    server.enqueue(Reply.rate_limited(retry_after=0.6), Reply.text("second time lucky"))
    provider = openai_provider(server)

    async def run() -> str:
        return (await provider.complete(ask())).text

    plan = Plan(tasks=(Task(id="t", run=run, max_retries=2, retry_backoff_sec=0.01),))
    result = asyncio.run(Executor(seed=1).execute(plan))
    assert result.tasks["t"].output == "second time lucky"
    first, second = server.requests
    assert second.t - first.t >= 0.6


def test_sixty_task_burst_under_an_rpm_limit(server: FakeLLMServer) -> None:
    """60 tasks at once through the real executor against a server that enforces 20 requests
    per second: every task succeeds, and the server never sees more than the limit."""
    limit, period = 20, 1.0
    server.limit_requests(limit, period)
    server.latency = 0.02
    limiter = RateLimiter(rpm=limit, period=period, guard=0.15)
    provider = OpenAIProvider(api_key=KEY, base_url=server.openai_base_url, limiter=limiter)

    def task(i: int) -> Any:
        async def run() -> str:
            return (await provider.complete(ask(f"task {i}"))).text
        return Task(id=f"t{i}", run=run, max_retries=5, retry_backoff_sec=0.05)

    plan = Plan(pools={"default": Pool(max_concurrent=None)},  # all 60 at once
                tasks=tuple(task(i) for i in range(60)))
    result = asyncio.run(Executor(seed=1).execute(plan))
    assert result.status == "succeeded", {t.id: t.error for t in result.tasks.values()
                                          if t.status != "succeeded"}
    assert all(t.output == f"ok: task {i}" for i, t in enumerate(result.tasks.values()))
    rejected = server.count(status=429)
    assert rejected == 0, f"{rejected} requests were rate limited"
    assert server.max_in_window(period) <= limit
    assert server.count() == 60


def test_burst_recovers_from_429s_when_the_configured_limit_is_too_high(
        server: FakeLLMServer) -> None:
    """Misconfigured rpm (3x the real limit): the server's 429s + headers slow the whole
    provider down and the engine's retries finish every task."""
    server.limit_requests(10, 0.5)
    limiter = RateLimiter(rpm=30, period=0.5, breaker_base=0.2, breaker_max=1.0)
    provider = OpenAIProvider(api_key=KEY, base_url=server.openai_base_url, limiter=limiter)

    def task(i: int) -> Any:
        async def run() -> str:
            return (await provider.complete(ask(f"task {i}"))).text
        return Task(id=f"t{i}", run=run, max_retries=20, retry_backoff_sec=0.05)

    plan = Plan(pools={"default": Pool(max_concurrent=None)},
                tasks=tuple(task(i) for i in range(40)))
    result = asyncio.run(Executor(seed=1).execute(plan))
    assert result.status == "succeeded"
    assert server.count(status=200) == 40
    assert limiter.state().rpm == 10  # corrected from x-ratelimit-limit-requests


# ---- anthropic: ---------------------------------------------------------------------------

def test_anthropic_text_system_and_key_header(server: FakeLLMServer) -> None:
    server.enqueue(Reply.text("hello back"))
    response = call(anthropic_provider(server), ask("hi"))
    assert response.text == "hello back" and response.usage.output_tokens == 2
    body = server.requests[0].body
    assert body["system"] == "be brief" and body["messages"] == [{"role": "user",
                                                                  "content": "hi"}]
    assert KEY in server.requests[0].auth  # x-api-key or Bearer, by SDK version


def test_anthropic_tool_calls_both_ways(server: FakeLLMServer) -> None:
    server.enqueue(Reply.tool_call("read_file", {"path": "x"}))
    history = [Message("user", "go"),
               Message("assistant", "reading", tool_calls=[ToolCall("toolu_1", "read_file",
                                                                    {"path": "y"})]),
               Message("tool", "data", tool_call_id="toolu_1", name="read_file")]
    response = call(anthropic_provider(server), ChatRequest("claude-test", history,
                                                            tools=TOOLS))
    assert response.tool_calls[0].name == "read_file"
    assert response.tool_calls[0].arguments == {"path": "x"}
    assert response.finish_reason == "tool_calls"
    sent = server.requests[0].body
    assert sent["tools"][0]["input_schema"]["required"] == ["path"]
    assert sent["messages"][1]["content"][1] == {"type": "tool_use", "id": "toolu_1",
                                                 "name": "read_file", "input": {"path": "y"}}
    assert sent["messages"][2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "data"}]}


def test_anthropic_structured_output_by_forcing_a_tool(server: FakeLLMServer) -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
    server.enqueue(Reply.json({"ok": True}))
    response = call(anthropic_provider(server), ask(json_schema=schema))
    assert json.loads(response.text) == {"ok": True} and not response.tool_calls
    sent = server.requests[0].body
    assert sent["tool_choice"] == {"type": "tool", "name": "json_output"}
    assert sent["tools"][0]["input_schema"] == schema


def test_anthropic_529_and_429_with_retry_after_ms(server: FakeLLMServer) -> None:
    server.enqueue(Reply.overloaded(), Reply.rate_limited(retry_after_ms=300))
    first = error_of(anthropic_provider(server), ask())
    second = error_of(anthropic_provider(server), ask())
    assert first.retryable and first.status == 529 and "overloaded" in str(first)
    assert second.retryable and second.retry_after == pytest.approx(0.3)


def test_anthropic_auth_error_is_not_retryable_and_hides_the_key(server: FakeLLMServer) -> None:
    server.enqueue(Reply.error(401, f"invalid x-api-key {KEY}", "authentication_error"))
    err = error_of(anthropic_provider(server), ask())
    assert not err.retryable and KEY not in str(err) and "$ANTHROPIC_API_KEY" in str(err)


def test_anthropic_spend_limit_429_is_not_retryable(server: FakeLLMServer) -> None:
    server.enqueue(Reply.error(429, "Monthly usage threshold reached",
                               "enforced_spend_limit_reached"))
    err = error_of(anthropic_provider(server), ask())
    assert not err.retryable and "spend limit" in str(err)


def test_anthropic_headers_feed_the_limiter(server: FakeLLMServer) -> None:
    server.limit_requests(7, 60.0)
    limiter = RateLimiter(rpm=100)
    call(anthropic_provider(server, limiter=limiter), ask())
    assert limiter.state().rpm == 7
