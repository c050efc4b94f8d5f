"""Streaming planning: a task starts while the planner is still writing the plan."""

from __future__ import annotations

import asyncio
import json
import random

import pytest
from coord_helpers import FileWriter

from parallel_agents import Plan, Task
from parallel_agents._core._scheduler import (
    RunFinished,
    Scheduler,
    SkipTask,
    StartTask,
    TaskFailed,
    TaskSucceeded,
)
from parallel_agents.coordinator import Coordinator
from parallel_agents.executor import Executor
from parallel_agents.providers.base import ChatRequest, ChatResponse, Provider


class StreamingPlanner(Provider):
    """Writes its plan a few characters at a time; after the first task's JSON it waits
    until that task has started (or gives up after a generous timeout)."""

    name = "streaming"

    def __init__(self, tasks: list[dict], first_started: asyncio.Event) -> None:
        self.text = json.dumps({"tasks": tasks})
        self.first_started = first_started
        self.waited_ok: bool | None = None
        self.finished = False

    async def complete(self, request: ChatRequest) -> ChatResponse:  # pragma: no cover
        raise AssertionError("the streaming path must use stream()")

    async def stream(self, request: ChatRequest):
        first_end = self.text.index("}") + 1
        for i in range(0, first_end, 7):
            yield self.text[i:min(i + 7, first_end)]
            await asyncio.sleep(0)
        try:
            await asyncio.wait_for(self.first_started.wait(), timeout=20)
            self.waited_ok = True
        except TimeoutError:
            self.waited_ok = False
        rest = self.text[first_end:]
        for i in range(0, len(rest), 11):
            yield rest[i:i + 11]
            await asyncio.sleep(0)
        self.finished = True


TASKS = [
    {"id": "schema", "agent": "database", "description": "Design tables", "depends_on": []},
    {"id": "api", "agent": "backend", "description": "Build the API",
     "depends_on": ["schema", "ui"]},  # "ui" comes later: api is held until it arrives
    {"id": "ui", "agent": "frontend", "description": "Build the pages", "depends_on": []},
    {"id": "audit", "agent": "security", "description": "Audit", "depends_on": ["api", "api"]},
]


def test_a_task_starts_before_the_planner_emits_the_last_task(workspace):
    events: list[tuple[str, str]] = []

    async def main():
        started = asyncio.Event()
        provider = StreamingPlanner(TASKS, started)
        writer = FileWriter()

        def run_task(spec, ctx):
            events.append(("start", spec["id"], provider.finished))
            if spec["id"] == "schema":
                started.set()
            return writer(spec, ctx)

        c = Coordinator(provider, workspace=workspace, run_task=run_task, stream=True)
        out = await c.run("Build a restaurant website with booking")
        return provider, out

    provider, out = asyncio.run(main())
    assert provider.waited_ok is True  # schema started while the plan was still streaming
    assert events[0] == ("start", "schema", False)
    order = [e[1] for e in events]
    assert order.index("api") > order.index("ui")  # held until its dependency was known
    assert order.index("audit") > order.index("api")
    assert out.run.status == "succeeded"
    assert [t["id"] for t in out.decomposition.tasks] == ["schema", "ui", "api", "audit"]
    assert "streamed" in out.decomposition.reason
    assert out.final_response.startswith("# Done")


@pytest.mark.timeout(60)
def test_a_streamed_run_is_stored_as_its_plan_grows(workspace, tmp_path):
    """With a store, the stored plan, the task rows and the coordination files follow the
    streamed plan (the store's writer used to die on the first task it did not know)."""
    import yaml

    from parallel_agents.store import RunStore

    started = asyncio.Event()
    started.set()
    with RunStore(tmp_path / "runs.db") as store:
        c = Coordinator(StreamingPlanner(TASKS, started), workspace=workspace,
                        run_task=FileWriter(), stream=True, executor_options={"store": store})
        out = asyncio.run(c.run("Build a restaurant website with booking"))
        saved = store.load_run(out.run.run_id)
    assert out.run.status == "succeeded"
    ids = ["schema", "ui", "api", "audit"]
    assert [t["id"] for t in saved.plan["tasks"]] == ids and saved.has_callables
    assert list(saved.tasks) == ids and set(saved.outputs) == set(ids)
    assert saved.status == "succeeded"
    state = yaml.safe_load((workspace / "project_state.yaml").read_text())
    assert {tid: t["status"] for tid, t in state["tasks"].items()} == dict.fromkeys(
        ids, "succeeded")
    assert len((workspace / "activity_log.md").read_text().splitlines()) == 4 + 4


def test_streamed_cycle_and_unknown_dependency_are_repaired(workspace):
    tasks = [
        {"id": "a", "agent": "backend", "description": "A", "depends_on": ["b"]},
        {"id": "b", "agent": "frontend", "description": "B", "depends_on": ["a"]},
        {"id": "c", "agent": "database", "description": "C", "depends_on": ["ghost"]},
    ]
    started = asyncio.Event()
    started.set()
    provider = StreamingPlanner(tasks, started)
    c = Coordinator(provider, workspace=workspace, run_task=FileWriter(), stream=True)
    out = asyncio.run(c.run("Build a shop"))
    kinds = {r.kind for r in out.decomposition.repairs}
    assert {"cycle", "unknown_dependency"} <= kinds
    assert out.run.status == "succeeded"
    assert set(out.run.tasks) == {"a", "b", "c"}


def test_a_planner_with_nothing_usable_falls_back_to_keywords(workspace):
    started = asyncio.Event()
    started.set()
    provider = StreamingPlanner([], started)
    provider.text = "no json at all, sorry"
    c = Coordinator(provider, workspace=workspace, run_task=FileWriter(), stream=True)
    out = asyncio.run(c.run("Build a restaurant website with booking"))
    assert out.decomposition.source == "keywords"
    assert any(r.kind == "fallback" for r in out.decomposition.repairs)
    assert len(out.run.tasks) >= 3 and out.run.status == "succeeded"


# -- the scheduler and executor hooks ------------------------------------------------------
def _noop() -> None:
    return None


def _plan(*tasks: Task) -> Plan:
    return Plan(tasks=tasks)


def test_scheduler_extend_starts_new_tasks_and_waits_for_close():
    s = Scheduler(_plan(), open_ended=True, rng=random.Random(0))
    assert s.decide() == []  # empty but open: not finished
    a = Task(id="a", run=_noop)
    s.extend(_plan(a))
    assert StartTask("a", 1) in s.decide()
    s.send(TaskSucceeded("a"))
    assert not any(isinstance(d, RunFinished) for d in s.decide())  # still open
    b = Task(id="b", run=_noop, depends_on=("a",))
    c = Task(id="c", run=_noop, depends_on=("d",))
    d = Task(id="d", run=_noop)
    s.extend(_plan(a, b, c, d))
    got = s.decide()
    assert StartTask("b", 1) in got and StartTask("d", 1) in got
    s.send(TaskSucceeded("b"))
    s.send(TaskSucceeded("d"))
    assert StartTask("c", 1) in s.decide()
    s.send(TaskSucceeded("c"))
    s.close()
    assert s.decide()[-1] == RunFinished("succeeded")


def test_scheduler_extend_skips_tasks_behind_a_failed_one():
    s = Scheduler(_plan(), open_ended=True, rng=random.Random(0))
    a = Task(id="a", run=_noop)
    s.extend(_plan(a))
    s.decide()
    s.send(TaskFailed("a", "boom", retryable=False))
    s.decide()
    s.extend(_plan(a, Task(id="b", run=_noop, depends_on=("a",))))
    assert SkipTask("b", "dependency 'a' failed") in s.decide()
    s.close()
    assert s.decide()[-1] == RunFinished("failed")


def test_scheduler_extend_refuses_waves_and_a_changed_prefix():
    a, b = Task(id="a", run=_noop), Task(id="b", run=_noop)
    with pytest.raises(ValueError, match="waves"):
        Scheduler(_plan(a), strategy="waves", open_ended=True).extend(_plan(a, b))
    s = Scheduler(_plan(a), open_ended=True)
    with pytest.raises(ValueError, match="appended"):
        s.extend(_plan(b, a))


def test_executor_execute_stream_runs_tasks_as_they_arrive():
    seen: list[str] = []

    async def main():
        gate = asyncio.Event()

        async def first():
            seen.append("first")
            gate.set()

        async def second():
            seen.append("second")

        async def updates():
            t1 = Task(id="first", run=first)
            yield _plan(t1)
            await asyncio.wait_for(gate.wait(), timeout=20)  # first runs before second exists
            yield _plan(t1, Task(id="second", run=second, depends_on=("first",)))

        return await Executor().execute_stream(_plan(), updates())

    result = asyncio.run(main())
    assert seen == ["first", "second"]
    assert result.status == "succeeded" and set(result.tasks) == {"first", "second"}


def test_executor_execute_stream_reports_a_failed_stream():
    async def main():
        async def updates():
            yield _plan(Task(id="a", run=_noop))
            raise RuntimeError("planner died")

        return await Executor().execute_stream(_plan(), updates())

    result = asyncio.run(main())
    assert result.tasks["a"].status == "succeeded"
    assert "planner died" in (result.reason or "")


def test_scheduler_extend_is_all_or_nothing():
    a = Task(id="a", run=_noop)
    s = Scheduler(_plan(a), open_ended=True)
    s.decide()
    bad = Plan.model_construct(tasks=(a, Task(id="b", run=_noop, depends_on=("ghost",))))
    with pytest.raises(KeyError):
        s.extend(bad)
    assert set(s.state) == {"a"} and s.plan.tasks == (a,)
    s.extend(_plan(a, Task(id="c", run=_noop)))
    assert StartTask("c", 1) in s.decide()
