"""Drive the scheduling core in virtual time: previews, what-ifs, tests and benchmarks.

The simulator and the asyncio executor are two drivers of the same `Scheduler`, so a
prediction here is the schedule the engine will really follow if the durations hold.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from . import metrics
from ._core._scheduler import (
    CancelTask,
    FailTask,
    RetryDue,
    RunFinished,
    ScheduleRetry,
    Scheduler,
    SkipTask,
    StartTask,
    TaskFailed,
    TaskSucceeded,
)
from .plan import Plan, Strategy

__all__ = ["simulate", "Simulation", "SimulatedAttempt"]


@dataclass(slots=True)
class SimulatedAttempt:
    task_id: str
    attempt: int
    start: float
    end: float
    succeeded: bool


@dataclass(slots=True)
class Simulation:
    makespan: float
    status: str
    attempts: list[SimulatedAttempt]
    statuses: dict[str, str]
    critical_path_seconds: float
    lower_bound: float
    serial_seconds: float
    start_order: list[str] = field(default_factory=list)

    @property
    def ratio_to_bound(self) -> float:
        return self.makespan / self.lower_bound if self.lower_bound > 0 else 1.0

    def intervals(self, task_id: str) -> list[tuple[float, float]]:
        return [(a.start, a.end) for a in self.attempts if a.task_id == task_id]


def simulate(
    plan: Plan,
    *,
    strategy: Strategy | None = None,
    max_workers: int | None = None,
    duration: Mapping[str, float] | Callable[[str, int], float] | None = None,
    failing_attempts: Mapping[str, int] | None = None,
    fail_fast: bool = False,
    seed: int = 0,
) -> Simulation:
    """Run `plan` in virtual time.

    `duration` gives each attempt's length (by task id, or a function of task id and
    attempt); by default a task's `estimated_seconds`. `failing_attempts[t] = n` makes the
    first n attempts of t fail.
    """
    sched = Scheduler(plan, strategy=strategy, max_workers=max_workers, fail_fast=fail_fast,
                      rng=random.Random(seed))
    fails = dict(failing_attempts or {})

    def length(task_id: str, attempt: int) -> float:
        if duration is None:
            return plan.task(task_id).estimated_seconds
        if callable(duration):
            return duration(task_id, attempt)
        return duration.get(task_id, plan.task(task_id).estimated_seconds)

    now = 0.0
    seq = 0
    heap: list[tuple[float, int, str, str, int]] = []  # (time, seq, what, task, attempt)
    running: dict[str, SimulatedAttempt] = {}
    attempts: list[SimulatedAttempt] = []
    order: list[str] = []
    status = "succeeded"
    busy: dict[str, float] = {}

    def apply(decisions: list) -> None:
        nonlocal seq, status
        for d in decisions:
            if isinstance(d, StartTask):
                ok = d.attempt > fails.get(d.task_id, 0)
                a = SimulatedAttempt(d.task_id, d.attempt, now, now + length(d.task_id, d.attempt), ok)
                running[d.task_id] = a
                order.append(d.task_id)
                seq += 1
                heapq.heappush(heap, (a.end, seq, "end", d.task_id, d.attempt))
            elif isinstance(d, ScheduleRetry):
                seq += 1
                heapq.heappush(heap, (now + d.delay, seq, "retry", d.task_id, d.next_attempt))
            elif isinstance(d, CancelTask) and d.task_id in running:
                a = running.pop(d.task_id)
                a.end = now
                a.succeeded = False
                attempts.append(a)
            elif isinstance(d, RunFinished):
                status = d.status
            elif isinstance(d, (FailTask, SkipTask)):
                pass

    apply(sched.decide())
    while heap:
        now = heap[0][0]
        # Everything that happens at this instant is one batch: then one decision.
        while heap and heap[0][0] == now:
            _, _, what, task_id, attempt = heapq.heappop(heap)
            if what == "end":
                a = running.pop(task_id, None)
                if a is None or a.attempt != attempt:
                    continue
                attempts.append(a)
                busy[task_id] = busy.get(task_id, 0.0) + (a.end - a.start)
                if a.succeeded:
                    sched.send(TaskSucceeded(task_id))
                else:
                    sched.send(TaskFailed(task_id, "simulated failure"))
            else:
                sched.send(RetryDue(task_id))
        apply(sched.decide())
        if sched.finished:
            break

    makespan = max((a.end for a in attempts), default=0.0)
    weight = {t.id: t.estimated_seconds for t in plan.tasks} if duration is None else busy
    cp, _ = metrics.critical_path(plan, weight)
    bound = metrics.lower_bound(
        plan, weight, None if sched.max_workers == float("inf") else int(sched.max_workers)
    )
    return Simulation(
        makespan=makespan,
        status=status,
        attempts=attempts,
        statuses={tid: s.value for tid, s in sched.state.items()},
        critical_path_seconds=cp,
        lower_bound=bound,
        serial_seconds=sum(a.end - a.start for a in attempts),
        start_order=order,
    )
