"""Plans: tasks, pools and their dependency graph, loaded from YAML/JSON or built in Python.

Validation reports *every* problem it finds, each with its location, because a user fixing a
plan file wants one round trip, not one per typo.
"""

from __future__ import annotations

import difflib
import graphlib
import inspect
import json
import re
import shlex
import unicodedata
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
from ._urls import url_credentials_problem
from .pricing import ModelPrice
from .roles import Role, all_roles

__all__ = [
    "Pool",
    "Task",
    "Plan",
    "ProviderSettings",
    "check_model_spec",
    "check_provider_name",
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


def _check_name(value: Any, what: str) -> Any:
    """Ids and names end up in environment variables, file names and logs, where an empty
    name or a control character (a NUL byte, a newline) fails only at run time: refuse them."""
    if isinstance(value, str):
        if not value:
            raise ValueError(f"{what} is empty: give it a name")
        bad = next((c for c in value if unicodedata.category(c) == "Cc"), None)
        if bad is not None:
            raise ValueError(f"{what} {value!r} contains the control character {bad!r}: "
                             "use printable characters only")
    return value


def _check_names(names: Iterable[Any], what: str) -> None:
    """_check_name for each, all problems in one ValueError."""
    bad = []
    for name in names:
        try:
            _check_name(name, what)
        except ValueError as exc:
            bad.append(str(exc))
    if bad:
        raise ValueError("; ".join(bad))


def _printable(name: str) -> str:
    """A name as it can be shown in a location: control characters escaped."""
    return name if name.isprintable() else repr(name)[1:-1]


def _env_problem(name: Any, value: Any) -> str | None:
    """Why `name: value` cannot be an environment variable, or None if it can."""
    if not isinstance(name, (str, int)) or isinstance(name, bool) or not str(name) \
            or any(c in str(name) for c in "=\0"):
        return f"{name!r} is not a variable name (it must be non-empty, without '=' or NUL)"
    if value is None:
        return f"{name}: no value (null); write {name}: \"\" for an empty one"
    if not isinstance(value, (str, int, float)):
        kind = {list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)
        return (f"{name}: {kind} is not an environment value; give a string (quote it), "
                "a number or a boolean")
    if "\0" in str(value):
        return f"{name}: the value contains a NUL byte, which no environment can hold"
    return None


_MODEL_SPEC = re.compile(r"^[a-z][a-z0-9_.-]*:\S+$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SECRET_KEYS = ("api_key", "apikey", "key", "token", "secret", "password", "authorization",
                "auth", "bearer", "access_token")


def check_provider_name(name: str) -> None:
    """A provider section's name must be one we have: ValueError saying which, if not."""
    from .agents.llm import BUILTIN_PROVIDERS  # (lazy: the LLM agent is a heavier import)

    if name not in BUILTIN_PROVIDERS:
        close = difflib.get_close_matches(name, BUILTIN_PROVIDERS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(
            f"unknown provider {name!r}: {hint}known: {', '.join(BUILTIN_PROVIDERS)} "
            "(`openai` is any OpenAI-compatible server: vLLM, Ollama, llama-server; "
            "set its base_url)")


def check_model_spec(spec: str) -> None:
    """`PROVIDER:MODEL`, e.g. `openai:gpt-4o-mini`, `anthropic:claude-3-5-haiku-latest`."""
    if not _MODEL_SPEC.match(spec.strip()) or spec != spec.strip():
        raise ValueError(
            f"bad model {spec!r}: write PROVIDER:MODEL, e.g. local:smollm2-135m-instruct, "
            "openai:gpt-4o-mini or anthropic:claude-3-5-haiku-latest (provider in lower case)"
        )


class ProviderSettings(BaseModel):
    """How to reach one provider. The API key itself never goes in a plan: name the
    environment variable that holds it (`api_key_env`), so plans can be shared and stored."""

    # Every model here refuses inf and NaN (allow_inf_nan=False): an infinite estimate or
    # timeout breaks the preview's arithmetic and turns `run --json` into invalid JSON. And
    # none echoes the value it refuses (hide_input_in_errors): it may be a key put where it
    # does not belong, and pydantic's message would print it.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False,
                              hide_input_in_errors=True)

    base_url: str | None = None
    api_key_env: str | None = None
    rpm: int | None = Field(default=None, ge=1, description="requests per minute")
    tpm: int | None = Field(default=None, ge=1, description="tokens per minute")
    max_concurrency: int | None = Field(default=None, ge=1)
    timeout_sec: float | None = Field(default=None, gt=0)
    # local: only
    model_path: str | None = None
    n_ctx: int | None = Field(default=None, ge=256)
    n_threads: int | None = Field(default=None, ge=1)
    max_tokens: int | None = Field(default=None, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _no_secrets(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            for key in data:
                if str(key).lower().replace("-", "_") in _SECRET_KEYS:
                    raise ValueError(
                        f"refusing to store a secret in a plan: remove `{key}` and put the key "
                        "in an environment variable, then name that variable with "
                        "`api_key_env: OPENAI_API_KEY` (for example)"
                    )
        return data

    @field_validator("base_url")
    @classmethod
    def _no_url_credentials(cls, value: str | None) -> str | None:
        # A password or key in the URL is a secret like api_key: plans are shared and stored.
        problem = url_credentials_problem(value, "a plan") if value is not None else None
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        # Never echo the value: if it is not a variable name it may well be the key itself.
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError(
                "api_key_env must be the NAME of an environment variable (like "
                "OPENAI_API_KEY), not the key itself; the value was not shown"
            )
        return value


class Pool(BaseModel):
    """A worker pool: how many of its tasks may run at once, and its default task policy."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False,
                              hide_input_in_errors=True)

    max_concurrent: int | None = Field(
        default=4, ge=1, description="Slots in this pool; None means no pool limit."
    )
    timeout_sec: float | None = Field(default=None, gt=0)
    max_retries: int = Field(default=0, ge=0, le=100)
    retry_backoff_sec: float = Field(default=1.0, ge=0)


#: Settings of a pool used but not declared (only `default` may be): one shared frozen copy.
_UNDECLARED_POOL = Pool()


class Task(BaseModel):
    """One unit of work. Exactly one of `command` (a program) or `run` (a Python callable)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, frozen=True,
                              allow_inf_nan=False, hide_input_in_errors=True)

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
    # -- LLM tasks (kind "llm"): an agent role and a prompt; see docs/llm-agents.md -------
    agent: str | None = Field(default=None, min_length=1, description="Role name, e.g. backend.")
    prompt: str | None = None
    model: str | None = Field(default=None, description="PROVIDER:MODEL, e.g. openai:gpt-4o-mini")
    max_iterations: int | None = Field(default=None, ge=1, le=100)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    output_schema: dict[str, Any] | None = None
    output_file: str | None = Field(default=None, min_length=1,
                                    description="Also save the answer to this workspace file.")
    tools: tuple[Callable[..., Any], ...] = Field(default=(), exclude=True, repr=False)

    @field_validator("id", mode="before")
    @classmethod
    def _id_is_clean(cls, value: Any) -> Any:
        _check_name(value, "task id")
        if isinstance(value, str) and value != value.strip():
            raise ValueError(f"task id {value!r} has surrounding whitespace")
        return value

    @field_validator("pool", mode="before")
    @classmethod
    def _pool_name(cls, value: Any) -> Any:
        return _check_name(value, "pool name")

    @field_validator("stage", mode="before")
    @classmethod
    def _stage_name(cls, value: Any) -> Any:
        return _check_name(value, "stage name")

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
        if value is not None and not isinstance(value, (list, tuple)):
            shown = repr(value) if isinstance(value, (bool, int, float)) else type(value).__name__
            raise ValueError("command must be a list of strings (the program and its "
                             f"arguments) or a string, got {shown}")
        if value is not None and len(value) == 0:
            raise ValueError("command is empty: give the program and its arguments as a list")
        if isinstance(value, (list, tuple)):
            # YAML reads `[sleep, 1]` as a number argument; argv items are strings.
            for item in value:
                if isinstance(item, bool):
                    raise ValueError(
                        f"command item {item!r} was read as a boolean (YAML turns true/yes/on "
                        f"into booleans): quote it, e.g. \"{str(item).lower()}\""
                    )
            value = [str(v) if isinstance(v, (int, float)) else v for v in value]
        return value

    @field_validator("env", mode="before")
    @classmethod
    def _env(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            # YAML turns `PORT: 8080` into an int and `DEBUG: true` into a bool: both have an
            # obvious text. A list, a mapping or null has none, and str() of one is never
            # what was meant, so those are refused.
            bad = [p for p in (_env_problem(k, v) for k, v in value.items()) if p]
            if bad:
                raise ValueError("; ".join(bad))
            return {str(k): str(v).lower() if isinstance(v, bool) else str(v)
                    for k, v in value.items()}
        return value

    @field_validator("model")
    @classmethod
    def _model_spec(cls, value: str | None) -> str | None:
        if value is not None:
            check_model_spec(value)
        return value

    @model_validator(mode="after")
    def _one_thing_to_run(self) -> Task:
        is_llm = self.agent is not None or self.prompt is not None
        given = [name for name, present in (("command", self.command is not None),
                                            ("run", self.run is not None),
                                            ("agent/prompt", is_llm)) if present]
        if len(given) > 1:
            raise ValueError("give either command or run (or agent/prompt for an LLM task), "
                             f"not {' and '.join(given)}")
        if not given:
            raise ValueError(
                "nothing to run: give a command (a program and its arguments), "
                "an agent role with a prompt (an LLM task) or, in Python, run=callable"
            )
        if is_llm and not (self.prompt or self.description):
            raise ValueError("an LLM task needs a prompt (or a description to use as one)")
        for tool in self.tools:
            if not callable(tool):
                raise ValueError(f"tools must be callables, got {type(tool).__name__}")
        if self.run is not None and not callable(self.run):
            raise ValueError(f"run must be callable, got {type(self.run).__name__}")
        if self.id in self.depends_on:
            raise ValueError(f"task {self.id!r} depends on itself")
        return self

    @property
    def kind(self) -> str:
        """Which agent runs this task: "command", "function" or "llm"."""
        if self.command is not None:
            return "command"
        if self.run is not None:
            return "function"
        return "llm"

    def describe(self) -> dict[str, Any]:
        """The task as plain JSON data (what command tasks receive on stdin)."""
        data = self.model_dump(mode="json", exclude={"run", "tools"})
        data["kind"] = self.kind
        return data


class Plan(BaseModel):
    """A set of tasks with dependencies, priorities and pools. Validated on construction."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, frozen=True,
                              allow_inf_nan=False, hide_input_in_errors=True)

    name: str = "plan"
    max_workers: int | None = Field(default=None, ge=1)
    strategy: Strategy | None = None
    stages: tuple[str, ...] | None = None
    pools: dict[str, Pool] = Field(default_factory=dict)
    tasks: tuple[Task, ...] = ()
    # -- LLM settings (see docs/llm-agents.md) ------------------------------------------
    providers: dict[str, ProviderSettings] = Field(default_factory=dict)
    roles: dict[str, Role] = Field(default_factory=dict)
    prices: dict[str, ModelPrice] = Field(default_factory=dict)
    budget_usd: float | None = Field(default=None, ge=0)

    _by_id: dict[str, Task] = PrivateAttr(default_factory=dict)
    _order: dict[str, int] = PrivateAttr(default_factory=dict)

    @field_validator("pools", mode="before")
    @classmethod
    def _pool_names(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            _check_names(value, "pool name")
        return value

    @field_validator("stages", mode="before")
    @classmethod
    def _stage_names(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            _check_names(value, "stage name")
        return value

    @field_validator("providers")
    @classmethod
    def _known_providers(cls, value: dict[str, ProviderSettings]) -> dict[str, ProviderSettings]:
        for name in value:
            check_provider_name(name)
        return value

    @model_validator(mode="before")
    @classmethod
    def _role_pools(cls, data: Any) -> Any:
        # A task with a role but no pool of its own runs in the role's pool.
        if isinstance(data, Mapping) and data.get("roles") and data.get("tasks"):
            data = dict(data)
            data["tasks"] = _apply_role_pools(data["tasks"], data["roles"])
        return data

    @model_validator(mode="after")
    def _check_graph(self) -> Plan:
        problems = _graph_problems(self.tasks, self.pools)
        if problems:
            raise problems
        llm = _llm_problems(self.tasks, self.roles, self.pools)
        if llm:
            raise PlanError(llm)
        self._by_id = {t.id: t for t in self.tasks}
        self._order = {t.id: i for i, t in enumerate(self.tasks)}
        return self

    # -- lookups -------------------------------------------------------------------------
    # Hot path: pydantic serves private attributes through a slow __getattr__; read the
    # private storage directly (the executor looks tasks up several times per attempt).
    def task(self, task_id: str) -> Task:
        return self.__pydantic_private__["_by_id"][task_id]  # type: ignore[index]

    @property
    def order(self) -> dict[str, int]:
        """Task id -> its index in `tasks` (plan order, the last tie-breaker)."""
        return self.__pydantic_private__["_order"]  # type: ignore[index]

    def __len__(self) -> int:
        return len(self.tasks)

    def pool_for(self, task: Task) -> Pool:
        """The pool a task runs in; the `default` pool exists even when not declared."""
        return self.pools.get(task.pool) or _UNDECLARED_POOL

    def pool_for_name(self, name: str) -> Pool:
        """The pool called `name`; the `default` pool exists even when not declared."""
        return self.pools.get(name) or _UNDECLARED_POOL

    def all_pools(self) -> dict[str, Pool]:
        pools = dict(self.pools)
        if DEFAULT_POOL not in pools and any(t.pool == DEFAULT_POOL for t in self.tasks):
            pools[DEFAULT_POOL] = _UNDECLARED_POOL
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
        return _stage_order(self.stages, self.tasks)

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
        """Parse YAML (or JSON with fmt="json") and build the plan; it needs at least one task."""
        return cls.from_dict(parse_plan_text(text, fmt=fmt, source=source), source=source)

    @classmethod
    def from_dict(cls, data: Any, *, source: str | None = None, allow_empty: bool = False) -> Plan:
        """Build a plan from plain data, reporting every problem at once.

        A plan without tasks is refused: from a user it is a mistake (a wrong file, a
        mis-indented `tasks:`) that would otherwise "succeed" having run nothing. Code that
        grows a plan from nothing (the coordinator's streaming) or reloads a recorded one
        passes `allow_empty=True`; `Plan()` built in Python may always be empty.
        """
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
        known_pools: set[str] = set()
        raw_pools = data.get("pools") or {}
        if not isinstance(raw_pools, Mapping):
            problems.append(PlanProblem("pools", "must be a mapping of pool name -> settings"))
            raw_pools = {}
        for name, raw in raw_pools.items():
            try:
                _check_name(str(name), "pool name")
                good_name = True
            except ValueError as exc:
                problems.append(PlanProblem("pools", str(exc)))
                good_name = False
            try:
                pool = Pool.model_validate(raw or {})
            except ValidationError as exc:
                problems += _validation_problems(exc, f"pools.{_printable(str(name))}",
                                                 set(Pool.model_fields))
            else:
                if good_name:
                    pools[str(name)] = pool
            if good_name:
                known_pools.add(str(name))

        tasks: list[Task] = []
        # Every task with a usable id, in file order, for the cross-task checks: a task that
        # failed validation takes part with the fields that are valid (see _task_ref), so one
        # bad value neither hides its own unknown dependency or pool nor makes other tasks
        # report "unknown task" or miss a duplicate id.
        checked: list[Task] = []
        positions: list[int] = []  # each checked task's index in the file's `tasks` list
        no_stage: set[int] = set()  # tasks whose `stage` was invalid (already reported)
        raw_tasks = data.get("tasks") or []
        if not isinstance(raw_tasks, list):
            problems.append(PlanProblem("tasks", "must be a list of tasks"))
            raw_tasks = []
        elif not raw_tasks and not allow_empty:
            problems.append(PlanProblem(
                "", "the plan has no tasks; add at least one under tasks:"))
        for index, raw in enumerate(raw_tasks):
            where = f"tasks[{index}]"
            if isinstance(raw, Mapping) and isinstance(raw.get("id"), str):
                where += f" ({_printable(raw['id'])})"
            if not isinstance(raw, Mapping):
                problems.append(PlanProblem(where, "each task must be a mapping with an `id`"))
                continue
            task: Task | None
            if "run" in raw:
                problems.append(PlanProblem(f"{where}.run", "`run` is only for Python callables; "
                                            "in a plan file use `command`"))
                task = _task_ref(raw, {"run"}, validated=False)
            else:
                try:
                    task = Task.model_validate(raw)
                    tasks.append(task)
                except ValidationError as exc:
                    problems += _validation_problems(exc, where, set(Task.model_fields) - {"run"})
                    bad = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
                    task = _task_ref(raw, bad, validated=not bad)
                    if "stage" in bad:
                        no_stage.add(index)
            if task is not None:
                checked.append(task)
                positions.append(index)

        top: dict[str, Any] = {}
        for key in ("name", "max_workers", "strategy", "stages", "providers", "roles", "prices",
                    "budget_usd"):
            if key in data:
                top[key] = data[key]
        top["pools"] = pools  # already validated; role pools are checked against them
        header: Plan | None = None
        try:
            header = cls.model_validate(top)
            settings = header
        except ValidationError as exc:
            problems += _validation_problems(exc, "", known)
            # The valid settings still serve the cross-task checks (roles, stages).
            bad = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
            try:
                settings = cls.model_validate({k: v for k, v in top.items() if k not in bad})
            except ValidationError:
                settings = cls(pools=pools)

        if settings.roles:
            tasks = _apply_role_pools(tasks, settings.roles)
            checked = _apply_role_pools(checked, settings.roles)
        graph = _graph_problems(checked, pools, positions=positions, known_pools=known_pools)
        if graph is not None:
            problems += graph.problems
        if not isinstance(graph, CycleError):
            problems += _llm_problems(checked, settings.roles, pools, positions=positions)
        if settings.strategy == "pipeline":
            staged = [(i, t) for i, t in zip(positions, checked) if i not in no_stage]
            problems += pipeline_problems([t for _, t in staged], settings.stages,
                                          positions=[i for i, _ in staged])
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
            providers=header.providers,
            roles=header.roles,
            prices=header.prices,
            budget_usd=header.budget_usd,
        )


def accepts_context(fn: Callable[..., Any]) -> bool:
    """True if `fn` takes the TaskContext: its first positional parameter has no default
    (or is named `ctx`/`context`), or it takes *args. A parameter with a default is the
    loop idiom `lambda i=i: work(i)`, not a slot for the context."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return True
    for p in sig.parameters.values():
        if p.kind is p.VAR_POSITIONAL:
            return True
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            return p.default is p.empty or p.name in ("ctx", "context")
    return False


def parse_plan_text(text: str, *, fmt: str = "yaml", source: str | None = None) -> Any:
    """The data in a plan file's text (an empty file is an empty mapping); PlanError with the
    line and column if it does not parse, or if a mapping repeats a key (which YAML and JSON
    readers otherwise resolve silently by keeping the last one: a second `tasks:` would
    replace the first)."""
    try:
        if fmt == "json":
            data = json.loads(text, object_pairs_hook=_json_object)
        else:
            data = yaml.load(text, Loader=_PlanLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as exc:
        raise PlanError([PlanProblem("", f"invalid JSON: duplicate key {exc.args[0]!r} in an "
                                     "object; keep only one of them")], source) from None
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
    return {} if data is None else data


class _DuplicateKey(ValueError):
    """A JSON object repeats a key (its name is the only argument)."""


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


class _PlanLoader(yaml.SafeLoader):
    """yaml.safe_load that refuses a mapping repeating a key, naming the key and both lines."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, yaml.Mark] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *base` keys may be overridden: that is what merges are for
                key = self.construct_object(key_node, deep=deep)
                try:
                    seen = first.get(key)
                except TypeError:
                    continue  # an unhashable key: the base constructor reports it
                if seen is not None:
                    raise yaml.constructor.ConstructorError(
                        None, None,
                        f"duplicate key {key!r} (first on line {seen.line + 1}); "
                        "keep only one of them",
                        key_node.start_mark)
                first[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def _unknown_key(key: str, known: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(sorted(known))}"
    return f"unknown key {key!r}{hint}"


def _shown_input(value: Any) -> str:
    """What a refused value was, for the message: a number or bool as itself; anything else
    by its kind only, since a text or mapping in the wrong place may be a key."""
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    kind = {str: "a text", dict: "a mapping", list: "a list"}.get(type(value))
    return kind or f"a {type(value).__name__}"


def _validation_problems(exc: ValidationError, where: str, known: set[str]) -> list[PlanProblem]:
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        location = f"{where}.{loc}" if where and loc else (where or loc)
        if err["type"] == "extra_forbidden":
            problems.append(PlanProblem(location, _unknown_key(str(err["loc"][-1]), known)))
            continue
        msg = err["msg"]
        if err["type"] == "finite_number":
            msg = "Input should be a finite number, not infinity or NaN"
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if err["type"] not in ("value_error", "missing") and "input" in err:
            msg = f"{msg} (got {_shown_input(err['input'])})"
        problems.append(PlanProblem(location, msg))
    return problems


def _apply_role_pools(tasks: Iterable[Any], roles: Any) -> list[Any]:
    out = []
    for task in tasks:
        is_task = isinstance(task, Task)
        agent = task.agent if is_task else (task.get("agent") if isinstance(task, Mapping)
                                            else None)
        has_pool = ("pool" in task.model_fields_set) if is_task else (
            not isinstance(task, Mapping) or "pool" in task)
        if isinstance(agent, str) and not has_pool:
            role = roles.get(agent) if isinstance(roles, Mapping) else None
            pool = role.pool if isinstance(role, Role) else (
                role.get("pool") if isinstance(role, Mapping) else None)
            if isinstance(pool, str):
                task = (task.model_copy(update={"pool": pool}) if is_task
                        else {**task, "pool": pool})
        out.append(task)
    return out


def _llm_problems(tasks: Iterable[Task], plan_roles: Mapping[str, Role],
                  pools: Mapping[str, Pool], *,
                  positions: list[int] | None = None) -> list[PlanProblem]:
    """Unknown roles (with a suggestion), and role pools that are not declared."""
    problems: list[PlanProblem] = []
    try:
        known = all_roles(plan_roles)
    except ValueError as exc:  # a broken roles file
        return [PlanProblem("roles", str(exc))]
    tasks = list(tasks)
    where = positions if positions is not None else list(range(len(tasks)))
    for index, task in zip(where, tasks):
        if task.agent is not None and task.agent not in known:
            close = difflib.get_close_matches(task.agent, sorted(known), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            problems.append(PlanProblem(
                f"tasks[{index}] ({task.id}).agent",
                f"unknown role {task.agent!r}: {hint}define it under `roles:` "
                f"(known: {', '.join(sorted(known))})",
            ))
    pool_names = set(pools) | {DEFAULT_POOL}
    for name, role in plan_roles.items():
        if role.pool is not None and role.pool not in pool_names:
            problems.append(PlanProblem(
                f"roles.{name}.pool",
                f"unknown pool {role.pool!r}: declare it under `pools:` "
                f"(known: {', '.join(sorted(pool_names))})",
            ))
    return problems


def _graph_problems(
    tasks: Iterable[Task],
    pools: Mapping[str, Pool],
    *,
    positions: list[int] | None = None,
    known_pools: Iterable[str] = (),
) -> PlanError | None:
    """Duplicate ids, unknown dependencies, unknown pools and cycles (as a path).

    `positions` are the tasks' indices in the source list, so locations stay right when
    some tasks there could not be checked; `known_pools` are pool names declared with bad
    settings (reported already, so not "unknown" too).
    """
    problems: list[PlanProblem] = []
    tasks = list(tasks)
    where = positions if positions is not None else list(range(len(tasks)))
    seen: dict[str, int] = {}
    for index, task in zip(where, tasks):
        first = seen.get(task.id)
        if first is not None and first != index:
            problems.append(PlanProblem(
                f"tasks[{index}] ({task.id})",
                f"duplicate task id {task.id!r} (first used by tasks[{first}])",
            ))
        elif first is None:
            seen[task.id] = index
    pool_names = set(pools) | set(known_pools) | {DEFAULT_POOL}
    for index, task in zip(where, tasks):
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
    # Cycles among the dependencies that do exist are reported alongside the rest.
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for task in tasks:
        sorter.add(task.id, *(d for d in task.depends_on if d in seen))
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        # graphlib gives the cycle with the first node repeated at the end, each node
        # depending on the one before it; reversed, each task depends on the next.
        cycle = list(exc.args[1])
        cycle.reverse()
        if not problems:
            return CycleError(cycle)
        problems.append(CycleError(cycle).problems[0])
    if problems:
        return PlanError(problems)
    return None


def _task_ref(raw: Mapping[str, Any], bad: set[str], *, validated: bool) -> Task | None:
    """A task that failed validation, as far as the cross-task checks need it: its id,
    dependencies, pool, role and stage, each only if that field itself is valid. None if
    its id is not usable.

    `validated`: the task's whole-task checks ran (no field was invalid), so a dependency on
    itself is already reported and is left out here rather than reported again as a cycle.
    """
    def usable(name: str) -> bool:
        return name in raw and name not in bad and isinstance(raw[name], str)

    if not usable("id"):
        return None
    fields: dict[str, Any] = {"id": raw["id"]}
    deps = raw.get("depends_on", ())
    deps = (deps,) if isinstance(deps, str) else deps
    if "depends_on" not in bad and isinstance(deps, (list, tuple)) \
            and all(isinstance(d, str) for d in deps):
        fields["depends_on"] = tuple(d for d in deps if not (validated and d == raw["id"]))
    for name in ("pool", "agent", "stage"):
        if usable(name):
            fields[name] = raw[name]
    return Task.model_construct(**fields)


def _stage_order(stages: Iterable[str] | None, tasks: Iterable[Task]) -> list[str]:
    if stages:
        return list(stages)
    seen: dict[str, None] = {}
    for t in tasks:
        if t.stage is not None:
            seen.setdefault(t.stage, None)
    return list(seen)


def pipeline_problems(tasks: Iterable[Task], stages: Iterable[str] | None, *,
                      positions: list[int] | None = None) -> list[PlanProblem]:
    """What stops these tasks running as a pipeline: a task without a stage, a stage not in
    `stages` (with a suggestion), a dependency on a task of a later stage.

    Used when the plan file asks for the pipeline strategy (so these are reported with every
    other problem) and by the executor when a run does."""
    tasks = list(tasks)
    where = positions if positions is not None else list(range(len(tasks)))
    order = _stage_order(stages, tasks)
    position = {name: i for i, name in enumerate(order)}
    problems: list[PlanProblem] = []
    for index, task in zip(where, tasks):
        location = f"tasks[{index}] ({task.id}).stage"
        if task.stage is None:
            problems.append(PlanProblem(location,
                                        "the pipeline strategy needs a stage on every task"))
        elif task.stage not in position:
            close = difflib.get_close_matches(task.stage, order, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(PlanProblem(
                location, f"stage {task.stage!r} is not listed in `stages` "
                          f"({', '.join(order)}){hint}"))
    if problems:
        return problems
    stage_of = {t.id: t.stage for t in tasks}
    for index, task in zip(where, tasks):
        here = position[str(task.stage)]  # every task has a listed stage by now
        for dep in task.depends_on:
            dep_stage = stage_of.get(dep)
            if dep_stage is not None and position[dep_stage] > here:
                problems.append(PlanProblem(
                    f"tasks[{index}] ({task.id}).depends_on",
                    f"depends on {dep!r} from later stage {dep_stage!r}: "
                    f"a pipeline runs stages in order {' -> '.join(order)}",
                ))
    return problems
