"""The agent loop's safeguards for small models, with scripted providers (FunctionProvider):
repeated calls are not run again, no progress forces the answer, action JSON never becomes a
task's output, and a prose answer cut off at max_tokens is kept."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import parallel_agents as pa
from parallel_agents.providers.base import (
    ChatRequest,
    ChatResponse,
    FunctionProvider,
    Message,
    ToolCall,
    ToolSpec,
    Usage,
)
from parallel_agents.providers.local import action_schema, string_limit, to_chat_messages

PRICES = {"scripted:m": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}
ACTION_JSON = ('{"thought": "I need to list the files", "action": {"tool": "list_files", '
               '"arguments": {"path": "."}}}')


def call(name: str, **arguments: Any) -> ChatResponse:
    return ChatResponse(text="thinking", tool_calls=[ToolCall(f"c-{name}", name, arguments)],
                        usage=Usage(100, 10), finish_reason="tool_calls")


def answer(text: str, finish_reason: str = "stop") -> ChatResponse:
    return ChatResponse(text=text, usage=Usage(200, 20), finish_reason=finish_reason)


def run(task: pa.Task, provider: FunctionProvider, tmp_path: Path,
        events: list[pa.Event] | None = None) -> pa.RunResult:
    return pa.run(pa.Plan(tasks=[task], prices=PRICES), providers={"scripted": provider},
                  workspace=tmp_path, on_event=(events.append if events is not None else None))


def task(**kw: Any) -> pa.Task:
    kw.setdefault("id", "t")
    kw.setdefault("agent", "backend")
    kw.setdefault("prompt", "Build it")
    kw.setdefault("model", "scripted:m")
    return pa.Task(**kw)


def test_a_repeated_identical_call_is_not_run_again_and_forces_the_answer(
        tmp_path: Path) -> None:
    runs: list[str] = []

    def count(topic: str) -> str:
        """Look a topic up."""
        runs.append(topic)
        return f"facts about {topic}"

    def handler(request: ChatRequest) -> ChatResponse:
        return call("count", topic="menus") if request.tools else answer("Menus need prices.")

    provider = FunctionProvider(handler)
    events: list[pa.Event] = []
    result = run(task(tools=[count]), provider, tmp_path, events)
    out = result.tasks["t"]
    assert result.status == "succeeded", out.error
    assert out.output == "Menus need prices."
    assert runs == ["menus"]  # the second, identical call was answered from the first
    # call 1 runs the tool, call 2 repeats it, call 3 offers no tools: 3 of 10 iterations
    assert [bool(r.tools) for r in provider.requests] == [True, True, False]
    repeat = [m for m in provider.requests[2].messages if m.role == "tool"][-1]
    assert "already called count" in repeat.content and "facts about menus" in repeat.content
    assert any("no progress" in (e.message or "") for e in events if e.kind == "task_progress")


def test_same_tool_with_other_arguments_is_progress(tmp_path: Path) -> None:
    steps = [call("write_file", path="a.md", content="A"),
             call("write_file", path="b.md", content="B"),
             call("read_file", path="a.md"), answer("Wrote a.md and b.md.")]
    provider = FunctionProvider(lambda request: steps.pop(0))
    result = run(task(), provider, tmp_path)
    assert result.tasks["t"].output == "Wrote a.md and b.md."
    assert all(r.tools for r in provider.requests)  # never forced: each call was new
    assert (tmp_path / "b.md").read_text() == "B"


def test_failing_calls_twice_in_a_row_force_the_answer(tmp_path: Path) -> None:
    paths = iter(["../x1", "../x2", "../x3", "../x4"])

    def handler(request: ChatRequest) -> ChatResponse:
        return call("read_file", path=next(paths)) if request.tools else answer("Nothing found.")

    provider = FunctionProvider(handler)
    result = run(task(), provider, tmp_path)
    assert result.tasks["t"].output == "Nothing found."
    assert [bool(r.tools) for r in provider.requests] == [True, True, False]


def test_action_json_as_the_answer_is_asked_again_without_the_tool_turns(
        tmp_path: Path) -> None:
    steps = [call("write_file", path="menu.md", content="# Menu"), answer(ACTION_JSON),
             answer("I wrote the menu to menu.md.")]
    provider = FunctionProvider(lambda request: steps.pop(0))
    result = run(task(max_iterations=2), provider, tmp_path)
    out = result.tasks["t"]
    assert out.output == "I wrote the menu to menu.md."
    again = provider.requests[-1]
    assert not again.tools
    assert not any(m.role == "tool" or m.tool_calls for m in again.messages)
    assert "menu.md" in again.messages[-1].content and "not JSON" in again.messages[-1].content
    assert out.usage["calls"] == 3


@pytest.mark.parametrize("reask, expected", [
    ('{"thought": "The menu is saved", "action": {"tool": "final_answer", '
     '"answer": "Saved the menu."}}', "Saved the menu."),
    # broken JSON, as small models write it: the thought is still read
    ('{"thought": "I listed the files", "action": {"tool": "list_files", '
     '"arguments": {"path: "/x"}}}', "I listed the files"),
    ('```json\n{"action": {"tool": "list_files", "arguments": {}}}\n```', "Done; files "
     "written: menu.md."),
])
def test_action_json_never_becomes_the_output(tmp_path: Path, reask: str,
                                              expected: str) -> None:
    steps = [call("write_file", path="menu.md", content="# Menu"),
             answer('{"action": {"tool": "list_files", "arguments": {}}}'), answer(reask)]
    provider = FunctionProvider(lambda request: steps.pop(0))
    result = run(task(max_iterations=2), provider, tmp_path)
    out = result.tasks["t"].output
    assert out == expected
    assert '"action"' not in out and "{" not in out


def test_prose_that_merely_mentions_json_is_kept(tmp_path: Path) -> None:
    text = 'The API returns {"id": 1, "time": "19:00"} for a booking.'
    provider = FunctionProvider(lambda request: answer(text))
    result = run(task(), provider, tmp_path)
    assert result.tasks["t"].output == text
    assert len(provider.requests) == 1


def test_a_prose_answer_cut_off_at_max_tokens_is_kept_and_noted(tmp_path: Path) -> None:
    provider = FunctionProvider(lambda request: answer("The booking page has a form and",
                                                       finish_reason="length"))
    events: list[pa.Event] = []
    result = run(task(), provider, tmp_path, events)
    out = result.tasks["t"]
    assert result.status == "succeeded" and out.attempts == 1
    assert out.output == "The booking page has a form and"
    notes = [e.message for e in events if e.kind == "task_progress"]
    assert any("cut off at max_tokens" in (n or "") for n in notes)


def test_a_json_answer_cut_off_is_still_a_retryable_error(tmp_path: Path) -> None:
    replies = [answer('{"tables": ["book', finish_reason="length"), answer('{"tables": []}')]
    provider = FunctionProvider(lambda request: replies.pop(0))
    schema = {"type": "object", "properties": {"tables": {"type": "array"}},
              "required": ["tables"]}
    result = run(task(output_schema=schema, max_retries=1, retry_backoff_sec=0), provider,
                 tmp_path)
    out = result.tasks["t"]
    assert out.status == "succeeded" and out.attempts == 2 and out.output == {"tables": []}


# -- the local provider's prompt and grammar (no model needed) -------------------------
WRITE = ToolSpec("write_file", "Write a file.", {
    "type": "object", "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
    "required": ["path", "content"]})


def test_after_tool_turns_a_request_without_tools_shows_no_action_json() -> None:
    messages = [Message("system", "You are a backend engineer."),
                Message("user", "Build the API."),
                Message("assistant", "save it", tool_calls=[
                    ToolCall("1", "write_file", {"path": "api.md", "content": "# API"})]),
                Message("tool", "wrote 5 characters to api.md", tool_call_id="1",
                        name="write_file")]
    chat = to_chat_messages(ChatRequest("m", messages, tools=[]))
    assert [m["role"] for m in chat] == ["system", "user"]
    text = chat[-1]["content"]
    assert "Build the API." in text and "You saved api.md." in text
    assert '"action"' not in text and '"thought"' not in text and "characters" not in text
    # with tools the turns stay actions, so the model keeps to the format
    with_tools = to_chat_messages(ChatRequest("m", messages, tools=[WRITE]))
    assert any('"action"' in m["content"] for m in with_tools if m["role"] == "assistant")


def test_the_tool_example_uses_the_file_the_prompt_names_never_a_fixed_one() -> None:
    def system(prompt: str) -> str:
        chat = to_chat_messages(ChatRequest("m", [Message("user", prompt)], tools=[WRITE]))
        return chat[0]["content"]

    assert '"path": "booking.md"' in system("Design it. Save your work to `booking.md`.")
    assert '"path": "audit-the-api.md"' in system("Audit the API for injection.")
    assert "summary.md" not in system("Audit the API for injection.")


def test_action_strings_are_bounded_so_the_action_fits_in_max_tokens() -> None:
    schema = action_schema(ChatRequest("m", [Message("user", "x")], tools=[WRITE],
                                       max_tokens=320))
    branches = schema["properties"]["action"]["oneOf"]
    write = next(b for b in branches if b["properties"]["tool"]["const"] == "write_file")
    assert write["properties"]["arguments"]["properties"]["content"]["maxLength"] == \
        string_limit(320) < 320 * 4
    final = next(b for b in branches if b["properties"]["tool"]["const"] == "final_answer")
    assert final["properties"]["answer"]["maxLength"] == string_limit(320)
    assert json.dumps(WRITE.parameters).count("maxLength") == 0  # the tool's spec is untouched


def test_a_final_answer_cut_off_inside_its_string_is_kept_as_prose() -> None:
    from parallel_agents.providers.local import _cut_off_answer

    cut = '{"thought": "done", "action": {"tool": "final_answer", "answer": "The page has\\n a fo'
    assert _cut_off_answer(cut) == "The page has\n a fo"
    assert _cut_off_answer(cut[:-3] + '\\u00') == "The page has\n a"  # half an escape dropped
    # a tool call (or a thought) cut off is not an answer: the provider raises, retryable
    assert _cut_off_answer('{"thought": "x", "action": {"tool": "write_file", "argu') is None
    assert _cut_off_answer('{"thought": "I will wri') is None


# -- the coordinator's defaults for planned tasks ----------------------------------------
def _planned(monkeypatch: pytest.MonkeyPatch, **kw: Any) -> list[dict[str, Any]]:
    import asyncio

    from parallel_agents.coordinator import Coordinator

    monkeypatch.delenv("PARALLEL_AGENTS_MODEL", raising=False)
    decomposition = asyncio.run(Coordinator(None, **kw).plan(
        "Build a restaurant website with booking", template="full_stack"))
    return decomposition.tasks


def test_planned_tasks_on_the_local_model_get_small_budgets_and_their_own_file(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from parallel_agents.coordinator import LOCAL_TASK_DEFAULTS

    tasks = _planned(monkeypatch)
    assert len(tasks) >= 3
    for t in tasks:
        assert t["max_iterations"] == LOCAL_TASK_DEFAULTS["max_iterations"] <= 3
        assert t["max_tokens"] == LOCAL_TASK_DEFAULTS["max_tokens"]
        assert f"`{t['id']}.md`" in t["prompt"]
        assert t["output_file"] == f"answers/{t['id']}.md"


def test_other_models_and_explicit_settings_keep_their_budgets(
        monkeypatch: pytest.MonkeyPatch) -> None:
    remote = _planned(monkeypatch, model="openai:gpt-4o-mini")
    assert all("max_iterations" not in t and "max_tokens" not in t for t in remote)
    own = _planned(monkeypatch, task_defaults={"max_iterations": 6})
    assert all(t["max_iterations"] == 6 and t["max_tokens"] == 320 for t in own)


def test_a_repeat_among_new_calls_still_forces_the_answer(tmp_path: Path) -> None:
    both = ChatResponse(text="", tool_calls=[
        ToolCall("1", "write_file", {"path": "a.md", "content": "A"}),
        ToolCall("2", "write_file", {"path": "a.md", "content": "A"}),
        ToolCall("3", "write_file", {"path": "b.md", "content": "B"})], usage=Usage(10, 10))
    steps = [both, answer("Wrote a.md and b.md.")]
    provider = FunctionProvider(lambda request: steps.pop(0))
    result = run(task(), provider, tmp_path)
    assert result.tasks["t"].output == "Wrote a.md and b.md."
    assert [bool(r.tools) for r in provider.requests] == [True, False]
    replies = [m.content for m in provider.requests[1].messages if m.role == "tool"]
    assert replies[1].startswith("You already called write_file")
    assert (tmp_path / "b.md").read_text() == "B"  # the new call in the same turn still ran
