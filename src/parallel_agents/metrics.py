"""Run metrics: makespan, serial time, critical path, speedup, efficiency, utilization.

Definitions (the same in the CLI, the API and the reports):

- makespan: wall time from run start to the end of its last task.
- serial time: the sum of every attempt's duration, i.e. what one worker doing everything
  one after another would have spent (retries included; backoff waits, and the time an
  attempt queued for a shared resource such as a model serving one call at a time,
  excluded: alone, a worker would not have waited).
- critical path: the longest dependency chain, weighting each task by its measured busy time.
- lower bound: max(critical path, per pool: busy time / slots, total busy / max_workers).
  No schedule can beat it, so `efficiency = lower bound / makespan` (1.0 is optimal).
- speedup: serial time / makespan.
- pool utilization: the pool's busy time / (its slots x makespan); for a pool with no limit,
  the peak number of its tasks that ran at once stands in for its slots.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .plan import Plan, Pool
from .results import AttemptRecord

__all__ = ["critical_path", "lower_bound", "peak_concurrency", "pool_utilization", "utilization"]


def critical_path(plan: Plan, weight: Mapping[str, float]) -> tuple[float, list[str]]:
    """Longest path through the plan's DAG where each task weighs `weight[task_id]`."""
    best: dict[str, float] = {}
    prev: dict[str, str | None] = {}
    get = weight.get
    if not any(t.depends_on for t in plan.tasks):
        # No dependencies at all (a fan-out): every task is a path of its own.
        for t in plan.tasks:
            best[t.id] = get(t.id, 0.0)
            prev[t.id] = None
        return _longest(plan, best, prev)
    by_id = {t.id: t for t in plan.tasks}
    for task_id in _topological(plan):
        start = 0.0
        parent = None
        for dep in by_id[task_id].depends_on:
            if best[dep] > start:
                start, parent = best[dep], dep
        best[task_id] = start + get(task_id, 0.0)
        prev[task_id] = parent
    return _longest(plan, best, prev)


def _longest(plan: Plan, best: dict[str, float], prev: dict[str, str | None],
             ) -> tuple[float, list[str]]:
    if not best:
        return 0.0, []
    # The longest; among equals, the first in plan order.
    end = plan.tasks[0].id
    for t in plan.tasks:
        if best[t.id] > best[end]:
            end = t.id
    path = [end]
    while prev[path[-1]] is not None:
        path.append(prev[path[-1]])  # type: ignore[arg-type]
    path.reverse()
    return best[end], path


def _topological(plan: Plan) -> list[str]:
    waiting = {t.id: len(t.depends_on) for t in plan.tasks}
    if not any(waiting.values()):
        return list(waiting)  # no dependencies at all: plan order will do
    dependents: dict[str, list[str]] = {t.id: [] for t in plan.tasks}
    for t in plan.tasks:
        for d in t.depends_on:
            dependents[d].append(t.id)
    order = [tid for tid, n in waiting.items() if n == 0]
    i = 0
    while i < len(order):
        for child in dependents[order[i]]:
            waiting[child] -= 1
            if waiting[child] == 0:
                order.append(child)
        i += 1
    return order


def lower_bound(
    plan: Plan,
    weight: Mapping[str, float],
    max_workers: int | None,
    *,
    critical_path_seconds: float | None = None,
) -> float:
    """A makespan no schedule can beat (see the module docstring).

    Pass `critical_path_seconds` when already computed with the same weights.
    """
    if critical_path_seconds is None:
        critical_path_seconds, _ = critical_path(plan, weight)
    bound = critical_path_seconds
    per_pool: dict[str, float] = {}
    for t in plan.tasks:
        per_pool[t.pool] = per_pool.get(t.pool, 0.0) + weight.get(t.id, 0.0)
    pools = plan.all_pools()
    for name, work in per_pool.items():
        slots = pools[name].max_concurrent
        if slots:
            bound = max(bound, work / slots)
    if max_workers:
        bound = max(bound, sum(per_pool.values()) / max_workers)
    return bound


def peak_concurrency(intervals: Iterable[tuple[float, float]]) -> int:
    """Most intervals open at once; one ending exactly when another starts does not overlap."""
    # Two sorted float lists merged in one walk: far cheaper than sorting (time, +-1) tuples
    # for the 10^5 attempts of a big run.
    starts: list[float] = []
    ends: list[float] = []
    for start, end in intervals:
        starts.append(start)
        ends.append(end)
    starts.sort()
    ends.sort()
    peak = current = 0
    j = 0
    for start in starts:
        while j < len(ends) and ends[j] <= start:  # ends at or before it close first
            current -= 1
            j += 1
        current += 1
        if current > peak:
            peak = current
    return peak


def pool_utilization(
    plan: Plan, attempts: Mapping[str, list[AttemptRecord]], makespan: float
) -> dict[str, float]:
    pools = plan.all_pools()
    by_pool: dict[str, list[tuple[float, float]]] = {name: [] for name in pools}
    for t in plan.tasks:
        intervals = by_pool[t.pool]
        for a in attempts.get(t.id, ()):
            if a.finished_at is not None:
                intervals.append((a.started_at, a.finished_at))
    return utilization(pools, by_pool, makespan)


def utilization(
    pools: Mapping[str, Pool],
    intervals_by_pool: Mapping[str, list[tuple[float, float]]],
    makespan: float,
    peaks: dict[str, int] | None = None,
) -> dict[str, float]:
    """`pool_utilization` from attempt intervals already grouped by pool.

    Peaks computed for pools without a limit are stored in `peaks` when given.
    """
    out: dict[str, float] = {}
    if makespan <= 0:
        return {name: 0.0 for name in pools}
    for name, pool in pools.items():
        intervals = intervals_by_pool.get(name, ())
        busy = sum([e - s for s, e in intervals])
        slots = pool.max_concurrent
        if not slots:
            slots = peak_concurrency(intervals)
            if peaks is not None:
                peaks[name] = slots
            slots = slots or 1
        out[name] = min(1.0, busy / (slots * makespan))
    return out
