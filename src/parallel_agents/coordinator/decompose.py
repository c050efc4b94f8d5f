"""Request text -> a plan: LLM structured output, then validation and repair, or a template.

A model's plan is never trusted as is: `repair` turns any answer into valid tasks and lists
every change. When the answer is unusable, or forfeits parallelism that the coordinator's own
keyword analysis of the request finds, the keyword plan is used instead, recorded as a repair.

Then the coordinator decides serial or parallel (the seeds: "parallel only if beneficial"):
fewer than 3 parts, parts that form a chain, tiny work or a predicted speedup under 1.2x keep
the request in one task.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..plan import Plan
from ..pricing import PriceTable, estimate_prompt_tokens
from ..providers.base import ChatRequest, Message, Provider, ProviderError, Usage
from ..simulate import simulate
from .distribute import DEFAULT_POOLS, ROLES, distribute, role_hint
from .repair import Repair, TaskRepairer, break_cycles, parse_plan_text, repair_tasks, task_list
from .stream import stream_raw_tasks
from .templates import keyword_tasks, template_tasks

__all__ = [
    "Repair",
    "Decomposition",
    "PLAN_SCHEMA",
    "decompose",
    "parse_plan_text",
    "repair_tasks",
    "decide",
    "planning_request",
    "TaskRepairer",
    "break_cycles",
    "stream_raw_tasks",
]

Spec = dict[str, Any]

MIN_PARALLEL_PARTS = 3  # the architecture spec: "if len(parallel_tasks) < 3: sequential"
MIN_PARALLEL_WORK_SEC = 5.0  # "small tasks: overhead exceeds benefits for tasks < 5 seconds"
MIN_SPEEDUP = 1.2


@dataclass(slots=True)
class Decomposition:
    """The coordinator's plan for a request and how it got there."""

    request: str
    plan: dict[str, Any]  # the plan-file schema: name, strategy, pools, tasks
    decision: str  # serial | parallel
    reason: str
    source: str  # template | llm | keywords
    template: str | None = None
    strategy: str | None = None  # file_based | feature_based | layer_based | phases | ...
    repairs: list[Repair] = field(default_factory=list)
    distribution: dict[str, dict[str, Any]] = field(default_factory=dict)
    predicted_makespan: float | None = None
    predicted_serial: float | None = None
    llm_text: str | None = None
    #: the planning call, when one was made: {"model", "calls", "usage", "cost_usd"}. The run
    #: counts it in its cost and tokens and against its budget (`Prepaid`).
    planning: dict[str, Any] | None = None

    @property
    def tasks(self) -> list[Spec]:
        return self.plan["tasks"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "request": self.request, "decision": self.decision, "reason": self.reason,
            "source": self.source, "template": self.template, "strategy": self.strategy,
            "plan": self.plan, "repairs": [r.to_dict() for r in self.repairs],
            "distribution": self.distribution,
            "predicted_makespan_seconds": self.predicted_makespan,
            "predicted_serial_seconds": self.predicted_serial,
            "planning": self.planning,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Decomposition:
        """The inverse of `to_dict` (a resumed run's coordinator reads it back from the
        store; the planner's raw text is not kept)."""
        return cls(
            request=data["request"], plan=data["plan"], decision=data["decision"],
            reason=data["reason"], source=data["source"], template=data.get("template"),
            strategy=data.get("strategy"),
            repairs=[Repair(r["kind"], r["message"], r.get("task"))
                     for r in data.get("repairs") or []],
            distribution=dict(data.get("distribution") or {}),
            predicted_makespan=data.get("predicted_makespan_seconds"),
            predicted_serial=data.get("predicted_serial_seconds"),
            planning=data.get("planning") if isinstance(data.get("planning"), dict) else None,
        )


# -- the LLM request ---------------------------------------------------------------------
# Bounded (items, string lengths) so a grammar-constrained small model cannot ramble until
# it runs out of tokens; the bounds are plain JSON Schema that remote providers accept too.
PLAN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "tasks": {
            "type": "array",
            "minItems": 1,
            "maxItems": 8,
            "items": {
                "type": "object",
                "properties": {
                    "id": {"type": "string", "maxLength": 40},
                    "agent": {"type": "string", "enum": list(ROLES)},
                    "description": {"type": "string", "maxLength": 300},
                    "depends_on": {"type": "array", "maxItems": 6,
                                   "items": {"type": "string", "maxLength": 40}},
                    "priority": {"type": "integer", "minimum": 0, "maximum": 10},
                    "estimated_seconds": {"type": "integer", "minimum": 1, "maximum": 3600},
                },
                "required": ["id", "agent", "description", "depends_on"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["tasks"],
    "additionalProperties": False,
}

_SYSTEM = (
    "You are a project coordinator. Split the user's request into independent tasks for "
    "specialist agents that work in parallel. Agents: " + ", ".join(ROLES) + ". "
    "Use 3 to 6 tasks for a project, 1 task for a small request. A task lists in depends_on "
    "the ids of tasks it needs first. Reply with JSON only, like: "
    '{"tasks": [{"id": "schema", "agent": "database", "description": "Design the tables", '
    '"depends_on": [], "priority": 7, "estimated_seconds": 60}, {"id": "api", "agent": '
    '"backend", "description": "Build the API", "depends_on": ["schema"], "priority": 7, '
    '"estimated_seconds": 120}]}'
)


def planning_request(request: str, model: str = "", max_tokens: int = 768) -> ChatRequest:
    """The structured-output request the planner sends (one system, one user message)."""
    return ChatRequest(
        model=model,
        messages=[Message("system", _SYSTEM), Message("user", request)],
        max_tokens=max_tokens, temperature=0.1, json_schema=PLAN_SCHEMA,
    )


# -- the decision ------------------------------------------------------------------------
def _plan_dict(name: str, tasks: list[Spec], pools: dict[str, Any],
               strategy: str = "dependency") -> dict[str, Any]:
    used = {t["pool"] for t in tasks}
    return {"name": name, "strategy": strategy,
            "pools": {p: dict(cfg) for p, cfg in pools.items() if p in used},
            "tasks": tasks}


def _preview(tasks: list[Spec], pools: dict[str, Any], *, strategy: str | None = None,
             max_workers: int | None = None) -> tuple[float, float, int]:
    """(predicted makespan, serial time, peak parallelism) from the estimates, under the
    run's own scheduling strategy and worker limit (what the executor will really do)."""
    from ..plan import Pool, Task

    plan = Plan(
        pools={p: Pool(**cfg) for p, cfg in pools.items()},
        tasks=tuple(Task(id=t["id"], pool=t["pool"], priority=t["priority"],
                         depends_on=tuple(t["depends_on"]),
                         estimated_seconds=t["estimated_seconds"], run=_noop) for t in tasks),
    )
    sim = simulate(plan, strategy=strategy, max_workers=max_workers)  # type: ignore[arg-type]
    peak = 0
    points = sorted([(a.start, 1) for a in sim.attempts] + [(a.end, -1) for a in sim.attempts],
                    key=lambda p: (p[0], p[1]))
    cur = 0
    for _, d in points:
        cur += d
        peak = max(peak, cur)
    return sim.makespan, sim.serial_seconds, peak


def limits_note(strategy: str | None, max_workers: int | None) -> str:
    """The run's limits as the decision's reason names them ("" when there are none)."""
    parts = []
    if max_workers is not None:
        parts.append(f"max_workers {max_workers}")
    if strategy not in (None, "dependency"):
        parts.append(f"strategy {strategy}")
    return ", ".join(parts)


def check_strategy(strategy: str | None) -> None:
    """UsageError for a strategy a coordinated run cannot use (its plans have no stages)."""
    if strategy == "pipeline":
        from .._exceptions import UsageError

        raise UsageError("the pipeline strategy needs a stage on every task, and the "
                         "coordinator's plans have none: use dependency (the default), waves "
                         "or sequential with a request")


def _noop() -> None:  # a placeholder callable: the preview only needs estimates
    return None


def decide(tasks: list[Spec], pools: dict[str, Any], *, strategy: str | None = None,
           max_workers: int | None = None) -> tuple[str, str, float, float]:
    """serial | parallel, the reason, predicted makespan and serial time.

    `strategy` and `max_workers` are the run's (`--strategy`, `--max-workers`): the
    prediction is the schedule the executor will follow under them, so a run limited to one
    task at a time is not split for nothing."""
    n = len(tasks)
    if n == 0:
        return "serial", "no tasks", 0.0, 0.0
    makespan, serial, peak = _preview(tasks, pools, strategy=strategy, max_workers=max_workers)
    limits = limits_note(strategy, max_workers)
    if n < MIN_PARALLEL_PARTS:
        return ("serial", f"only {n} part(s): parallel runs pay off from "
                f"{MIN_PARALLEL_PARTS} independent parts", makespan, serial)
    if peak < 2:
        if limits and _preview(tasks, pools)[2] >= 2:
            return ("serial", f"the run's limits ({limits}) let only one task run at a time: "
                    f"splitting the {n} parts cannot save time", makespan, serial)
        return ("serial", f"the {n} parts form a chain (no two can run at once)",
                makespan, serial)
    if serial < MIN_PARALLEL_WORK_SEC:
        return ("serial", f"tiny work ({serial:.1f} s estimated): the overhead of splitting "
                f"exceeds the benefit below {MIN_PARALLEL_WORK_SEC:g} s", makespan, serial)
    speedup = serial / makespan if makespan > 0 else 1.0
    under = f" under {limits}" if limits else ""
    if speedup < MIN_SPEEDUP:
        return ("serial", f"predicted speedup {speedup:.2f}x{under} is under {MIN_SPEEDUP}x",
                makespan, serial)
    return ("parallel", f"{n} parts, up to {peak} at once{under}: predicted {makespan:.0f} s "
            f"instead of {serial:.0f} s ({speedup:.1f}x)", makespan, serial)


def _collapse(request: str, tasks: list[Spec], pools: dict[str, Any],
              model: str | None) -> list[Spec]:
    """Serial: the whole request stays one task (its parts become steps of the prompt).

    The role comes from the request's own words when they say something, else from the
    planner's first task: a small model's role for a one-line request is often a guess.
    """
    role = role_hint(request) or (tasks[0]["agent"] if tasks else None)
    dist = distribute(request, role, pools)
    steps = ""
    if len(tasks) > 1:
        steps = "\n\nSteps:\n" + "\n".join(f"{i}. {t['description']}"
                                           for i, t in enumerate(tasks, 1))
    main = {"id": "main", "pool": dist.pool, "agent": dist.role, "description": request,
            "prompt": request + steps, "priority": 5, "depends_on": [],
            "estimated_seconds": float(sum(t["estimated_seconds"] for t in tasks) or 30.0)}
    if model:
        main["model"] = model
    return [main]


def _pools_of(tasks: list[Spec]) -> set[str]:
    return {t["pool"] for t in tasks}


def _keyword_plan_is_better(llm: list[Spec], keywords: list[Spec],
                            pools: dict[str, Any], **limits: Any) -> bool:
    """The model's plan forfeits parallelism that the request's own words clearly have.

    True when the keyword plan is parallel (>= 3 tasks in >= 2 pools, and beneficial) while
    the model's plan has fewer tasks or pools, or would be run serially (e.g. a chain).
    """
    if len(keywords) < MIN_PARALLEL_PARTS or len(_pools_of(keywords)) < 2:
        return False
    if decide(keywords, pools, **limits)[0] != "parallel":
        return False
    if len(llm) < MIN_PARALLEL_PARTS or len(_pools_of(llm)) < 2:
        return True
    return decide(llm, pools, **limits)[0] == "serial"


# -- the entry point ---------------------------------------------------------------------
async def decompose(
    request: str,
    provider: Provider | None = None,
    *,
    template: str | None = None,
    model: str | None = None,
    planner_model: str = "",
    pools: dict[str, dict[str, Any]] | None = None,
    max_tokens: int = 768,
    force_parallel: bool = False,
    strategy: str | None = None,
    max_workers: int | None = None,
    budget_usd: float | None = None,
    prices: PriceTable | None = None,
) -> Decomposition:
    """Turn `request` into a plan.

    With `template`, the template's tasks exactly. Otherwise ask `provider` for a plan (JSON
    schema), repair it, and fall back on the keyword analysis when the answer is unusable
    or coarser than that analysis; without a provider, the keyword analysis directly.
    `model` ("PROVIDER:MODEL") is set on every task; `planner_model` is the model name the
    planning request carries. `force_parallel` keeps the parts as separate tasks even when
    the coordinator would run the request serially (the HTTP gateway's `force_parallel`).
    `strategy` and `max_workers` are the limits the plan will run under: the prediction and
    the serial/parallel decision take them into account.

    `budget_usd`: the run's spending limit. The planning call is a paid call like a task's:
    its worst case (every prompt token, `max_tokens` of answer, at `prices`) must fit, or
    the model is not asked and the keyword plan is used (a `budget` repair says why). What
    the call cost is in `Decomposition.planning`, for the run's totals and budget.
    """
    request = (request or "").strip()
    if not request:
        from .._exceptions import UsageError

        raise UsageError("the request is empty: say what you want built or done")
    check_strategy(strategy)
    limits: dict[str, Any] = {"strategy": strategy, "max_workers": max_workers}
    pools = dict(pools or DEFAULT_POOLS)
    name = _plan_name(request)
    if template is not None:
        tasks = template_tasks(template, request)
        if model:
            for t in tasks:
                t["model"] = model
        key = template.strip().lower().replace("-", "_")
        makespan, serial, _ = _preview(tasks, pools, **limits)
        note = limits_note(strategy, max_workers)
        return Decomposition(
            request=request, plan=_plan_dict(name, tasks, pools), decision="parallel",
            reason=f"template {key!r} requested: its {len(tasks)} tasks as defined "
                   f"(predicted {makespan:.0f} s instead of {serial:.0f} s"
                   + (f" under {note})" if note else ")"),
            source="template", template=key, strategy=key,
            distribution={t["id"]: {"pool": t["pool"], "role": t["agent"],
                                    "reason": "fixed by the template"} for t in tasks},
            predicted_makespan=makespan, predicted_serial=serial,
        )

    kw_tasks, kw_strategy = keyword_tasks(request)
    repairs: list[Repair] = []
    distribution: dict[str, dict[str, Any]] = {}
    llm_text: str | None = None
    tasks: list[Spec] | None = None
    planning: dict[str, Any] | None = None
    source, plan_strategy = "keywords", kw_strategy
    ask = planning_request(request, planner_model, max_tokens)
    spec = planner_spec(provider, planner_model) if provider is not None else ""
    refusal = _unaffordable(spec, ask, budget_usd, prices) if provider is not None else None
    if refusal is not None:  # not asked: the keyword plan, and the record says why
        repairs.append(Repair("budget", f"{refusal}: used the keyword plan ({kw_strategy}) "
                              f"without asking the model"))
    elif provider is not None:
        usage = Usage()
        try:
            response = await provider.complete(ask)
            llm_text = response.text
            usage = response.usage
        except ProviderError as exc:
            if isinstance(exc.usage, Usage):  # answered and billed, but unusably
                usage = exc.usage
            repairs.append(Repair("fallback", f"the planner call failed ({exc}): used the "
                                  f"keyword plan ({kw_strategy})"))
        planning = {"model": spec, "calls": 1, "usage": usage.to_dict(),
                    "cost_usd": (prices or PriceTable()).cost(spec, usage)}
        if llm_text is not None:
            data, parse_repairs = parse_plan_text(llm_text)
            repairs += parse_repairs
            raw = task_list(data, repairs) if data is not None else None
            if raw is not None:
                got, task_repairs, distribution = repair_tasks(raw, request, pools, model)
                repairs += task_repairs
                if got:
                    tasks, source, plan_strategy = got, "llm", None
            if tasks is None:
                repairs.append(Repair("fallback", "the model's answer has no usable tasks: "
                                      f"used the keyword plan ({kw_strategy})"))
            elif _keyword_plan_is_better(tasks, kw_tasks, pools, **limits):
                mode, why, _, _ = decide(tasks, pools, **limits)
                shape = (f"{len(tasks)} task(s) in {len(_pools_of(tasks))} pool(s)"
                         + (f", {why}" if mode == "serial" else ""))
                repairs.append(Repair(
                    "fallback",
                    f"the model's plan ({shape}) is coarser than the request's own parts "
                    f"({', '.join(t['id'] for t in kw_tasks)}): used the keyword plan "
                    f"({kw_strategy})"))
                tasks, source, plan_strategy = None, "keywords", kw_strategy
    if tasks is None:
        tasks = kw_tasks
        if model:
            for t in tasks:
                t["model"] = model
        distribution = {t["id"]: distribute(t["description"], t["agent"], pools).to_dict()
                        for t in tasks}
        for t in tasks:
            t["pool"] = distribution[t["id"]]["pool"] if t["id"] == "main" else t["pool"]
    decision, reason, makespan, serial = decide(tasks, pools, **limits)
    if decision == "serial" and force_parallel and len(tasks) > 1:
        decision, reason = "parallel", f"forced parallel (the coordinator would have run it " \
            f"serially: {reason})"
    elif decision == "serial" and (len(tasks) > 1 or tasks[0]["id"] != "main"):
        tasks = _collapse(request, tasks, pools, model)
        distribution = {"main": distribute(request, tasks[0]["agent"], pools).to_dict()}
        makespan = serial = tasks[0]["estimated_seconds"]
    return Decomposition(
        request=request, plan=_plan_dict(name, tasks, pools,
                                         "dependency"),
        decision=decision, reason=reason, source=source, strategy=plan_strategy,
        repairs=repairs, distribution=distribution, predicted_makespan=makespan,
        predicted_serial=serial, llm_text=llm_text, planning=planning,
    )


def planner_spec(provider: Provider, planner_model: str) -> str:
    """The `PROVIDER:MODEL` the planning call is priced as (the provider's name; a bare model
    name in the price table matches any provider)."""
    return f"{getattr(provider, 'name', None) or 'provider'}:{planner_model}"


def _unaffordable(spec: str, request: ChatRequest, budget_usd: float | None,
                  prices: PriceTable | None) -> str | None:
    """Why the planning call cannot be made under `budget_usd`, or None if it can: the same
    rule as the executor's gate (its worst case must fit, an unknown price cannot)."""
    if budget_usd is None:
        return None
    table = prices or PriceTable()
    worst = table.worst_case(spec, estimate_prompt_tokens(request), request.max_tokens)
    if worst is None:
        return (f"no price is known for the planner {spec!r}, so its call cannot be checked "
                f"against the ${budget_usd:g} budget (under a budget the planner must be a "
                f"model with a built-in price, or the free local model; or run without "
                f"--budget)")
    if worst > budget_usd * (1 + 1e-9) + 1e-12:
        return (f"the planning call on {spec} may cost up to ${worst:.6f} and the budget is "
                f"${budget_usd:g}")
    return None


def _plan_name(request: str) -> str:
    words = re.findall(r"[a-z0-9]+", request.lower())[:6]
    return "-".join(words) or "request"
