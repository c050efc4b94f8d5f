"""RunView folds a real run's events into what the live display shows (Python API)."""

from __future__ import annotations

import asyncio
import time

from parallel_agents import Executor, Plan, Task
from parallel_agents.agents import TaskOutput
from parallel_agents.progress import RunView, summary_rows


def _work(ctx):
    ctx.progress(f"working on {ctx.task.id}")
    if ctx.task.id == "bad":  # fails at once, long before a finishes
        raise RuntimeError("nope")
    time.sleep(0.3)
    return TaskOutput(output=ctx.task.id, cost_usd=0.1)


def test_view_counts_cost_and_eta_from_real_events() -> None:
    plan = Plan(name="v", pools={"p": {"max_concurrent": 2}}, tasks=[
        Task(id="a", pool="p", run=_work, estimated_seconds=0.3),
        Task(id="b", pool="p", run=_work, estimated_seconds=0.3, depends_on=["a"]),
        Task(id="bad", pool="p", run=_work),
        Task(id="after-bad", pool="p", run=_work, depends_on=["bad"]),
    ])
    view = RunView(plan)
    seen: list[dict] = []

    def watch(event) -> None:
        view.apply(event)
        if event.kind == "task_started" and event.task_id == "b":
            seen.append({"counts": view.counts(), "pools": view.pool_use(),
                         "eta": view.eta(event.time)})

    ex = Executor()
    ex.subscribe(watch)
    result = asyncio.run(ex.execute(plan))
    # When b starts, a is done and bad has failed: after-bad is skipped, b alone remains.
    (at_b,) = seen
    assert at_b["counts"] == {"done": 1, "running": 1, "queued": 0, "failed": 1, "skipped": 1}
    assert at_b["pools"] == {"p": (1, 2)}
    assert 0.1 < at_b["eta"] < 3.0  # one ~0.3 s task left, scaled by observed speed
    assert view.finished and view.eta(time.time()) == 0.0
    assert view.counts()["done"] == 2
    assert abs(view.cost_usd - 0.2) < 1e-9  # a and b reported cost; bad failed
    rows = dict(summary_rows(result, plan))
    assert rows["success rate"] == "50.0%" and rows["failed"] == "1"
    assert rows["cost"] == "$0.2000" and rows["phases"] == "2"
    assert rows["critical path"].endswith("2 task(s): a -> b")


def test_a_resumed_run_starts_with_its_finished_tasks_counted() -> None:
    plan = Plan(tasks=[Task(id="a", run=_work), Task(id="b", run=_work, depends_on=["a"])])
    view = RunView(plan)
    view.mark_succeeded(["a", "not-in-plan"])
    assert view.counts() == {"done": 1, "running": 0, "queued": 1, "failed": 0, "skipped": 0}
