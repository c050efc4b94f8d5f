"""The asyncio executor through the Python API, with real coroutines, threads and timers."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

import parallel_agents as pa

pytestmark = pytest.mark.timeout(60)


def collect(executor: pa.Executor) -> list[pa.Event]:
    events: list[pa.Event] = []
    executor.subscribe(events.append)
    return events


def kinds(events: list[pa.Event], task_id: str | None = None) -> list[str]:
    return [e.kind for e in events if task_id is None or e.task_id == task_id]


def test_sync_async_and_zero_arg_callables_with_inputs() -> None:
    seen_threads: list[str] = []

    async def schema(ctx: pa.TaskContext) -> dict[str, Any]:
        await asyncio.sleep(0.01)
        return {"tables": ["menu", "booking"], "attempt": ctx.attempt}

    def backend(ctx: pa.TaskContext) -> str:
        seen_threads.append(threading.current_thread().name)
        return f"api for {','.join(ctx.inputs['schema']['tables'])}"

    async def frontend() -> str:
        return "pages"

    def audit(ctx: pa.TaskContext) -> list[str]:
        assert ctx.task.id == "audit" and ctx.run_id
        return sorted(ctx.inputs)

    plan = pa.Plan(tasks=[
        pa.Task(id="schema", run=schema),
        pa.Task(id="backend", run=backend, depends_on=["schema"]),
        pa.Task(id="frontend", run=frontend),
        pa.Task(id="zero_sync", run=lambda: 42),
        pa.Task(id="audit", run=audit, depends_on=["backend", "frontend"]),
    ])
    result = pa.run(plan)
    assert result.status == "succeeded", result.reason
    assert result.tasks["schema"].output == {"tables": ["menu", "booking"], "attempt": 1}
    assert result.tasks["backend"].output == "api for menu,booking"
    assert result.tasks["frontend"].output == "pages"
    assert result.tasks["zero_sync"].output == 42
    assert result.tasks["audit"].output == ["backend", "frontend"]
    assert all(t.attempts == 1 for t in result.tasks.values())
    # A plain function runs in a worker thread, not on the event loop's thread.
    assert seen_threads and seen_threads[0] != threading.main_thread().name


def test_task_output_with_usage_and_cost() -> None:
    plan = pa.Plan(tasks=[pa.Task(id="llm", run=lambda: pa.TaskOutput(
        "text", usage={"input_tokens": 10}, cost_usd=0.25, files=["a.py"]))])
    result = pa.run(plan)
    task = result.tasks["llm"]
    assert (task.output, task.usage, task.cost_usd, task.files) == (
        "text", {"input_tokens": 10}, 0.25, ["a.py"])


def test_progress_events() -> None:
    async def work(ctx: pa.TaskContext) -> None:
        for i in range(3):
            ctx.progress(f"step {i + 1}/3", (i + 1) / 3)
            await asyncio.sleep(0)
        with pytest.raises(ValueError):
            ctx.progress("bad", 1.5)

    executor = pa.Executor()
    events = collect(executor)
    result = asyncio.run(executor.execute(pa.Plan(tasks=[pa.Task(id="w", run=work)])))
    assert result.status == "succeeded"
    progress = [e for e in events if e.kind == "task_progress"]
    assert [e.message for e in progress] == ["step 1/3", "step 2/3", "step 3/3"]
    assert progress[-1].data == {"fraction": 1.0}
    assert kinds(events, "w") == ["task_queued", "task_started", "task_progress",
                                  "task_progress", "task_progress", "task_succeeded"]


def test_retries_with_backoff_then_success() -> None:
    calls: list[float] = []

    def flaky(ctx: pa.TaskContext) -> str:
        calls.append(time.perf_counter())
        if ctx.attempt < 3:
            raise RuntimeError(f"boom {ctx.attempt}")
        return "ok"

    executor = pa.Executor(seed=1)
    events = collect(executor)
    plan = pa.Plan(tasks=[pa.Task(id="f", run=flaky, max_retries=3, retry_backoff_sec=0.05)])
    result = asyncio.run(executor.execute(plan))
    task = result.tasks["f"]
    assert result.status == "succeeded"
    assert task.attempts == 3 and task.output == "ok" and task.error is None
    assert [a.outcome for a in task.history] == ["failed", "failed", "succeeded"]
    assert "RuntimeError: boom 1" in (task.history[0].error or "")
    # Backoff doubles with ±25 % jitter: at least 0.0375 s then 0.075 s.
    assert calls[1] - calls[0] >= 0.0375 and calls[2] - calls[1] >= 0.075
    retrying = [e for e in events if e.kind == "task_retrying"]
    assert [e.attempt for e in retrying] == [2, 3]
    assert 0.0375 <= retrying[0].data["delay_seconds"] <= 0.0625
    assert kinds(events, "f") == ["task_queued", "task_started", "task_retrying", "task_started",
                                  "task_retrying", "task_started", "task_succeeded"]


def test_retries_exhausted_fail_and_dependents_are_skipped() -> None:
    def always(ctx: pa.TaskContext) -> None:
        raise pa.TaskError(f"nope {ctx.attempt}")

    def unrelated() -> str:
        return "still runs"

    executor = pa.Executor()
    events = collect(executor)
    plan = pa.Plan(tasks=[
        pa.Task(id="bad", run=always, max_retries=1, retry_backoff_sec=0),
        pa.Task(id="child", run=lambda: 1, depends_on=["bad"]),
        pa.Task(id="grandchild", run=lambda: 1, depends_on=["child"]),
        pa.Task(id="free", run=unrelated),
    ])
    result = asyncio.run(executor.execute(plan))
    assert result.status == "partial"
    assert result.tasks["bad"].status == "failed" and result.tasks["bad"].attempts == 2
    assert result.tasks["bad"].error == "nope 2"
    assert result.tasks["child"].status == "skipped"
    assert "dependency 'bad' failed" in result.tasks["child"].error
    assert result.tasks["grandchild"].status == "skipped"
    assert "child" in result.tasks["grandchild"].error
    assert result.tasks["free"].output == "still runs"
    assert result.tasks["child"].attempts == 0
    assert "bad" in (result.reason or "")
    assert kinds(events, "child") == ["task_skipped"]


def test_non_retryable_error_fails_at_once() -> None:
    def broken() -> None:
        raise pa.NonRetryableError("bad request")

    plan = pa.Plan(tasks=[pa.Task(id="x", run=broken, max_retries=5, retry_backoff_sec=0)])
    result = pa.run(plan)
    assert result.status == "failed"
    assert result.tasks["x"].attempts == 1 and result.tasks["x"].error == "bad request"


def test_a_task_waiting_for_a_retry_holds_no_slot() -> None:
    order: list[str] = []

    async def flaky(ctx: pa.TaskContext) -> str:
        order.append(f"flaky#{ctx.attempt}")
        if ctx.attempt == 1:
            raise RuntimeError("transient")
        return "ok"

    async def other() -> str:
        order.append("other")
        return "done"

    plan = pa.Plan(
        tasks=[
            pa.Task(id="flaky", run=flaky, pool="one", priority="critical", max_retries=1,
                    retry_backoff_sec=1.0),
            pa.Task(id="other", run=other, pool="one", priority="low"),
        ],
        pools={"one": pa.Pool(max_concurrent=1)},
    )
    result = pa.run(plan, seed=3)
    assert result.status == "succeeded"
    # The only slot went to `other` while `flaky` waited out its backoff.
    assert order == ["flaky#1", "other", "flaky#2"]
    flaky = result.tasks["flaky"].history
    other = result.tasks["other"]
    assert flaky[0].finished_at <= other.started_at
    assert other.finished_at <= flaky[1].started_at


def test_pool_limit_is_respected_with_real_concurrency() -> None:
    running = 0
    peak = 0

    async def work() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02)
        running -= 1

    plan = pa.Plan(tasks=[pa.Task(id=f"t{i}", run=work, pool="gpu") for i in range(12)],
                   pools={"gpu": pa.Pool(max_concurrent=3)})
    result = pa.run(plan)
    assert result.status == "succeeded"
    assert peak == 3 and result.max_parallel <= 3
    result = pa.run(plan, max_workers=2)
    assert result.max_parallel <= 2


def test_timeout_fails_the_attempt_and_retries() -> None:
    async def slow(ctx: pa.TaskContext) -> str:
        if ctx.attempt == 1:
            await asyncio.sleep(30)
        return "fast now"

    plan = pa.Plan(tasks=[pa.Task(id="s", run=slow, timeout_sec=0.2, max_retries=1,
                                  retry_backoff_sec=0)])
    started = time.perf_counter()
    result = pa.run(plan)
    assert time.perf_counter() - started < 10
    task = result.tasks["s"]
    assert result.status == "succeeded" and task.output == "fast now"
    assert task.history[0].outcome == "timeout"
    assert "timed out after 0.2s" in task.history[0].error


def test_pool_timeout_applies_when_task_has_none() -> None:
    async def hang() -> None:
        await asyncio.sleep(30)

    plan = pa.Plan(tasks=[pa.Task(id="h", run=hang, pool="p")],
                   pools={"p": pa.Pool(timeout_sec=0.1)})
    result = pa.run(plan)
    assert result.status == "failed"
    assert "timed out" in result.tasks["h"].error


def test_fail_fast_cancels_running_and_skips_the_rest() -> None:
    async def bad() -> None:
        await asyncio.sleep(0.05)
        raise RuntimeError("broken")

    async def long() -> str:
        await asyncio.sleep(30)
        return "never"

    executor = pa.Executor(fail_fast=True)
    events = collect(executor)
    plan = pa.Plan(
        tasks=[
            pa.Task(id="bad", run=bad),
            pa.Task(id="long", run=long),
            pa.Task(id="later", run=lambda: 1, pool="slow"),
            pa.Task(id="blocked", run=lambda: 1, pool="slow"),
        ],
        pools={"slow": pa.Pool(max_concurrent=1)},
    )

    started = time.perf_counter()
    result = asyncio.run(executor.execute(plan))
    assert time.perf_counter() - started < 10
    assert result.tasks["bad"].status == "failed"
    assert result.tasks["long"].status == "cancelled"
    assert result.status in ("failed", "partial")
    statuses = {t.status for t in result.tasks.values()}
    assert statuses <= {"succeeded", "failed", "skipped", "cancelled"}
    assert "task_cancelled" in kinds(events, "long")


def test_fail_fast_skips_queued_tasks() -> None:
    async def bad() -> None:
        raise RuntimeError("broken")

    async def hold() -> None:
        await asyncio.sleep(30)

    plan = pa.Plan(
        tasks=[
            pa.Task(id="bad", run=bad, pool="a", priority="critical"),
            pa.Task(id="hold", run=hold, pool="b"),
            pa.Task(id="queued", run=lambda: 1, pool="b"),
        ],
        pools={"a": pa.Pool(max_concurrent=1), "b": pa.Pool(max_concurrent=1)},
    )
    result = pa.run(plan, fail_fast=True)
    assert result.tasks["queued"].status == "skipped"
    assert "fail-fast" in result.tasks["queued"].error
    assert result.tasks["hold"].status == "cancelled"
    assert result.tasks["queued"].attempts == 0


def test_executor_cancel_mid_run() -> None:
    started = asyncio.Event()
    cancelled_inside: list[bool] = []

    async def long(ctx: pa.TaskContext) -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled_inside.append(True)
            raise

    executor = pa.Executor()
    events = collect(executor)
    plan = pa.Plan(
        tasks=[
            pa.Task(id="long", run=long, pool="one"),
            pa.Task(id="queued", run=lambda: 1, pool="one"),
            pa.Task(id="after", run=lambda: 1, depends_on=["long"]),
        ],
        pools={"one": pa.Pool(max_concurrent=1)},
    )

    async def main() -> pa.RunResult:
        run = asyncio.create_task(executor.execute(plan))
        await asyncio.wait_for(started.wait(), 10)
        executor.cancel("stop please")
        return await asyncio.wait_for(run, 10)

    result = asyncio.run(main())
    assert result.status == "cancelled"
    assert cancelled_inside == [True]
    assert {t: r.status for t, r in result.tasks.items()} == {
        "long": "cancelled", "queued": "cancelled", "after": "cancelled"}
    assert result.reason == "stop please"
    assert kinds(events)[-1] == "run_finished"
    assert events[-1].data["status"] == "cancelled"
    assert "task_cancelled" in kinds(events, "long")
    assert "task_cancelled" in kinds(events, "queued")


def test_cancel_during_retry_backoff() -> None:
    async def flaky() -> None:
        raise RuntimeError("x")

    executor = pa.Executor()
    events = collect(executor)
    plan = pa.Plan(tasks=[pa.Task(id="f", run=flaky, max_retries=3, retry_backoff_sec=20)])

    async def main() -> pa.RunResult:
        run = asyncio.create_task(executor.execute(plan))
        while "task_retrying" not in kinds(events):
            await asyncio.sleep(0.01)
        executor.cancel()
        return await asyncio.wait_for(run, 5)

    result = asyncio.run(main())
    assert result.status == "cancelled"
    assert result.tasks["f"].status == "cancelled" and result.tasks["f"].attempts == 1


def test_events_for_every_transition_in_order() -> None:
    async def ok(ctx: pa.TaskContext) -> str:
        ctx.progress("half", 0.5)
        return "fine"

    def flaky(ctx: pa.TaskContext) -> str:
        if ctx.attempt == 1:
            raise RuntimeError("once")
        return "second time"

    def bad() -> None:
        raise RuntimeError("always")

    executor = pa.Executor()
    events = collect(executor)
    plan = pa.Plan(tasks=[
        pa.Task(id="ok", run=ok),
        pa.Task(id="flaky", run=flaky, max_retries=1, retry_backoff_sec=0.01),
        pa.Task(id="bad", run=bad),
        pa.Task(id="child", run=lambda: 1, depends_on=["bad"]),
    ])
    result = asyncio.run(executor.execute(plan))
    assert result.status == "partial"
    assert kinds(events)[0] == "run_started" and kinds(events)[-1] == "run_finished"
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    times = [e.time for e in events]
    assert times == sorted(times)
    assert {e.run_id for e in events} == {result.run_id}
    assert kinds(events, "ok") == ["task_queued", "task_started", "task_progress",
                                   "task_succeeded"]
    assert kinds(events, "flaky") == ["task_queued", "task_started", "task_retrying",
                                      "task_started", "task_succeeded"]
    assert kinds(events, "bad") == ["task_queued", "task_started", "task_failed"]
    assert kinds(events, "child") == ["task_skipped"]
    failed = next(e for e in events if e.kind == "task_failed")
    assert failed.message == "RuntimeError: always" and failed.attempt == 1
    assert {k for k in kinds(events)} | {"task_cancelled"} == set(pa.events.EVENT_KINDS)
    assert events[-1].to_dict()["data"]["status"] == "partial"


def test_event_stream_async_iteration() -> None:
    async def main() -> list[str]:
        executor = pa.Executor()
        seen: list[str] = []
        bus_holder: list[pa.EventBus] = []

        async def consume(bus: pa.EventBus) -> None:
            async for e in bus.stream():
                seen.append(e.kind)

        bus = pa.EventBus()
        bus_holder.append(bus)
        executor.subscribe(bus.publish)
        consumer = asyncio.create_task(consume(bus))
        await asyncio.sleep(0)
        await executor.execute(pa.Plan(tasks=[pa.Task(id="a", run=lambda: 1)]))
        await asyncio.wait_for(consumer, 5)
        return seen

    seen = asyncio.run(main())
    assert seen[0] == "run_started" and seen[-1] == "run_finished"


def test_a_failing_subscriber_does_not_break_the_run() -> None:
    def bad(event: pa.Event) -> None:
        raise RuntimeError("subscriber bug")

    executor = pa.Executor(on_event=bad)
    good = collect(executor)
    result = asyncio.run(executor.execute(pa.Plan(tasks=[pa.Task(id="a", run=lambda: 1)])))
    assert result.status == "succeeded"
    assert kinds(good)[-1] == "run_finished"


def test_metrics_sanity() -> None:
    def sleeper(seconds: float) -> Any:
        async def fn() -> float:
            await asyncio.sleep(seconds)
            return seconds
        return fn

    plan = pa.Plan(tasks=[
        pa.Task(id="frontend", run=sleeper(0.2)),
        pa.Task(id="backend", run=sleeper(0.3)),
        pa.Task(id="schema", run=sleeper(0.2)),
        pa.Task(id="audit", run=sleeper(0.3), depends_on=["backend"]),
    ])
    result = pa.run(plan)
    assert result.status == "succeeded"
    assert result.critical_path == ["backend", "audit"]
    assert result.critical_path_seconds == pytest.approx(0.6, abs=0.25)
    assert result.serial_seconds == pytest.approx(1.0, abs=0.4)
    assert result.makespan_seconds >= result.critical_path_seconds - 1e-6
    assert result.makespan_seconds < result.serial_seconds
    assert result.speedup == pytest.approx(result.serial_seconds / result.makespan_seconds)
    assert result.speedup > 1.2
    assert 0 < result.efficiency <= 1
    assert result.max_parallel == 3
    assert set(result.pool_utilization) == {"default"}
    assert 0 < result.pool_utilization["default"] <= 1
    data = result.to_dict()
    assert data["tasks"]["audit"]["started_at"] >= data["tasks"]["backend"]["finished_at"]


def test_empty_plan_succeeds_at_once() -> None:
    executor = pa.Executor()
    events = collect(executor)
    result = asyncio.run(executor.execute(pa.Plan()))
    assert result.status == "succeeded"
    assert result.makespan_seconds == 0 and result.serial_seconds == 0
    assert result.speedup == 1.0
    assert kinds(events) == ["run_started", "run_finished"]


def test_strategies_through_the_executor() -> None:
    running = 0
    peak = 0

    async def work() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1

    plan = pa.Plan(tasks=[pa.Task(id=f"t{i}", run=work, stage="s1" if i < 3 else "s2")
                          for i in range(6)])
    for strategy in ("sequential", "waves", "pipeline", "dependency"):
        peak = 0
        result = pa.run(plan, strategy=strategy)
        assert result.status == "succeeded" and result.strategy == strategy
        assert peak == (1 if strategy == "sequential" else 3 if strategy == "pipeline" else 4)
    with pytest.raises(pa.UsageError, match="unknown strategy"):
        pa.Executor(strategy="fastest")  # type: ignore[arg-type]
    with pytest.raises(pa.PlanError, match="needs a stage"):
        pa.run(pa.Plan(tasks=[pa.Task(id="a", run=work)]), strategy="pipeline")


def test_two_runs_at_once_on_one_executor() -> None:
    async def main() -> list[pa.RunResult]:
        executor = pa.Executor()
        plan = pa.Plan(tasks=[pa.Task(id="a", run=lambda: 1)])
        return await asyncio.gather(executor.execute(plan), executor.execute(plan))

    a, b = asyncio.run(main())
    assert a.status == b.status == "succeeded" and a.run_id != b.run_id


def test_run_from_async_code_is_a_usage_error_naming_the_async_way() -> None:
    plan = pa.Plan(tasks=[pa.Task(id="a", run=lambda: 1)])

    async def inside() -> None:
        with pytest.raises(pa.UsageError, match=r"await parallel_agents.Executor"):
            pa.run(plan)

    asyncio.run(inside())


def test_a_sync_function_abandoned_on_timeout_does_not_hold_up_run() -> None:
    """A thread cannot be interrupted: on timeout the attempt fails and the thread is left to
    finish on its own, and `pa.run` returns without waiting for it."""
    release = threading.Event()
    plan = pa.Plan(tasks=[pa.Task(id="stuck", run=lambda: release.wait(5), timeout_sec=0.2)])
    t0 = time.monotonic()
    result = pa.run(plan)
    took = time.monotonic() - t0
    release.set()
    assert result.tasks["stuck"].status == "failed" and "timed out" in result.tasks["stuck"].error
    assert took < 2.0
