"""Resolving `PROVIDER:MODEL` specs, configuration, and record/replay cassettes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from parallel_agents._exceptions import UsageError
from parallel_agents.providers.anthropic import AnthropicProvider
from parallel_agents.providers.base import ChatRequest, Message, ProviderError
from parallel_agents.providers.local import LocalProvider
from parallel_agents.providers.openai_compat import OpenAIProvider
from parallel_agents.providers.registry import LOCAL_MODEL, get_provider, resolve
from parallel_agents.providers.replay import ReplayProvider, request_key
from tests.fakes.openai_server import FakeLLMServer, Reply

KEY = "sk-live-TOPSECRET-9876543210"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as srv:
        yield srv


def test_unknown_provider_suggests_the_close_one() -> None:
    with pytest.raises(UsageError, match=r"unknown provider 'opnai'.*did you mean 'openai'\?"):
        get_provider("opnai:gpt-4o-mini", env={})


def test_missing_model_name_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="no model name after 'openai:'"):
        get_provider("openai:", env={})


def test_no_key_and_no_server_falls_back_to_local() -> None:
    for spec in ("openai:gpt-4o-mini", "anthropic:claude-3-5-haiku-latest", "local:", "tiny"):
        res = resolve(spec, env={})
        assert isinstance(res.provider, LocalProvider) and res.provider_name == "local"
    res = resolve("openai:gpt-4o-mini", env={})
    assert res.model == LOCAL_MODEL and "OPENAI_API_KEY" in (res.fallback or "")
    assert resolve("local:", env={}).provider is resolve("anthropic:x", env={}).provider


def test_env_vars_configure_remote_providers() -> None:
    res = resolve("openai:gpt-4o-mini", env={"OPENAI_API_KEY": KEY})
    assert isinstance(res.provider, OpenAIProvider) and res.model == "gpt-4o-mini"
    assert res.fallback is None
    res = resolve("openai:llama3", env={"OPENAI_BASE_URL": "http://127.0.0.1:11434/v1"})
    assert isinstance(res.provider, OpenAIProvider)
    assert res.provider.base_url == "http://127.0.0.1:11434/v1"
    res = resolve("anthropic:claude", env={"ANTHROPIC_API_KEY": KEY,
                                           "ANTHROPIC_BASE_URL": "http://127.0.0.1:1"})
    assert isinstance(res.provider, AnthropicProvider)
    assert KEY not in repr(res.provider)


def test_plan_config_wins_over_env_and_names_its_key_variable() -> None:
    config = {"openai": {"base_url": "http://127.0.0.1:8000/v1", "api_key_env": "MY_KEY",
                         "rpm": 100, "tpm": 50000}}
    res = resolve("openai:m", config, env={"OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
                                           "MY_KEY": KEY})
    assert isinstance(res.provider, OpenAIProvider)
    assert res.provider.base_url == "http://127.0.0.1:8000/v1"
    assert res.provider.limiter("m").state().rpm == 100
    assert res.provider.limiter("m").state().tpm == 50000


def test_bad_provider_config_lists_every_problem() -> None:
    with pytest.raises(UsageError) as info:
        resolve("openai:m", {"openai": {"rpm": 0, "base_ulr": "x"}, "opneai": {}}, env={})
    text = str(info.value)
    assert "providers.openai.rpm" in text and "providers.openai.base_ulr" in text
    assert "providers.opneai: unknown provider 'opneai'; did you mean 'openai'?" in text


def test_record_then_replay_offline_with_no_secret_in_the_cassette(
        server: FakeLLMServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    config = {"openai": {"base_url": server.openai_base_url}}
    request = ChatRequest("gpt-test", [Message("user", f"my key is {KEY}, summarise")])
    server.enqueue(Reply.text(f"you said {KEY}"))

    async def record() -> str:
        provider = get_provider("openai:gpt-test", config, record_dir=tmp_path)
        try:
            return (await provider.complete(request)).text
        finally:
            await provider.aclose()

    assert KEY in asyncio.run(record())  # the live answer is untouched
    files = list(tmp_path.glob("*.json"))
    assert [f.stem for f in files] == [request_key("openai", request)]
    stored = files[0].read_text()
    assert KEY not in stored and "[redacted]" in stored
    assert json.loads(stored)["request"]["model"] == "gpt-test"

    server.reset()
    monkeypatch.delenv("OPENAI_API_KEY")
    replay = get_provider("openai:gpt-test", config, replay_dir=tmp_path)
    assert isinstance(replay, ReplayProvider)
    answer = asyncio.run(replay.complete(request))
    assert answer.text == "you said [redacted]" and answer.usage.output_tokens > 0
    assert server.count() == 0  # replay never touches the network


def test_replay_miss_names_the_hash_and_the_directory(tmp_path: Path) -> None:
    replay = ReplayProvider(tmp_path, "openai")
    request = ChatRequest("gpt-test", [Message("user", "never recorded")])
    with pytest.raises(ProviderError) as info:
        asyncio.run(replay.complete(request))
    err = info.value
    assert not err.retryable
    assert request_key("openai", request) in str(err) and str(tmp_path) in str(err)
    assert "--record" in str(err)


def test_request_key_depends_on_provider_model_and_content() -> None:
    a = ChatRequest("m", [Message("user", "x")])
    assert request_key("openai", a) == request_key("openai", ChatRequest("m", [Message("user",
                                                                                     "x")]))
    assert request_key("openai", a) != request_key("anthropic", a)
    assert request_key("openai", a) != request_key("openai", ChatRequest("m2", a.messages))
    assert request_key("openai", a) != request_key("openai", ChatRequest("m", [Message("user",
                                                                                     "y")]))
