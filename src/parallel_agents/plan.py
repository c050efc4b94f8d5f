"""Plans: tasks, pools and their dependency graph, loaded from YAML/JSON or built in Python.

Validation reports *every* problem it finds, each with its location, because a user fixing a
plan file wants one round trip, not one per typo.
"""

from __future__ import annotations

import difflib
import graphlib
import inspect
import json
import shlex
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from ._exceptions import CycleError, PlanError, PlanProblem

__all__ = [
    "Pool",
    "Task",
    "Plan",
    "PRIORITY_NAMES",
    "DEFAULT_POOL",
    "Strategy",
    "STRATEGIES",
]

Strategy = Literal["dependency", "sequential", "waves", "pipeline"]
STRATEGIES: tuple[str, ...] = ("dependency", "sequential", "waves", "pipeline")

#: Named priorities map onto the 0-10 scale (10 runs first).
PRIORITY_NAMES: dict[str, int] = {"critical": 10, "high": 7, "medium": 5, "low": 2}
DEFAULT_POOL = "default"


def _coerce_priority(value: Any) -> Any:
    if isinstance(value, str):
        key = value.strip().lower()
        if key in PRIORITY_NAMES:
            return PRIORITY_NAMES[key]
        if key.isdigit():
            return int(key)
        names = "|".join(PRIORITY_NAMES)
        raise ValueError(f"unknown priority {value!r}: use {names} or a number 0-10")
    if isinstance(value, bool):
        raise ValueError("priority must be critical|high|medium|low or a number 0-10, not a boolean")
    return value


class Pool(BaseModel):
    """A worker pool: how many of its tasks may run at once, and its default task policy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_concurrent: int | None = Field(
        default=4, ge=1, description="Slots in this pool; None means no pool limit."
    )
    timeout_sec: float | None = Field(default=None, gt=0)
    max_retries: int = Field(default=0, ge=0, le=100)
    retry_backoff_sec: float = Field(default=1.0, ge=0)


class Task(BaseModel):
    """One unit of work. Exactly one of `command` (a program) or `run` (a Python callable)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, frozen=True)

    id: str = Field(min_length=1, max_length=200)
    pool: str = DEFAULT_POOL
    priority: int = Field(default=PRIORITY_NAMES["medium"], ge=0, le=10)
    depends_on: tuple[str, ...] = ()
    description: str | None = None
    timeout_sec: float | None = Field(default=None, gt=0)
    max_retries: int | None = Field(default=None, ge=0, le=100)
    retry_backoff_sec: float | None = Field(default=None, ge=0)
    estimated_seconds: float = Field(default=1.0, gt=0)
    command: tuple[str, ...] | None = None
    env: dict[str, str] = Field(default_factory=dict)
    stage: str | None = None
    #: reuse the stored output of an identical earlier task (same definition and inputs)
    cache: bool = False
    run: Callable[..., Any] | None = Field(default=None, exclude=True, repr=False)

    @field_validator("id")
    @classmethod
    def _id_is_clean(cls, value: str) -> str:
        if value != value.strip() or any(c in value for c in "\n\r\t"):
            raise ValueError(f"task id {value!r} has surrounding or control whitespace")
        return value

    @field_validator("priority", mode="before")
    @classmethod
    def _priority(cls, value: Any) -> Any:
        return _coerce_priority(value)

    @field_validator("depends_on", mode="before")
    @classmethod
    def _depends_on(cls, value: Any) -> Any:
        if isinstance(value, str):
            return (value,)
        return value

    @field_validator("command", mode="before")
    @classmethod
    def _command(cls, value: Any) -> Any:
        # A string is split like a shell would split it, but never run through a shell.
        if isinstance(value, str):
            try:
                value = shlex.split(value)
            except ValueError as exc:
                raise ValueError(f"cannot split command string: {exc}") from None
        if value is not None and len(value) == 0:
            raise ValueError("command is empty: give the program and its arguments as a list")
        return value

    @field_validator("env", mode="before")
    @classmethod
    def _env(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            # YAML turns `DEBUG: 1` into an int; environment values are strings.
            return {
                str(k): ("" if v is None else str(v).lower() if isinstance(v, bool) else str(v))
                for k, v in value.items()
            }
        return value

    @model_validator(mode="after")
    def _one_thing_to_run(self) -> Task:
        if self.command is not None and self.run is not None:
            raise ValueError("give either command or run, not both")
        if self.command is None and self.run is None:
            raise ValueError(
                "nothing to run: give a command (a program and its arguments) "
                "or, in Python, run=callable"
            )
        if self.run is not None and not callable(self.run):
            raise ValueError(f"run must be callable, got {type(self.run).__name__}")
        if self.id in self.depends_on:
            raise ValueError(f"task {self.id!r} depends on itself")
        return self

    @property
    def kind(self) -> str:
        """Which agent runs this task: "command" or "function"."""
        return "command" if self.command is not None else "function"

    def describe(self) -> dict[str, Any]:
        """The task as plain JSON data (what command tasks receive on stdin)."""
        data = self.model_dump(mode="json", exclude={"run"})
        data["kind"] = self.kind
        return data


class Plan(BaseModel):
    """A set of tasks with dependencies, priorities and pools. Validated on construction."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, frozen=True)

    name: str = "plan"
    max_workers: int | None = Field(default=None, ge=1)
    strategy: Strategy | None = None
    stages: tuple[str, ...] | None = None
    pools: dict[str, Pool] = Field(default_factory=dict)
    tasks: tuple[Task, ...] = ()

    _by_id: dict[str, Task] = PrivateAttr(default_factory=dict)
    _order: dict[str, int] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _check_graph(self) -> Plan:
        problems = _graph_problems(self.tasks, self.pools)
        if problems:
            raise problems
        self._by_id = {t.id: t for t in self.tasks}
        self._order = {t.id: i for i, t in enumerate(self.tasks)}
        return self

    # -- lookups -------------------------------------------------------------------------
    def task(self, task_id: str) -> Task:
        return self._by_id[task_id]

    def __len__(self) -> int:
        return len(self.tasks)

    def pool_for(self, task: Task) -> Pool:
        """The pool a task runs in; the `default` pool exists even when not declared."""
        return self.pools.get(task.pool) or Pool()

    def all_pools(self) -> dict[str, Pool]:
        pools = dict(self.pools)
        if any(t.pool == DEFAULT_POOL for t in self.tasks) and DEFAULT_POOL not in pools:
            pools[DEFAULT_POOL] = Pool()
        return pools

    def policy(self, task: Task) -> tuple[float | None, int, float]:
        """(timeout_sec, max_retries, retry_backoff_sec): the task's own, else its pool's."""
        pool = self.pool_for(task)
        return (
            task.timeout_sec if task.timeout_sec is not None else pool.timeout_sec,
            task.max_retries if task.max_retries is not None else pool.max_retries,
            task.retry_backoff_sec if task.retry_backoff_sec is not None else pool.retry_backoff_sec,
        )

    def stage_order(self) -> list[str]:
        """Pipeline stages in run order: `stages` if given, else order of first appearance."""
        if self.stages:
            return list(self.stages)
        seen: dict[str, None] = {}
        for t in self.tasks:
            if t.stage is not None:
                seen.setdefault(t.stage, None)
        return list(seen)

    def describe(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    # -- loading -------------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | Path) -> Plan:
        """Load a plan from a `.yaml`/`.yml` or `.json` file (chosen by extension)."""
        path = Path(path)
        source = str(path)
        suffix = path.suffix.lower()
        if suffix not in (".yaml", ".yml", ".json"):
            raise PlanError(
                [PlanProblem("", f"unsupported plan file type {suffix or '(none)'!r}: "
                             "use a .yaml, .yml or .json file")],
                source,
            )
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise PlanError([PlanProblem("", "no such file")], source) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise PlanError([PlanProblem("", f"cannot read the file: {exc}")], source) from None
        return cls.from_text(text, fmt="json" if suffix == ".json" else "yaml", source=source)

    @classmethod
    def from_text(cls, text: str, *, fmt: str = "yaml", source: str | None = None) -> Plan:
        try:
            data = json.loads(text) if fmt == "json" else yaml.safe_load(text)
        except json.JSONDecodeError as exc:
            raise PlanError(
                [PlanProblem(f"line {exc.lineno} column {exc.colno}", f"invalid JSON: {exc.msg}")],
                source,
            ) from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1} column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise PlanError([PlanProblem(where, f"invalid YAML: {problem}")], source) from None
        if data is None:
            data = {}
        return cls.from_dict(data, source=source)

    @classmethod
    def from_dict(cls, data: Any, *, source: str | None = None) -> Plan:
        """Build a plan from plain data, reporting every problem at once."""
        if not isinstance(data, Mapping):
            raise PlanError(
                [PlanProblem("", f"a plan must be a mapping with a `tasks` list, "
                             f"got {type(data).__name__}")],
                source,
            )
        problems: list[PlanProblem] = []
        known = set(cls.model_fields)
        for key in data:
            if key not in known:
                problems.append(PlanProblem(str(key), _unknown_key(str(key), known)))

        pools: dict[str, Pool] = {}
        raw_pools = data.get("pools") or {}
        if not isinstance(raw_pools, Mapping):
            problems.append(PlanProblem("pools", "must be a mapping of pool name -> settings"))
            raw_pools = {}
        for name, raw in raw_pools.items():
            try:
                pools[str(name)] = Pool.model_validate(raw or {})
            except ValidationError as exc:
                problems += _validation_problems(exc, f"pools.{name}", set(Pool.model_fields))

        tasks: list[Task] = []
        raw_tasks = data.get("tasks") or []
        if not isinstance(raw_tasks, list):
            problems.append(PlanProblem("tasks", "must be a list of tasks"))
            raw_tasks = []
        for index, raw in enumerate(raw_tasks):
            where = f"tasks[{index}]"
            if isinstance(raw, Mapping) and isinstance(raw.get("id"), str):
                where += f" ({raw['id']})"
            if not isinstance(raw, Mapping):
                problems.append(PlanProblem(where, "each task must be a mapping with an `id`"))
                continue
            if "run" in raw:
                problems.append(PlanProblem(f"{where}.run", "`run` is only for Python callables; "
                                            "in a plan file use `command`"))
                continue
            try:
                tasks.append(Task.model_validate(raw))
            except ValidationError as exc:
                problems += _validation_problems(exc, where, set(Task.model_fields) - {"run"})

        top: dict[str, Any] = {}
        for key in ("name", "max_workers", "strategy", "stages"):
            if key in data:
                top[key] = data[key]
        try:
            header = cls.model_validate(top)
        except ValidationError as exc:
            problems += _validation_problems(exc, "", known)
            header = None

        graph = _graph_problems(tasks, pools)
        if graph is not None:
            problems += graph.problems
        if problems:
            if len(problems) == 1 and isinstance(graph, CycleError):
                raise CycleError(graph.cycle, source)
            raise PlanError(problems, source)
        assert header is not None
        return cls.model_construct_validated(header, pools, tasks)

    @classmethod
    def model_construct_validated(
        cls, header: Plan, pools: dict[str, Pool], tasks: Iterable[Task]
    ) -> Plan:
        return cls(
            name=header.name,
            max_workers=header.max_workers,
            strategy=header.strategy,
            stages=header.stages,
            pools=pools,
            tasks=tuple(tasks),
        )


def accepts_context(fn: Callable[..., Any]) -> bool:
    """True if `fn` takes an argument (the TaskContext); zero-argument callables are allowed."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return True
    for p in sig.parameters.values():
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL):
            return True
    return False


def _unknown_key(key: str, known: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(sorted(known))}"
    return f"unknown key {key!r}{hint}"


def _validation_problems(exc: ValidationError, where: str, known: set[str]) -> list[PlanProblem]:
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        location = f"{where}.{loc}" if where and loc else (where or loc)
        if err["type"] == "extra_forbidden":
            problems.append(PlanProblem(location, _unknown_key(str(err["loc"][-1]), known)))
            continue
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if err["type"] not in ("value_error", "missing") and "input" in err:
            msg = f"{msg} (got {err['input']!r})"
        problems.append(PlanProblem(location, msg))
    return problems


def _graph_problems(tasks: Iterable[Task], pools: Mapping[str, Pool]) -> PlanError | None:
    """Duplicate ids, unknown dependencies, unknown pools, then cycles (as a path)."""
    problems: list[PlanProblem] = []
    seen: dict[str, int] = {}
    tasks = list(tasks)
    for index, task in enumerate(tasks):
        if task.id in seen:
            problems.append(PlanProblem(
                f"tasks[{index}] ({task.id})",
                f"duplicate task id {task.id!r} (first used by tasks[{seen[task.id]}])",
            ))
        else:
            seen[task.id] = index
    pool_names = set(pools) | {DEFAULT_POOL}
    for index, task in enumerate(tasks):
        for dep in task.depends_on:
            if dep not in seen:
                close = difflib.get_close_matches(dep, list(seen), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                problems.append(PlanProblem(
                    f"tasks[{index}] ({task.id}).depends_on",
                    f"unknown task {dep!r}{hint}",
                ))
        if task.pool not in pool_names:
            close = difflib.get_close_matches(task.pool, sorted(pool_names), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            problems.append(PlanProblem(
                f"tasks[{index}] ({task.id}).pool",
                f"unknown pool {task.pool!r}: {hint}declare it under `pools:` "
                f"(known: {', '.join(sorted(pool_names))})",
            ))
    if problems:
        return PlanError(problems)
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for task in tasks:
        sorter.add(task.id, *task.depends_on)
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        # graphlib gives the cycle with the first node repeated at the end, in
        # "depends on" direction; reverse it so arrows read "must run before".
        cycle = list(exc.args[1])
        cycle.reverse()
        return CycleError(cycle)
    return None
