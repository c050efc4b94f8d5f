"""Reading and repairing a model's plan: lenient JSON, then one task at a time, then the graph.

A model's plan is never trusted as is. Whatever comes back (broken JSON, a bare list, tasks
that depend on themselves or on tasks that do not exist, cycles, roles nobody defined,
priorities like "urgent", estimates like "2 min") is repaired into valid task specs, and every
repair is listed so a user can see how far the plan is from what the model said.
"""

from __future__ import annotations

import graphlib
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..plan import PRIORITY_NAMES
from .distribute import DEFAULT_POOLS, closest_role, distribute

__all__ = ["Repair", "TaskRepairer", "parse_plan_text", "task_list", "repair_tasks",
           "break_cycles", "MAX_ESTIMATE_SEC", "DEFAULT_ESTIMATE_SEC", "MAX_TASKS"]

Spec = dict[str, Any]

MAX_ESTIMATE_SEC = 3600.0
DEFAULT_ESTIMATE_SEC = 60.0
MAX_TASKS = 24


@dataclass(frozen=True, slots=True)
class Repair:
    """One change made to a model's plan: what kind, which task, what and why."""

    kind: str  # parse | structure | id | duplicate_id | self_dependency | unknown_dependency
    #          # | cycle | unknown_role | priority | estimate | description | fallback | limit
    #          # | budget (the planner was not asked: its call did not fit the budget)
    message: str
    task_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "task": self.task_id, "message": self.message}

    def __str__(self) -> str:
        where = f"{self.task_id}: " if self.task_id else ""
        return f"[{self.kind}] {where}{self.message}"


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


def task_list(data: Any, repairs: list[Repair]) -> list[Any] | None:
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
        if not math.isfinite(value):
            return None, f"priority {value!r} is not a finite number"
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
