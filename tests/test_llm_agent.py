"""The LLM agent through the public API, with scripted providers (FunctionProvider)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import parallel_agents as pa
from parallel_agents.agents.llm import DEPENDENCY_CHARS
from parallel_agents.providers.base import (
    ChatRequest,
    ChatResponse,
    FunctionProvider,
    ProviderError,
    ToolCall,
    Usage,
)

PRICES = {"scripted:m": {"input_per_mtok": 1.0, "output_per_mtok": 2.0,
                         "cached_input_per_mtok": 0.5}}


def run(plan: pa.Plan, provider: FunctionProvider, **kw: Any) -> pa.RunResult:
    return pa.run(plan, providers={"scripted": provider}, **kw)


def scripted(*steps: ChatResponse | Callable[[ChatRequest], ChatResponse]) -> FunctionProvider:
    """Answers in order, one per call, whatever the task (single-task plans)."""
    queue = list(steps)

    def handler(request: ChatRequest) -> ChatResponse:
        step = queue.pop(0)
        return step(request) if callable(step) else step

    return FunctionProvider(handler)


def call(name: str, **arguments: Any) -> ChatResponse:
    return ChatResponse(text="", tool_calls=[ToolCall(f"c-{name}", name, arguments)],
                        usage=Usage(100, 10), finish_reason="tool_calls")


def answer(text: str, usage: Usage | None = None) -> ChatResponse:
    return ChatResponse(text=text, usage=usage or Usage(200, 20))


def llm_task(**kw: Any) -> pa.Task:
    kw.setdefault("id", "t")
    kw.setdefault("agent", "backend")
    kw.setdefault("prompt", "Build it")
    kw.setdefault("model", "scripted:m")
    return pa.Task(**kw)


def test_tool_loop_writes_reads_and_lists_files_in_the_workspace(tmp_path: Path) -> None:
    seen: list[str] = []

    def after_list(request: ChatRequest) -> ChatResponse:
        seen.append(request.messages[-1].content)
        return answer("Wrote the API.")

    provider = scripted(call("write_file", path="src/api.py", content="print('hi')\n"),
                        call("read_file", path="src/api.py"),
                        call("list_files"), after_list)
    events: list[pa.Event] = []
    result = run(pa.Plan(tasks=[llm_task()], prices=PRICES), provider, workspace=tmp_path,
                 on_event=events.append)
    task = result.tasks["t"]
    assert result.status == "succeeded", task.error
    assert task.output == "Wrote the API."
    assert (tmp_path / "src/api.py").read_text() == "print('hi')\n"
    assert task.files == [str((tmp_path / "src/api.py").resolve())]
    # the read result and the listing went back to the model as tool messages
    tool_msgs = [m for m in provider.requests[2].messages if m.role == "tool"]
    assert tool_msgs[-1].content == "print('hi')\n" and tool_msgs[-1].name == "read_file"
    assert seen == ["src/api.py"]
    # system prompt of the role, the prompt, and tools offered
    first = provider.requests[0]
    assert first.messages[0].role == "system" and "backend engineer" in first.messages[0].content
    assert first.messages[1].content.startswith("Build it")
    assert {t.name for t in first.tools} == {"read_file", "write_file", "list_files"}
    assert first.model == "m"
    # usage and cost: 3 tool calls of 100+10 tokens, 1 answer of 200+20
    assert task.usage["input_tokens"] == 500 and task.usage["output_tokens"] == 50
    assert task.usage["calls"] == 4
    assert task.cost_usd == pytest.approx((500 * 1.0 + 50 * 2.0) / 1e6)
    progress = [e for e in events if e.kind == "task_progress"]
    assert len(progress) == 4 and progress[0].message.startswith("iteration 1/10: write_file")
    done = next(e for e in events if e.kind == "task_succeeded")
    assert done.data["cost_usd"] == pytest.approx(task.cost_usd)
    assert done.data["usage"]["input_tokens"] == 500


@pytest.mark.parametrize("path", ["../escape.txt", "/etc/passwd", "a/../../escape.txt",
                                  "link/escape.txt", "link"])
def test_paths_outside_the_workspace_are_refused(tmp_path: Path, path: str) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, ws / "link")
    provider = scripted(call("write_file", path=path, content="pwned"),
                        call("read_file", path=path), answer("ok"))
    result = run(pa.Plan(tasks=[llm_task()], prices=PRICES), provider, workspace=ws)
    assert result.status == "succeeded"
    replies = [m.content for m in provider.requests[-1].messages if m.role == "tool"]
    assert all(r.startswith("error:") for r in replies), replies
    assert any("outside the workspace" in r for r in replies)
    assert not (tmp_path / "escape.txt").exists()
    assert list(outside.iterdir()) == []
    assert result.tasks["t"].files == []


def test_max_iterations_ends_with_a_call_that_offers_no_tools(tmp_path: Path) -> None:
    def always_tool(request: ChatRequest) -> ChatResponse:
        if not request.tools:
            return answer("final")
        return call("list_files")

    provider = FunctionProvider(always_tool)
    result = run(pa.Plan(tasks=[llm_task(max_iterations=3)], prices=PRICES), provider,
                 workspace=tmp_path)
    assert result.tasks["t"].output == "final"
    assert len(provider.requests) == 3
    assert [bool(r.tools) for r in provider.requests] == [True, True, False]


def test_dependency_outputs_go_into_the_prompt_truncated(tmp_path: Path) -> None:
    huge = "A" * 50_000 + "THE-END"

    def handler(request: ChatRequest) -> ChatResponse:
        return answer("schema: users(id)" if "schema" in request.messages[1].content[:40]
                      else "done")

    provider = FunctionProvider(handler)
    plan = pa.Plan(prices=PRICES, tasks=[
        llm_task(id="schema", agent="database", prompt="schema please"),
        pa.Task(id="blob", run=lambda: huge),
        pa.Task(id="data", run=lambda: {"tables": ["users"], "n": 1}),
        llm_task(id="api", prompt="Write the API", depends_on=["schema", "blob", "data"]),
    ])
    result = run(plan, provider, workspace=tmp_path)
    assert result.status == "succeeded"
    api = next(r for r in provider.requests if r.messages[1].content.startswith("Write the API"))
    prompt = api.messages[1].content
    assert "### schema\nschema: users(id)" in prompt
    assert '### data\n{"tables":["users"],"n":1}' in prompt
    assert "THE-END" in prompt and "characters cut" in prompt  # head and tail kept
    assert len(prompt) < DEPENDENCY_CHARS + 2_000


def test_user_python_tools_get_a_schema_from_type_hints(tmp_path: Path) -> None:
    calls: list[tuple[str, int]] = []

    @pa.tool
    def lookup_price(item: str, quantity: int = 1) -> dict:
        """Price of an item on the menu, in cents."""
        calls.append((item, quantity))
        return {"item": item, "cents": 250 * quantity}

    async def shout(text: str) -> str:
        """Upper-case some text."""
        return text.upper()

    provider = scripted(
        ChatResponse(text="", tool_calls=[
            ToolCall("1", "lookup_price", {"item": "soup", "quantity": 2}),
            ToolCall("2", "lookup_price", {"item": "soup", "quantity": "many"}),
            ToolCall("3", "shout", {"text": "hi"}),
            ToolCall("4", "nope", {}),
        ], usage=Usage(10, 10)),
        answer("done"),
    )
    result = run(pa.Plan(tasks=[llm_task(tools=[lookup_price, shout])], prices=PRICES),
                 provider, workspace=tmp_path)
    assert result.status == "succeeded"
    spec = {t.name: t for t in provider.requests[0].tools}
    params = spec["lookup_price"].parameters
    assert params["properties"]["item"]["type"] == "string"
    assert params["properties"]["quantity"]["type"] == "integer"
    assert params["required"] == ["item"]
    assert spec["lookup_price"].description == "Price of an item on the menu, in cents."
    replies = [m.content for m in provider.requests[1].messages if m.role == "tool"]
    assert json.loads(replies[0]) == {"item": "soup", "cents": 500}
    assert replies[1].startswith("error: bad arguments for lookup_price: quantity")
    assert replies[2] == "HI"
    assert replies[3].startswith("error: unknown tool 'nope'")
    assert calls == [("soup", 2)]


def test_retryable_provider_errors_are_retried_by_the_engine_not_the_agent(
        tmp_path: Path) -> None:
    attempts: list[int] = []

    def flaky(request: ChatRequest) -> ChatResponse:
        attempts.append(1)
        if len(attempts) < 3:
            raise ProviderError("HTTP 500 from the server", status=500, retryable=True)
        return answer("ok")

    events: list[pa.Event] = []
    result = run(pa.Plan(tasks=[llm_task(max_retries=3, retry_backoff_sec=0)], prices=PRICES),
                 FunctionProvider(flaky), workspace=tmp_path, on_event=events.append)
    assert result.status == "succeeded"
    assert result.tasks["t"].attempts == 3  # each provider failure is one engine attempt
    assert sum(e.kind == "task_retrying" for e in events) == 2


def test_non_retryable_provider_error_fails_at_once(tmp_path: Path) -> None:
    def bad(request: ChatRequest) -> ChatResponse:
        raise ProviderError("HTTP 400: invalid model", status=400, retryable=False)

    result = run(pa.Plan(tasks=[llm_task(max_retries=5, retry_backoff_sec=0),
                                llm_task(id="after", depends_on=["t"])], prices=PRICES),
                 FunctionProvider(bad), workspace=tmp_path)
    assert result.tasks["t"].status == "failed"
    assert result.tasks["t"].attempts == 1
    assert "HTTP 400: invalid model" in result.tasks["t"].error
    assert result.tasks["after"].status == "skipped"


def test_spend_of_a_failed_attempt_still_counts(tmp_path: Path) -> None:
    def handler(request: ChatRequest) -> ChatResponse:
        if len(request.messages) == 2:
            return call("list_files")
        raise ProviderError("HTTP 503", status=503, retryable=True)

    result = run(pa.Plan(tasks=[llm_task()], prices=PRICES), FunctionProvider(handler),
                 workspace=tmp_path)
    task = result.tasks["t"]
    assert task.status == "failed"
    assert task.usage["input_tokens"] == 100
    assert result.cost_usd == pytest.approx((100 + 20) / 1e6)


def test_output_schema_parses_json_and_retries_malformed_output(tmp_path: Path) -> None:
    schema = {"type": "object", "properties": {"score": {"type": "integer"}},
              "required": ["score"]}
    provider = scripted(answer("not json at all"), answer('```json\n{"score": 7}\n```'))
    result = run(pa.Plan(tasks=[llm_task(output_schema=schema, max_retries=1,
                                         retry_backoff_sec=0, output_file="out/score.json")],
                         prices=PRICES), provider, workspace=tmp_path)
    task = result.tasks["t"]
    assert task.status == "succeeded", task.error
    assert task.output == {"score": 7}
    assert task.history[0].error.startswith("malformed output")
    assert provider.requests[0].json_schema == schema
    assert json.loads((tmp_path / "out/score.json").read_text()) == {"score": 7}
    assert str((tmp_path / "out/score.json").resolve()) in task.files


def test_without_a_workspace_a_temp_folder_is_used_and_announced() -> None:
    provider = scripted(call("write_file", path="notes.md", content="# notes"), answer("ok"))
    events: list[pa.Event] = []
    result = run(pa.Plan(tasks=[llm_task()], prices=PRICES), provider, on_event=events.append)
    [written] = result.tasks["t"].files
    assert Path(written).read_text() == "# notes"
    notes = [e.message for e in events if e.kind == "task_progress"]
    assert any("no workspace configured" in (m or "") and str(Path(written).parent) in m
               for m in notes)


def test_costs_add_up_per_task_pool_agent_and_run(tmp_path: Path) -> None:
    provider = FunctionProvider(lambda r: answer("x", Usage(1_000, 500, cached_tokens=400)))
    plan = pa.Plan(
        pools={"codegen": pa.Pool(max_concurrent=2), "security": pa.Pool(max_concurrent=1)},
        prices=PRICES,
        tasks=[llm_task(id="fe", agent="frontend", pool="codegen"),
               llm_task(id="be", agent="backend", pool="codegen"),
               llm_task(id="sec", agent="security", pool="security", depends_on=["be"]),
               pa.Task(id="free", run=lambda: 1)])
    result = run(plan, provider, workspace=tmp_path)
    one = (600 * 1.0 + 400 * 0.5 + 500 * 2.0) / 1e6
    assert result.tasks["fe"].cost_usd == pytest.approx(one)
    assert result.cost_usd == pytest.approx(3 * one)
    assert result.usage == {"input_tokens": 3000, "output_tokens": 1500, "cached_tokens": 1200}
    assert result.cost_by_pool == pytest.approx({"codegen": 2 * one, "security": one})
    assert result.cost_by_agent == pytest.approx({"frontend": one, "backend": one,
                                                  "security": one})
    data = result.to_dict()
    assert data["cost_usd"] == pytest.approx(3 * one)
    assert data["tasks"]["sec"]["usage"]["cached_tokens"] == 400
    json.dumps(data)


def test_unknown_provider_is_refused_before_anything_runs() -> None:
    plan = pa.Plan(tasks=[llm_task(model="scriptd:m")])
    with pytest.raises(pa.PlanError) as info:
        run(plan, FunctionProvider(lambda r: "x"))
    assert "did you mean 'scripted'" in str(info.value)


def test_tasks_run_in_parallel(tmp_path: Path) -> None:
    live = 0
    peak = 0

    async def slow(request: ChatRequest) -> ChatResponse:
        nonlocal live, peak
        live += 1
        peak = max(peak, live)
        await asyncio.sleep(0.2)
        live -= 1
        return answer("ok")

    plan = pa.Plan(prices=PRICES, tasks=[llm_task(id=f"t{i}") for i in range(6)])
    result = run(plan, FunctionProvider(slow), workspace=tmp_path)
    assert result.status == "succeeded"
    assert peak >= 4  # the default pool allows 4 at once


def test_time_queued_for_a_model_that_serves_one_call_at_a_time_is_not_work(
        tmp_path: Path) -> None:
    """Tasks share a provider that serves one call at a time (as the embedded local model
    does) and counts how long each call queued (`note_wait`): the run's serial time leaves
    the queueing out, so the speedup is about 1x, not the 3x the overlapping wall times would
    claim; a task that times out while it queues did no work at all."""
    from parallel_agents.providers.base import note_wait

    busy = asyncio.Lock()
    call_seconds = 0.15

    async def one_at_a_time(request: ChatRequest) -> ChatResponse:
        loop = asyncio.get_running_loop()
        asked, served = loop.time(), None
        try:
            async with busy:
                served = loop.time()
                await asyncio.sleep(call_seconds)
        finally:  # also when cancelled while queued
            note_wait((served if served is not None else loop.time()) - asked)
        return ChatResponse(text="done", usage=Usage(10, 1))

    plan = pa.Plan(tasks=[
        *(pa.Task(id=f"t{i}", prompt="Go.", model="scripted:m", max_iterations=1)
          for i in range(3)),
        pa.Task(id="late", prompt="Go.", model="scripted:m", max_iterations=1,
                timeout_sec=0.2, max_retries=0, priority="low")])
    result = asyncio.run(pa.Executor(providers={"scripted": FunctionProvider(one_at_a_time)},
                                     workspace=tmp_path).execute(plan))
    assert [result.tasks[f"t{i}"].status for i in range(3)] == ["succeeded"] * 3
    late = result.tasks["late"].history[-1]
    # It queued until its 0.2 s timeout (the rest of its duration is the attempt's own
    # overhead, which a loaded machine stretches).
    assert late.outcome == "timeout" and 0.15 <= late.waited <= late.duration
    waits = sorted(result.tasks[f"t{i}"].history[-1].waited for i in range(3))
    assert waits[0] < 0.05 and waits[2] > 1.5 * call_seconds  # the last one queued twice
    assert result.serial_seconds == pytest.approx(3 * call_seconds, abs=0.12)
    assert result.speedup < 1.4
    longest = max(result.tasks.values(), key=lambda r: r.history[-1].waited)
    assert result.to_dict()["tasks"][longest.id]["history"][-1]["waited_seconds"] > 0.2


def test_a_cached_llm_task_leaves_its_files_in_the_new_runs_workspace(tmp_path: Path) -> None:
    """Served from the cache, a task that wrote files leaves them where running it would
    have: they are restored from the checkpoint taken after it in the first run."""
    from parallel_agents.store import RunStore

    provider = scripted(call("write_file", path="docs/api.md", content="# The API\n"),
                        answer("Documented the API."))
    plan = pa.Plan(tasks=[llm_task(cache=True)], prices=PRICES)
    with RunStore(tmp_path / "runs.db") as store:
        first = asyncio.run(pa.Executor(store=store, providers={"scripted": provider})
                            .execute(plan))
        again = asyncio.run(pa.Executor(store=store, providers={"scripted": provider})
                            .execute(plan))
        first_ws, again_ws = (Path(store.run_workspace(r.run_id))
                              for r in (first, again))
    assert first.status == again.status == "succeeded"
    assert again.tasks["t"].cached and len(provider.requests) == 2  # not asked again
    assert first_ws != again_ws
    assert (again_ws / "docs/api.md").read_text() == "# The API\n"
    assert again.tasks["t"].files == [str((again_ws / "docs/api.md").resolve())]


def test_waiting_is_remembered_across_a_resume(tmp_path: Path) -> None:
    """The store keeps each attempt's waiting time: re-finishing the run with `resume` gives
    the same serial time, not one that counts the queueing as work again."""
    from parallel_agents.providers.base import note_wait
    from parallel_agents.store import RunStore

    busy = asyncio.Lock()

    async def one_at_a_time(request: ChatRequest) -> ChatResponse:
        loop = asyncio.get_running_loop()
        asked = loop.time()
        async with busy:
            note_wait(loop.time() - asked)
            await asyncio.sleep(0.1)
        return ChatResponse(text="done", usage=Usage(10, 1))

    providers = {"scripted": FunctionProvider(one_at_a_time)}
    plan = pa.Plan(tasks=[pa.Task(id=f"t{i}", prompt="Go.", model="scripted:m",
                                  max_iterations=1) for i in range(3)])
    with RunStore(tmp_path / "runs.db") as store:
        first = asyncio.run(pa.Executor(store=store, providers=providers).execute(plan))
        again = asyncio.run(pa.Executor(store=store, providers=providers).resume(first.run_id))
    assert sum(r.history[-1].waited for r in first.tasks.values()) > 0.25
    assert again.serial_seconds == pytest.approx(first.serial_seconds, abs=0.01)
    assert [a.waited for r in again.tasks.values() for a in r.history] == [
        a.waited for r in first.tasks.values() for a in r.history]


def test_a_cached_task_gets_its_own_runs_files_back_in_a_shared_workspace(
        tmp_path: Path) -> None:
    """Runs may share a workspace (`workspace=`): the files a cached task gets back are those
    of the run that produced the cached answer, and a symlink cannot lead them out of the
    workspace."""
    from parallel_agents.store import RunStore

    def writer(request: ChatRequest) -> ChatResponse:
        version = "v1" if "first" in request.messages[1].content else "v2"
        if not any(m.role == "tool" for m in request.messages):
            return call("write_file", path="docs/api.md", content=f"{version}\n")
        return answer(f"wrote {version}")

    providers = {"scripted": FunctionProvider(writer)}

    def plan(prompt: str) -> pa.Plan:
        return pa.Plan(tasks=[llm_task(prompt=prompt, cache=True, max_iterations=2)])

    shared, elsewhere = tmp_path / "shared", tmp_path / "elsewhere"
    with RunStore(tmp_path / "runs.db") as store:
        def run_in(ws: Path, prompt: str) -> pa.RunResult:
            return asyncio.run(pa.Executor(store=store, providers=providers, workspace=ws)
                               .execute(plan(prompt)))

        assert run_in(shared, "the first version").tasks["t"].output == "wrote v1"
        assert run_in(shared, "the second version").tasks["t"].output == "wrote v2"
        (shared / "docs/api.md").write_text("edited by hand\n")
        third = run_in(shared, "the second version")
        assert third.tasks["t"].cached
        assert (shared / "docs/api.md").read_text() == "v2\n"  # run 2's, not run 1's
        # A workspace whose docs/ leads elsewhere: the file is not written through it.
        trap = tmp_path / "trap"
        elsewhere.mkdir()
        trap.mkdir()
        (trap / "docs").symlink_to(elsewhere, target_is_directory=True)
        fourth = run_in(trap, "the first version")
    assert fourth.tasks["t"].cached
    assert not (elsewhere / "api.md").exists()
