"""Budgets: the pure reservation core, the scheduler's gate, and whole runs under a budget."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import parallel_agents as pa
from parallel_agents._core._budget import Budget
from parallel_agents._core._scheduler import (
    RunFinished,
    Scheduler,
    SkipTask,
    StartTask,
    TaskSucceeded,
)
from parallel_agents.providers.base import ChatRequest, ChatResponse, FunctionProvider, Usage


# -- the pure core ----------------------------------------------------------------------
def test_reservations_never_commit_more_than_the_limit() -> None:
    b = Budget(1.0)
    assert b.try_reserve("a", 0.6)
    assert not b.try_reserve("b", 0.5)  # 0.6 + 0.5 > 1
    assert b.try_reserve("b", 0.4)
    assert b.remaining == pytest.approx(0.0)
    b.settle("a", 0.1)  # the call cost less than its worst case: money comes back
    assert b.spent == pytest.approx(0.1) and b.remaining == pytest.approx(0.5)
    assert b.release("b") == pytest.approx(0.4)
    assert b.outstanding == 0 and b.remaining == pytest.approx(0.9)
    with pytest.raises(ValueError):
        Budget(-1)


def test_a_budget_of_exactly_n_calls_admits_n() -> None:
    b = Budget(0.3)
    assert all(b.try_reserve(i, 0.1) for i in range(3))
    assert not b.try_reserve(3, 0.1)


# -- the scheduler gate (pure, property-tested) -----------------------------------------
@st.composite
def plans(draw: Any) -> tuple[pa.Plan, dict[str, float], float]:
    n = draw(st.integers(1, 12))
    tasks = []
    costs = {}
    for i in range(n):
        deps = draw(st.lists(st.sampled_from([f"t{j}" for j in range(i)]), unique=True,
                             max_size=min(i, 3))) if i else []
        tasks.append(pa.Task(id=f"t{i}", prompt="p", depends_on=deps))
        costs[f"t{i}"] = draw(st.sampled_from([0.0, 0.05, 0.1, 0.25, 0.4, 1.5]))
    limit = draw(st.sampled_from([0.0, 0.1, 0.3, 0.5, 1.0, 2.0]))
    return pa.Plan(tasks=tasks), costs, limit


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plans(), st.integers(1, 6), st.integers(0, 2**16))
def test_scheduler_never_commits_more_than_the_budget(case: Any, workers: int, seed: int) -> None:
    plan, costs, limit = case
    rng = random.Random(seed)
    budget = Budget(limit)
    sched = Scheduler(plan, max_workers=workers, budget=budget, start_cost=costs)
    running: list[str] = []
    skipped: dict[str, str] = {}
    status = None
    for _ in range(10_000):
        for d in sched.decide():
            if isinstance(d, StartTask):
                # a task never starts unless its worst case was reserved
                assert budget.holds(d.task_id) >= costs[d.task_id] - 1e-12
                running.append(d.task_id)
            elif isinstance(d, SkipTask):
                skipped[d.task_id] = d.reason
            elif isinstance(d, RunFinished):
                status = d.status
        assert budget.spent + budget.reserved <= limit + 1e-9
        if status is not None:
            break
        assert running, "the run stalled with nothing running"
        tid = running.pop(rng.randrange(len(running)))
        # like the agent: the start reservation becomes the call's; it costs <= worst case
        worst = budget.release(tid)
        assert budget.try_reserve((tid, 1), worst)
        budget.settle((tid, 1), worst * rng.choice([0.0, 0.5, 1.0]))
        sched.send(TaskSucceeded(tid))
    assert status is not None
    assert budget.spent <= limit + 1e-9
    for tid, reason in skipped.items():
        assert "budget exhausted" in reason
    for tid, cost in costs.items():
        if cost > limit:
            assert sched.state[tid].value == "skipped"


# -- whole runs -------------------------------------------------------------------------
PRICES = {"scripted:m": {"input_per_mtok": 100.0, "output_per_mtok": 100.0}}


def test_parallel_llm_tasks_never_exceed_the_budget(tmp_path: Path) -> None:
    """30 parallel tasks, each paying for two calls, with money for about a third of them."""
    live = 0
    peak = 0

    async def handler(request: ChatRequest) -> ChatResponse:
        nonlocal live, peak
        live += 1
        peak = max(peak, live)
        await asyncio.sleep(0.02)
        live -= 1
        # The reported usage is the worst case the agent could have reserved: input at most
        # the estimate (we report a third of the characters), output = max_tokens.
        chars = sum(len(m.content) for m in request.messages)
        return ChatResponse(text="done", usage=Usage(chars // 3, request.max_tokens))

    plan = pa.Plan(
        pools={"default": pa.Pool(max_concurrent=8)},
        prices=PRICES,
        tasks=[pa.Task(id=f"t{i:02d}", agent="writer", prompt=f"Write paragraph {i}.",
                       model="scripted:m", max_tokens=100) for i in range(30)],
    )
    limit = 0.5
    events: list[pa.Event] = []
    result = pa.run(plan, providers={"scripted": FunctionProvider(handler)}, budget_usd=limit,
                    workspace=tmp_path, on_event=events.append)
    assert result.cost_usd <= limit
    ok = result.count("succeeded")
    skipped = [t for t in result.tasks.values() if t.status == "skipped"]
    assert 0 < ok < 30 and len(skipped) + ok == 30
    assert all(t.error.startswith("budget exhausted") for t in skipped)
    assert result.status == "partial"
    assert result.reason.startswith("budget exhausted")
    assert peak > 1  # the budget did not serialise the run
    # most of the money was used: the gate is not wildly pessimistic
    assert result.cost_usd > limit * 0.5
    assert result.to_dict()["budget_usd"] == limit


def _looping(input_tokens: Any) -> FunctionProvider:
    from parallel_agents.providers.base import ToolCall

    calls = iter(range(1, 1000))

    def handler(request: ChatRequest) -> ChatResponse:
        # a new file each time: the agent does not run a repeated identical call again
        n = next(calls)
        return ChatResponse(text="", tool_calls=[ToolCall(str(n), "write_file",
                                                          {"path": f"f{n}.txt", "content": "x"})],
                            usage=Usage(input_tokens(request), request.max_tokens))

    return FunctionProvider(handler)


def _loop_plan() -> pa.Plan:
    return pa.Plan(prices=PRICES, tasks=[
        pa.Task(id="loop", prompt="keep going", model="scripted:m", max_tokens=100,
                max_iterations=60)])


def test_a_tool_loop_that_runs_out_of_money_stops_before_the_call(tmp_path: Path) -> None:
    provider = _looping(lambda r: sum(len(m.content) for m in r.messages) // 3)
    result = pa.run(_loop_plan(), providers={"scripted": provider}, budget_usd=1.0,
                    workspace=tmp_path)
    task = result.tasks["loop"]
    assert task.status == "failed" and task.error.startswith("budget exhausted")
    assert task.attempts == 1  # not retried: more money will not appear
    assert result.cost_usd <= 1.0
    assert 1 < len(provider.requests) < 60


def test_an_underestimated_call_overshoots_once_then_estimates_are_corrected(
        tmp_path: Path) -> None:
    """A provider whose tokenizer counts far more than our estimate: only the call in flight
    when we learn it can overshoot; the agent scales its later estimates."""
    provider = _looping(lambda r: 8 * sum(len(m.content) for m in r.messages))
    result = pa.run(_loop_plan(), providers={"scripted": provider}, budget_usd=1.0,
                    workspace=tmp_path)
    first = 8 * sum(len(m.content) for m in provider.requests[0].messages) + 100
    assert result.cost_usd <= 1.0 + first * 100 / 1e6
    assert result.tasks["loop"].error.startswith("budget exhausted")


def test_unknown_price_under_a_budget_is_refused_up_front() -> None:
    plan = pa.Plan(tasks=[pa.Task(id="a", prompt="x", model="scripted:mystery")])
    with pytest.raises(pa.PlanError) as info:
        pa.run(plan, providers={"scripted": FunctionProvider(lambda r: "x")}, budget_usd=1)
    assert "no price known for 'scripted:mystery'" in str(info.value)
    assert "prices" in str(info.value)


def test_local_model_is_free_under_any_budget() -> None:
    from parallel_agents.pricing import PriceTable

    assert PriceTable().worst_case("local:smollm2-135m-instruct", 10_000, 10_000) == 0.0


def test_cli_budget_skips_paid_tasks_and_reports_json(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "prices:\n  gpt-4o-mini: {input_per_mtok: 0.15, output_per_mtok: 0.6}\n"
        "tasks:\n"
        "  - {id: prep, command: [\"true\"]}\n"
        "  - {id: design, agent: architect, prompt: Design it, model: openai:gpt-4o-mini,"
        " depends_on: [prep]}\n"
        "  - {id: build, agent: backend, prompt: Build it, model: openai:gpt-4o-mini,"
        " depends_on: [design]}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "parallel_agents", "run", str(plan), "--budget", "0", "--json",
         "--quiet"], capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"})
    assert proc.returncode == 1, proc.stderr
    data = json.loads(proc.stdout)
    assert data["status"] == "partial"
    assert data["reason"].startswith("budget exhausted")
    assert data["tasks"]["design"]["status"] == "skipped"
    assert data["tasks"]["design"]["error"].startswith("budget exhausted")
    assert data["tasks"]["build"]["status"] == "skipped"
    assert data["cost_usd"] == 0 and data["budget_usd"] == 0


def test_cli_unknown_price_with_budget_is_a_usage_error(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text("tasks:\n  - {id: a, prompt: hi, model: openai:some-new-model}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "parallel_agents", "run", str(plan), "--budget", "5"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2
    assert "no price known for 'openai:some-new-model'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_resumed_run_keeps_its_budget_and_what_it_already_paid(tmp_path: Path) -> None:
    """The budget is the run's, across resumes: the executor's budget is stored with the run,
    and what succeeded tasks paid before the resume still counts against it."""
    from parallel_agents.store import RunStore

    calls: list[str] = []

    def handler(request: ChatRequest) -> ChatResponse:
        calls.append(request.messages[-1].content)
        return ChatResponse(text="done", usage=Usage(1400, 100))  # $0.15 at 100 $/Mtok

    plan = pa.Plan(prices=PRICES, tasks=[
        pa.Task(id="a", prompt="Write a.", model="scripted:m", max_tokens=100),
        pa.Task(id="b", prompt="Write b.", model="scripted:m", max_tokens=100,
                depends_on=["a"])])
    providers = {"scripted": FunctionProvider(handler)}
    store = RunStore(tmp_path / "runs.db")
    try:
        first = asyncio.run(pa.Executor(store=store, providers=providers, budget_usd=0.16,
                                        workspace=tmp_path / "ws").execute(plan))
        assert first.tasks["b"].status == "skipped" and len(calls) == 1
        # Resumed without --budget: the stored budget applies, and a's $0.15 is spent.
        again = asyncio.run(pa.Executor(store=store, providers=providers,
                                        workspace=tmp_path / "ws").resume(first.run_id,
                                                                          plan=plan))
    finally:
        store.close()
    assert len(calls) == 1, "the resume spent money the budget did not have"
    assert again.tasks["a"].status == "succeeded"
    assert again.tasks["b"].status == "skipped"
    assert again.tasks["b"].error.startswith("budget exhausted")
    assert again.cost_usd == pytest.approx(0.15) and again.to_dict()["budget_usd"] == 0.16


def test_paid_answers_that_cannot_be_used_still_count_and_stop_at_the_budget(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that bills every call but never answers valid JSON: the failed attempts' calls
    are in the task's cost and usage, and the retries stop when the budget is spent instead
    of calling (and paying) on for nothing."""
    from tests.fakes.openai_server import FakeLLMServer, Reply

    monkeypatch.setenv("FAKE_KEY", "sk-fake")
    with FakeLLMServer() as srv:
        srv.default = Reply.bad_json_content()
        plan = pa.Plan(
            prices={"openai:m": {"input_per_mtok": 100.0, "output_per_mtok": 100.0}},
            providers={"openai": {"base_url": srv.openai_base_url, "api_key_env": "FAKE_KEY"}},
            tasks=[pa.Task(id="json", prompt="Give me JSON.", model="openai:m",
                           output_schema={"type": "object"}, max_tokens=50,
                           max_iterations=1, max_retries=20, retry_backoff_sec=0)])
        result = pa.run(plan, budget_usd=0.05, workspace=tmp_path)
        billed = len(srv.requests)
    task = result.tasks["json"]
    # (the retry that no longer fits is not started: skipped, budget exhausted)
    assert task.status in ("failed", "skipped"), (task.status, task.error, billed)
    assert task.usage["output_tokens"] > 0 and task.cost_usd > 0
    assert result.cost_usd <= 0.05
    assert billed < 21 and task.error.startswith("budget exhausted"), (billed, task.error)
