"""Plan previews: what a run would do, predicted in virtual time, with no agent started.

The prediction is the real scheduler driven by `simulate` with each task's
`estimated_seconds`, so it is the schedule a run follows when the estimates hold.
"""

from __future__ import annotations

from typing import Any

from .metrics import critical_path
from .plan import Plan
from .progress import plan_phases
from .simulate import simulate

__all__ = ["preview_plan", "dependency_levels", "predicted_cost"]


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


def predicted_cost(plan: Plan) -> tuple[float | None, str]:
    """(USD, what the figure means) for a plan's LLM tasks, before anything runs.

    The figure is the budget gate's own: for each LLM task, the worst case of its first call
    (the prompt with its dependencies' outputs at their full allowance, every output token
    used, priced from the plan's `prices:` and the built-in table). A task that uses tools
    calls again, with a longer conversation each time, so the whole run can cost more; no
    honest upper bound exists for that (tool results have no fixed size), and the note says
    so. None when no LLM task has a known price.
    """
    llm_tasks = [t for t in plan.tasks if t.kind == "llm"]
    if not llm_tasks:
        return None, "no LLM tasks: nothing to price"
    from .agents.llm import start_cost  # (lazy: the LLM agent is a heavier import)
    from .pricing import PriceTable
    from .roles import llm_settings

    prices = PriceTable(plan.prices)
    total = 0.0
    priced = 0
    calls = 0
    unpriced: dict[str, list[str]] = {}  # model -> its tasks
    for t in llm_tasks:
        settings = llm_settings(t, plan)
        cost = start_cost(t, plan, prices)
        if cost is None:
            unpriced.setdefault(settings.model, []).append(t.id)
            continue
        total += cost
        priced += 1
        calls += settings.max_iterations
    missing = "; ".join(
        f"no price known for {model!r} (task{'s' if len(ids) > 1 else ''} "
        f"{', '.join(ids[:5])}{' …' if len(ids) > 5 else ''})" for model, ids in unpriced.items())
    fix = "add prices under `prices:` in the plan"
    if not priced:
        return None, f"{missing}: {fix}"
    note = (f"worst case of each LLM task's first call (dependency outputs at full length, "
            f"every output token used); tasks that use tools call again, up to {calls} calls "
            f"in all, and can cost more")
    if unpriced:
        note += f"; not included: {missing} ({fix})"
    return total, note


def preview_plan(plan: Plan, *, strategy: str | None = None,
                 max_workers: int | None = None) -> dict[str, Any]:
    """The preview as JSON-ready data (what `plan --json` prints)."""
    sim = simulate(plan, strategy=strategy, max_workers=max_workers)  # type: ignore[arg-type]
    effective = strategy or plan.strategy or "dependency"
    estimates = {t.id: t.estimated_seconds for t in plan.tasks}
    cp_seconds, cp = critical_path(plan, estimates)
    serial = sum(estimates.values())
    cost, cost_note = predicted_cost(plan)
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
