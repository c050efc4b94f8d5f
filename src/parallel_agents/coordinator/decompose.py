"""Request text -> a plan: LLM structured output, then validation and repair, or a template.

A model's plan is never trusted as is. Whatever comes back (broken JSON, a bare list, tasks
that depend on themselves or on tasks that do not exist, cycles, roles nobody defined,
priorities like "urgent", estimates like "2 min") is repaired into a valid plan, and every
repair is listed so a user can see how far the plan is from what the model said. When the
model's answer is unusable, or coarser than the coordinator's own keyword analysis of the
request, the keyword plan is used instead, and that is recorded as a repair too.

Then the coordinator decides serial or parallel (the seeds: "parallel only if beneficial"):
fewer than 3 parts, parts that form a chain, tiny work or a predicted speedup under 1.2x keep
the request in one task.
"""

from __future__ import annotations

import graphlib
import json
import re
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..plan import PRIORITY_NAMES, Plan
from ..providers.base import ChatRequest, Message, Provider, ProviderError
from ..simulate import simulate
from .distribute import DEFAULT_POOLS, ROLES, closest_role, distribute, role_hint
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
    "stream_raw_tasks",
]

Spec = dict[str, Any]

MIN_PARALLEL_PARTS = 3  # the architecture spec: "if len(parallel_tasks) < 3: sequential"
MIN_PARALLEL_WORK_SEC = 5.0  # "small tasks: overhead exceeds benefits for tasks < 5 seconds"
MIN_SPEEDUP = 1.2
MAX_ESTIMATE_SEC = 3600.0
DEFAULT_ESTIMATE_SEC = 60.0
MAX_TASKS = 24


@dataclass(frozen=True, slots=True)
class Repair:
    """One change made to a model's plan: what kind, which task, what and why."""

    kind: str  # parse | structure | id | duplicate_id | self_dependency | unknown_dependency
    #          # | cycle | unknown_role | priority | estimate | description | fallback | limit
    message: str
    task_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "task": self.task_id, "message": self.message}

    def __str__(self) -> str:
        where = f"{self.task_id}: " if self.task_id else ""
        return f"[{self.kind}] {where}{self.message}"


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
        }


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


# -- parsing -----------------------------------------------------------------------------
def _strip_fences(text: str) -> str:
    m = re.search(r"```(?:json)?\s*(.*?)(?:```|$)", text, re.DOTALL | re.IGNORECASE)
    return m.group(1) if m else text


def _close_truncated(text: str) -> str:
    """Close the strings, arrays and objects a cut-off answer left open."""
    stack: list[str] = []
    in_str = esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
        elif ch in "}]" and stack:
            stack.pop()
    out = text + ('"' if in_str else "")
    out = re.sub(r",\s*$", "", out.rstrip())
    out = re.sub(r'[,{]\s*"[^"]*"\s*:?\s*$', lambda m: "{" if m.group(0)[0] == "{" else "",
                 out)
    return out + "".join(reversed(stack))


def parse_plan_text(text: str) -> tuple[Any, list[Repair]]:
    """Best-effort JSON from a model's answer: (data or None, repairs made to read it)."""
    repairs: list[Repair] = []
    body = _strip_fences(text or "").strip()
    if body != (text or "").strip():
        repairs.append(Repair("parse", "removed text around the JSON (markdown fences)"))
    starts = [i for i in (body.find("{"), body.find("[")) if i >= 0]
    if not starts:
        repairs.append(Repair("parse", "the answer contains no JSON object or list"))
        return None, repairs
    start = min(starts)
    if start > 0:
        repairs.append(Repair("parse", "ignored text before the JSON"))
    body = body[start:]
    decoder = json.JSONDecoder()
    attempts = [
        ("", body),
        ("removed trailing commas", re.sub(r",\s*([}\]])", r"\1", body)),
        ("replaced single quotes with double quotes",
         re.sub(r",\s*([}\]])", r"\1", body.replace("'", '"'))),
        ("closed a truncated answer", _close_truncated(re.sub(r",\s*([}\]])", r"\1", body))),
        ("closed a truncated answer", _close_truncated(body.replace("'", '"'))),
    ]
    for note, candidate in attempts:
        try:
            data, end = decoder.raw_decode(candidate)
        except json.JSONDecodeError:
            continue
        if note:
            repairs.append(Repair("parse", f"invalid JSON: {note}"))
        if candidate[end:].strip():
            repairs.append(Repair("parse", "ignored text after the JSON"))
        return data, repairs
    repairs.append(Repair("parse", "the JSON could not be read even after repairs"))
    return None, repairs


_TASK_KEYS = ("tasks", "plan", "subtasks", "steps", "items", "parts", "agents", "jobs")


def _task_list(data: Any, repairs: list[Repair]) -> list[Any] | None:
    if isinstance(data, list):
        repairs.append(Repair("structure", "the answer is a bare list: read it as the tasks"))
        return data
    if not isinstance(data, dict):
        return None
    for key in _TASK_KEYS:
        value = data.get(key)
        if isinstance(value, list):
            if key != "tasks":
                repairs.append(Repair("structure", f"tasks found under {key!r}"))
            return value
        if isinstance(value, dict) and isinstance(value.get("tasks"), list):
            repairs.append(Repair("structure", f"tasks found under {key}.tasks"))
            return value["tasks"]
    for key, value in data.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            repairs.append(Repair("structure", f"tasks found under {key!r}"))
            return value
    if any(k in data for k in ("description", "agent", "role", "task")):
        repairs.append(Repair("structure", "the answer is a single task object"))
        return [data]
    return None


_ALIASES = {
    "id": ("id", "name", "task_id", "key", "title"),
    "agent": ("agent", "role", "agent_type", "type", "assignee", "worker"),
    "description": ("description", "task", "prompt", "goal", "details", "summary", "title",
                    "name"),
    "depends_on": ("depends_on", "dependencies", "deps", "after", "wait_for", "requires",
                   "blocked_by", "needs"),
    "priority": ("priority", "prio", "importance"),
    "estimated_seconds": ("estimated_seconds", "estimate", "estimated_time", "duration",
                          "time", "seconds", "eta"),
}


def _pick(raw: dict[str, Any], field_name: str) -> tuple[Any, str | None]:
    for key in _ALIASES[field_name]:
        if key in raw and raw[key] not in (None, ""):
            return raw[key], key
    return None, None


def _clean_id(value: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "_", value.strip().lower()).strip("_-")[:60]


def _priority(value: Any) -> tuple[int | None, str | None]:
    """(priority 0-10, what was wrong) or (None, problem) when unusable."""
    if isinstance(value, bool) or value is None:
        return None, f"priority {value!r} is not a number"
    if isinstance(value, str):
        key = value.strip().lower()
        if key in PRIORITY_NAMES:
            return PRIORITY_NAMES[key], None
        aliases = {"urgent": 10, "highest": 10, "normal": 5, "lowest": 0, "p0": 10, "p1": 7,
                   "p2": 5, "p3": 2}
        if key in aliases:
            return aliases[key], f"priority {value!r} read as {aliases[key]}"
        try:
            value = float(key)
        except ValueError:
            return None, f"priority {value!r} is not critical|high|medium|low or 0-10"
    if isinstance(value, (int, float)):
        if value != value:  # NaN
            return None, "priority is NaN"
        clamped = int(min(10, max(0, round(value))))
        if clamped != value:
            return clamped, f"priority {value!r} clamped to {clamped} (0-10)"
        return clamped, None
    return None, f"priority {value!r} is not a number"


_UNIT_SEC = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600,
             "hr": 3600, "hour": 3600}


def _estimate(value: Any) -> tuple[float | None, str | None]:
    if isinstance(value, bool) or value is None:
        return None, f"estimate {value!r} is not a duration"
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*?)s?\s*", value.strip().lower())
        if not m or (m.group(2) and m.group(2) not in _UNIT_SEC):
            return None, f"estimate {value!r} is not a duration"
        secs = float(m.group(1)) * _UNIT_SEC.get(m.group(2) or "s", 1)
        note = f"estimate {value!r} read as {secs:g} s" if m.group(2) else None
        value = secs
    else:
        note = None
    if not isinstance(value, (int, float)) or value != value:
        return None, f"estimate {value!r} is not a duration"
    if value <= 0:
        return None, f"estimate {value!r} is not positive"
    if value > MAX_ESTIMATE_SEC:
        return MAX_ESTIMATE_SEC, f"estimate {value:g} s clamped to {MAX_ESTIMATE_SEC:g} s"
    return float(value), note


class TaskRepairer:
    """Repairs tasks one at a time (so streamed tasks can be repaired as they arrive).

    Ids are cleaned and made unique, roles mapped to ours, pools chosen by the distributor,
    priorities and estimates clamped. Dependencies are cleaned of self-references here;
    unknown ones and cycles need the whole plan (`finish_graph`).
    """

    def __init__(self, request: str, pools: dict[str, Any] | None = None,
                 model: str | None = None) -> None:
        self.request = request
        self.pools = pools or DEFAULT_POOLS
        self.model = model
        self.repairs: list[Repair] = []
        self.ids: dict[str, None] = {}
        self.aliases: dict[str, str] = {}  # ids as the model wrote them -> ours
        self.distribution: dict[str, dict[str, Any]] = {}
        self._index = 0

    def _note(self, kind: str, message: str, task_id: str | None = None) -> None:
        self.repairs.append(Repair(kind, message, task_id))

    def repair(self, raw: Any) -> Spec | None:
        """One raw task from the model -> a clean task spec (None if nothing usable)."""
        self._index += 1
        index = self._index
        if isinstance(raw, str):
            raw = {"description": raw}
            self._note("structure", f"task #{index} is a plain string: used as description")
        if not isinstance(raw, dict):
            self._note("structure", f"task #{index} is not an object ({type(raw).__name__}): "
                       "dropped")
            return None
        if len(self.ids) >= MAX_TASKS:
            self._note("limit", f"more than {MAX_TASKS} tasks: task #{index} dropped")
            return None
        description, _ = _pick(raw, "description")
        description = str(description).strip() if description is not None else ""
        role_raw, _ = _pick(raw, "agent")
        raw_id, _ = _pick(raw, "id")
        raw_id = str(raw_id) if raw_id is not None else ""
        task_id = _clean_id(raw_id)
        if not description:
            description = raw_id or str(role_raw or "")
            if not description:
                self._note("description", f"task #{index} has no description, id or role: "
                           "dropped")
                return None
            self._note("description", f"no description: used {description!r}", task_id or None)
        # role
        if role_raw is None or not str(role_raw).strip():
            role, how = closest_role("", description)
            self._note("unknown_role", f"no role given: {role!r} ({how})", task_id or None)
        else:
            role, how = closest_role(str(role_raw), description)
            if how != "exact":
                self._note("unknown_role", f"unknown role {role_raw!r} mapped to {role!r} "
                           f"({how})", task_id or None)
        # id
        if not task_id:
            task_id = _clean_id(f"{role}_{index}")
            self._note("id", f"task #{index} has no usable id {raw_id!r}: named {task_id!r}",
                       task_id)
        elif task_id != raw_id:
            self._note("id", f"id {raw_id!r} cleaned to {task_id!r}", task_id)
        if task_id in self.ids:
            base, n = task_id, 2
            while f"{base}_{n}" in self.ids:
                n += 1
            task_id = f"{base}_{n}"
            self._note("duplicate_id", f"duplicate id {base!r} renamed {task_id!r}", task_id)
        else:
            self.aliases.setdefault(raw_id, task_id)
            self.aliases.setdefault(_clean_id(raw_id), task_id)
        self.ids[task_id] = None
        # priority / estimate
        pr_raw, _ = _pick(raw, "priority")
        priority = 5
        if pr_raw is not None:
            value, problem = _priority(pr_raw)
            if value is None:
                self._note("priority", f"{problem}: used 5 (medium)", task_id)
            else:
                priority = value
                if problem:
                    self._note("priority", problem, task_id)
        est_raw, _ = _pick(raw, "estimated_seconds")
        estimate = DEFAULT_ESTIMATE_SEC
        if est_raw is not None:
            value_f, problem = _estimate(est_raw)
            if value_f is None:
                self._note("estimate", f"{problem}: used {DEFAULT_ESTIMATE_SEC:g} s", task_id)
            else:
                estimate = value_f
                if problem:
                    self._note("estimate", problem, task_id)
        # dependencies (as written; mapped to our ids in finish_graph / by the stream)
        deps_raw, _ = _pick(raw, "depends_on")
        if deps_raw is None:
            deps: list[str] = []
        elif isinstance(deps_raw, (str, int)):
            deps = [str(deps_raw)]
        elif isinstance(deps_raw, list):
            deps = [str(d) for d in deps_raw if isinstance(d, (str, int)) and str(d).strip()]
        else:
            deps = []
            self._note("unknown_dependency", f"depends_on {deps_raw!r} is not a list: ignored",
                       task_id)
        dist = distribute(f"{description} {raw_id}", role, self.pools)
        self.distribution[task_id] = dist.to_dict()
        spec: Spec = {
            "id": task_id, "pool": dist.pool, "agent": role, "description": description,
            "prompt": f"{description}\n\nThe overall request: {self.request}",
            "priority": priority, "depends_on": deps, "estimated_seconds": estimate,
        }
        if self.model:
            spec["model"] = self.model
        return spec

    def resolve_dep(self, task_id: str, dep: str) -> str | None:
        """A dependency as the model wrote it -> our id, or None if it names no known task."""
        target = self.aliases.get(dep) or self.aliases.get(_clean_id(dep))
        if target is None and _clean_id(dep) in self.ids:
            target = _clean_id(dep)
        return target

    def clean_deps(self, spec: Spec, known: Iterable[str], *, final: bool) -> list[str]:
        """Map `spec`'s dependencies to known ids; drop self-references (and, when `final`,
        unknown ones). Returns the dependencies still unresolved (streaming only)."""
        known = set(known)
        out: list[str] = []
        pending: list[str] = []
        for dep in spec["depends_on"]:
            target = self.resolve_dep(spec["id"], dep)
            if target == spec["id"] or _clean_id(dep) == spec["id"]:
                self._note("self_dependency", f"depends on itself ({dep!r}): dropped",
                           spec["id"])
                continue
            if target is not None and target in known:
                if target not in out:
                    out.append(target)
                continue
            if final:
                self._note("unknown_dependency", f"depends on unknown task {dep!r}: dropped",
                           spec["id"])
            else:
                pending.append(dep)
        spec["depends_on"] = out + pending
        return pending


def break_cycles(tasks: list[Spec], repairs: list[Repair]) -> None:
    """Drop dependency edges until the graph is acyclic, recording each.

    In a cycle the dropped edge is the one whose dependency comes later in the plan: models
    list tasks roughly in order, so "depends on a later task" is the likely mistake.
    """
    order = {t["id"]: i for i, t in enumerate(tasks)}
    by_id = {t["id"]: t for t in tasks}
    while True:
        sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
        for t in tasks:
            sorter.add(t["id"], *t["depends_on"])
        try:
            sorter.prepare()
            return
        except graphlib.CycleError as exc:
            cycle = list(exc.args[1])  # [a, b, ..., a]: each depends on the next? (graphlib)
            edges = []
            for a, b in zip(cycle, cycle[1:], strict=False):
                # graphlib lists the cycle so that consecutive nodes are dependency edges in
                # one direction or the other; keep the pairs that are real edges.
                if b in by_id[a]["depends_on"]:
                    edges.append((a, b))
                elif a in by_id[b]["depends_on"]:
                    edges.append((b, a))
            task_id, dep = max(edges, key=lambda e: (order[e[1]] - order[e[0]], order[e[0]]))
            by_id[task_id]["depends_on"].remove(dep)
            path = " -> ".join(reversed(cycle))
            repairs.append(Repair("cycle", f"cycle {path} (a -> b: a depends on b): dropped "
                                  f"its dependency on {dep!r}", task_id))


def repair_tasks(raw_tasks: list[Any], request: str, pools: dict[str, Any] | None = None,
                 model: str | None = None) -> tuple[list[Spec], list[Repair],
                                                     dict[str, dict[str, Any]]]:
    """A model's task list -> valid task specs, the repairs made, the distributor's scores."""
    fixer = TaskRepairer(request, pools, model)
    tasks = [s for s in (fixer.repair(r) for r in raw_tasks) if s is not None]
    ids = [t["id"] for t in tasks]
    for t in tasks:
        fixer.clean_deps(t, ids, final=True)
    break_cycles(tasks, fixer.repairs)
    return tasks, fixer.repairs, fixer.distribution


# -- the decision ------------------------------------------------------------------------
def _plan_dict(name: str, tasks: list[Spec], pools: dict[str, Any],
               strategy: str = "dependency") -> dict[str, Any]:
    used = {t["pool"] for t in tasks}
    return {"name": name, "strategy": strategy,
            "pools": {p: dict(cfg) for p, cfg in pools.items() if p in used},
            "tasks": tasks}


def _preview(tasks: list[Spec], pools: dict[str, Any]) -> tuple[float, float, int]:
    """(predicted makespan, serial time, peak parallelism) from the estimates."""
    from ..plan import Pool, Task

    plan = Plan(
        pools={p: Pool(**cfg) for p, cfg in pools.items()},
        tasks=tuple(Task(id=t["id"], pool=t["pool"], priority=t["priority"],
                         depends_on=tuple(t["depends_on"]),
                         estimated_seconds=t["estimated_seconds"], run=_noop) for t in tasks),
    )
    sim = simulate(plan)
    peak = 0
    points = sorted([(a.start, 1) for a in sim.attempts] + [(a.end, -1) for a in sim.attempts],
                    key=lambda p: (p[0], p[1]))
    cur = 0
    for _, d in points:
        cur += d
        peak = max(peak, cur)
    return sim.makespan, sim.serial_seconds, peak


def _noop() -> None:  # a placeholder callable: the preview only needs estimates
    return None


def decide(tasks: list[Spec], pools: dict[str, Any]) -> tuple[str, str, float, float]:
    """serial | parallel, the reason, predicted makespan and serial time."""
    n = len(tasks)
    if n == 0:
        return "serial", "no tasks", 0.0, 0.0
    makespan, serial, peak = _preview(tasks, pools)
    if n < MIN_PARALLEL_PARTS:
        return ("serial", f"only {n} part(s): parallel runs pay off from "
                f"{MIN_PARALLEL_PARTS} independent parts", makespan, serial)
    if peak < 2:
        return ("serial", f"the {n} parts form a chain (no two can run at once)",
                makespan, serial)
    if serial < MIN_PARALLEL_WORK_SEC:
        return ("serial", f"tiny work ({serial:.1f} s estimated): the overhead of splitting "
                f"exceeds the benefit below {MIN_PARALLEL_WORK_SEC:g} s", makespan, serial)
    speedup = serial / makespan if makespan > 0 else 1.0
    if speedup < MIN_SPEEDUP:
        return ("serial", f"predicted speedup {speedup:.2f}x is under {MIN_SPEEDUP}x",
                makespan, serial)
    return ("parallel", f"{n} parts, up to {peak} at once: predicted {makespan:.0f} s instead "
            f"of {serial:.0f} s ({speedup:.1f}x)", makespan, serial)


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
                            pools: dict[str, Any]) -> bool:
    """The model's plan forfeits parallelism that the request's own words clearly have.

    True when the keyword plan is parallel (>= 3 tasks in >= 2 pools, and beneficial) while
    the model's plan has fewer tasks or pools, or would be run serially (e.g. a chain).
    """
    if len(keywords) < MIN_PARALLEL_PARTS or len(_pools_of(keywords)) < 2:
        return False
    if decide(keywords, pools)[0] != "parallel":
        return False
    if len(llm) < MIN_PARALLEL_PARTS or len(_pools_of(llm)) < 2:
        return True
    return decide(llm, pools)[0] == "serial"


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
) -> Decomposition:
    """Turn `request` into a plan.

    With `template`, the template's tasks exactly. Otherwise ask `provider` for a plan (JSON
    schema), repair it, and fall back on the keyword analysis when the answer is unusable
    or coarser than that analysis; without a provider, the keyword analysis directly.
    `model` ("PROVIDER:MODEL") is set on every task; `planner_model` is the model name the
    planning request carries.
    """
    request = (request or "").strip()
    if not request:
        from .._exceptions import UsageError

        raise UsageError("the request is empty: say what you want built or done")
    pools = dict(pools or DEFAULT_POOLS)
    name = _plan_name(request)
    if template is not None:
        tasks = template_tasks(template, request)
        if model:
            for t in tasks:
                t["model"] = model
        key = template.strip().lower().replace("-", "_")
        makespan, serial, _ = _preview(tasks, pools)
        return Decomposition(
            request=request, plan=_plan_dict(name, tasks, pools), decision="parallel",
            reason=f"template {key!r} requested: its {len(tasks)} tasks as defined "
                   f"(predicted {makespan:.0f} s instead of {serial:.0f} s)",
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
    source, strategy = "keywords", kw_strategy
    if provider is not None:
        try:
            response = await provider.complete(planning_request(request, planner_model,
                                                                max_tokens))
            llm_text = response.text
        except ProviderError as exc:
            repairs.append(Repair("fallback", f"the planner call failed ({exc}): used the "
                                  f"keyword plan ({kw_strategy})"))
        if llm_text is not None:
            data, parse_repairs = parse_plan_text(llm_text)
            repairs += parse_repairs
            raw = _task_list(data, repairs) if data is not None else None
            if raw is not None:
                got, task_repairs, distribution = repair_tasks(raw, request, pools, model)
                repairs += task_repairs
                if got:
                    tasks, source, strategy = got, "llm", None
            if tasks is None:
                repairs.append(Repair("fallback", "the model's answer has no usable tasks: "
                                      f"used the keyword plan ({kw_strategy})"))
            elif _keyword_plan_is_better(tasks, kw_tasks, pools):
                mode, why, _, _ = decide(tasks, pools)
                shape = (f"{len(tasks)} task(s) in {len(_pools_of(tasks))} pool(s)"
                         + (f", {why}" if mode == "serial" else ""))
                repairs.append(Repair(
                    "fallback",
                    f"the model's plan ({shape}) is coarser than the request's own parts "
                    f"({', '.join(t['id'] for t in kw_tasks)}): used the keyword plan "
                    f"({kw_strategy})"))
                tasks, source, strategy = None, "keywords", kw_strategy
    if tasks is None:
        tasks = kw_tasks
        if model:
            for t in tasks:
                t["model"] = model
        distribution = {t["id"]: distribute(t["description"], t["agent"], pools).to_dict()
                        for t in tasks}
        for t in tasks:
            t["pool"] = distribution[t["id"]]["pool"] if t["id"] == "main" else t["pool"]
    decision, reason, makespan, serial = decide(tasks, pools)
    if decision == "serial" and (len(tasks) > 1 or tasks[0]["id"] != "main"):
        tasks = _collapse(request, tasks, pools, model)
        distribution = {"main": distribute(request, tasks[0]["agent"], pools).to_dict()}
        makespan = serial = tasks[0]["estimated_seconds"]
    return Decomposition(
        request=request, plan=_plan_dict(name, tasks, pools,
                                         "dependency"),
        decision=decision, reason=reason, source=source, strategy=strategy,
        repairs=repairs, distribution=distribution, predicted_makespan=makespan,
        predicted_serial=serial, llm_text=llm_text,
    )


def _plan_name(request: str) -> str:
    words = re.findall(r"[a-z0-9]+", request.lower())[:6]
    return "-".join(words) or "request"


# -- streaming ---------------------------------------------------------------------------
class _ObjectScanner:
    """Finds the objects inside the first JSON array of a streamed answer, as they close.

    Works on text as it arrives: `feed(chunk)` returns the task objects completed by that
    chunk (parsed, with the same lenient repairs as a whole answer).
    """

    def __init__(self) -> None:
        self.buf = ""
        self.pos = 0
        self.depth = 0
        self.in_str = False
        self.esc = False
        self.array_depth: int | None = None  # depth of the tasks array once seen
        self.obj_start: int | None = None

    def feed(self, chunk: str) -> list[Any]:
        self.buf += chunk
        out: list[Any] = []
        while self.pos < len(self.buf):
            ch = self.buf[self.pos]
            if self.in_str:
                if self.esc:
                    self.esc = False
                elif ch == "\\":
                    self.esc = True
                elif ch == '"':
                    self.in_str = False
            elif ch == '"':
                self.in_str = True
            elif ch in "{[":
                self.depth += 1
                if ch == "[" and self.array_depth is None:
                    self.array_depth = self.depth
                elif (ch == "{" and self.array_depth is not None
                      and self.depth == self.array_depth + 1):
                    self.obj_start = self.pos
            elif ch in "}]":
                if (ch == "}" and self.obj_start is not None and self.array_depth is not None
                        and self.depth == self.array_depth + 1):
                    text = self.buf[self.obj_start:self.pos + 1]
                    data, _ = parse_plan_text(text)
                    if data is not None:
                        out.append(data)
                    self.obj_start = None
                self.depth -= 1
            self.pos += 1
        return out


async def stream_raw_tasks(provider: Provider, request: ChatRequest,
                           sink: list[str]) -> AsyncIterator[Any]:
    """The model's tasks, each as soon as its JSON object is complete.

    Uses the provider's optional `stream(request)` (an async iterator of text deltas) when it
    has one; otherwise the whole answer arrives at once and its tasks follow one by one.
    The full text is appended to `sink` for the record.
    """
    scanner = _ObjectScanner()
    stream = getattr(provider, "stream", None)
    if stream is not None:
        async for delta in stream(request):
            sink.append(delta)
            for obj in scanner.feed(delta):
                yield obj
        return
    response = await provider.complete(request)
    sink.append(response.text)
    data, _ = parse_plan_text(response.text)
    raw = _task_list(data, []) if data is not None else None
    for obj in raw or []:
        yield obj


