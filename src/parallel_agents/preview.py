"""Plan previews: what a run would do, predicted in virtual time, with no agent started.

The prediction is the real scheduler driven by `simulate` with each task's
`estimated_seconds`, so it is the schedule a run follows when the estimates hold.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .metrics import critical_path
from .plan import Plan, Task
from .progress import plan_phases
from .simulate import simulate

__all__ = ["preview_plan", "dependency_levels", "COST_ESTIMATOR"]

#: Predicted USD for one task, or None when it cannot be priced. Set by the pricing module
#: (LLM tasks); left None, previews say that cost cannot be predicted.
COST_ESTIMATOR: Callable[[Task], float | None] | None = None


def dependency_levels(plan: Plan) -> list[list[str]]:
    """Tasks grouped by depth in the graph: level 0 has no dependencies, level n depends on
    something at level n-1. Tasks in one level can all run at once."""
    level: dict[str, int] = {}
    from .metrics import _topological

    for tid in _topological(plan):
        deps = plan.task(tid).depends_on
        level[tid] = 1 + max((level[d] for d in deps), default=-1)
    out: list[list[str]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
    for t in plan.tasks:
        out[level[t.id]].append(t.id)
    return out


def _predicted_cost(plan: Plan) -> tuple[float | None, str]:
    llm_tasks = [t for t in plan.tasks if getattr(t, "model", None)]
    if not llm_tasks:
        return None, "no LLM tasks: nothing to price"
    if COST_ESTIMATOR is None:
        return None, "pricing is not available in this installation"
    total = 0.0
    unpriced = []
    for t in llm_tasks:
        cost = COST_ESTIMATOR(t)
        if cost is None:
            unpriced.append(t.id)
        else:
            total += cost
    note = f"not priced: {', '.join(unpriced[:5])}" if unpriced else ""
    return total, note


def preview_plan(plan: Plan, *, strategy: str | None = None,
                 max_workers: int | None = None) -> dict[str, Any]:
    """The preview as JSON-ready data (what `plan --json` prints)."""
    sim = simulate(plan, strategy=strategy, max_workers=max_workers)  # type: ignore[arg-type]
    effective = strategy or plan.strategy or "dependency"
    estimates = {t.id: t.estimated_seconds for t in plan.tasks}
    cp_seconds, cp = critical_path(plan, estimates)
    serial = sum(estimates.values())
    cost, cost_note = _predicted_cost(plan)
    label, phases = plan_phases(plan, effective)
    return {
        "name": plan.name,
        "strategy": effective,
        "max_workers": max_workers if max_workers is not None else plan.max_workers,
        "tasks": len(plan.tasks),
        "pools": {name: pool.model_dump() for name, pool in plan.all_pools().items()},
        "levels": dependency_levels(plan),
        label: phases,
        "dependencies": {t.id: list(t.depends_on) for t in plan.tasks},
        "timeline": [
            {"task": a.task_id, "pool": plan.task(a.task_id).pool, "attempt": a.attempt,
             "start": round(a.start, 6), "end": round(a.end, 6)}
            for a in sorted(sim.attempts, key=lambda a: (a.start, a.task_id))
        ],
        "predicted_makespan_seconds": round(sim.makespan, 6),
        "serial_seconds": round(serial, 6),
        "predicted_speedup": round(serial / sim.makespan, 4) if sim.makespan > 0 else 1.0,
        "critical_path": cp,
        "critical_path_seconds": round(cp_seconds, 6),
        "lower_bound_seconds": round(sim.lower_bound, 6),
        "predicted_cost_usd": cost,
        "cost_note": cost_note,
    }
