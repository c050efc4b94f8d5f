"""The coordinator: a request in, a plan, parallel agents, one conflict-free answer out.

    from parallel_agents.coordinator import Coordinator

    outcome = await Coordinator(provider=my_provider).run("Build a restaurant website with booking")
    print(outcome.final_response)          # markdown
    outcome.to_dict()                      # the `--json` form

Steps: `decompose` (LLM structured output, repaired; or a template; serial vs parallel),
`distribute` (task -> pool with scores), the executor runs the plan (or, with `stream=True`,
starts each task as soon as the planner has emitted it and its dependencies allow),
`aggregate` (one workspace, conflicts resolved by rules), `synthesize` (the final response).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._exceptions import PlanError, UsageError
from ..agents import Agent, TaskContext
from ..events import Event
from ..executor import Executor, new_run_id
from ..plan import Plan, Pool, Task
from ..providers.base import Provider
from ..results import Prepaid, RunResult
from ..store import StoredRun
from ..store.workspace import files_after, relative_in
from .aggregate import Aggregation, Conflict, aggregate
from .decompose import (
    Decomposition,
    Repair,
    TaskRepairer,
    _plan_dict,
    _plan_name,
    break_cycles,
    decide,
    decompose,
    planning_request,
    stream_raw_tasks,
)
from .distribute import DEFAULT_POOLS, GENERAL_POOL, Distribution, distribute
from .synthesize import llm_summary, synthesize
from .templates import TEMPLATES, keyword_tasks
from .versions import Snapshotting, load_versions

__all__ = [
    "Coordinator",
    "CoordinatorResult",
    "Decomposition",
    "Repair",
    "Aggregation",
    "Conflict",
    "Distribution",
    "DEFAULT_POOLS",
    "GENERAL_POOL",
    "TEMPLATES",
    "decompose",
    "distribute",
    "aggregate",
    "synthesize",
    "to_plan",
    "stored_decomposition",
]

#: `run_task(spec, ctx)`: run one planned task yourself (a Python worker instead of the LLM
#: agent kind). Returns the output, or a TaskOutput with files.
TaskRunner = Callable[[dict[str, Any], TaskContext], Any]

_LLM_ONLY_KEYS = ("agent", "prompt", "model", "max_iterations", "max_tokens", "output_schema")


#: Budgets for tasks on the embedded local model (SmolLM2-135M, CPU): one tool call, then the
#: answer. Measured on the restaurant request, its second call repeated its first one (same
#: file, same content) in 3 of 4 tasks, and every extra iteration re-sends the whole growing
#: prompt. Its answers end well within 320 tokens; longer ones are cut off (kept as they are)
#: rather than run on. The task's own fields and `task_defaults` win.
LOCAL_TASK_DEFAULTS: dict[str, Any] = {"max_iterations": 2, "max_tokens": 320}


def _effective_model(spec: Mapping[str, Any], coordinator_model: str | None) -> str:
    """The `PROVIDER:MODEL` a planned task will run on: its own, the coordinator's, its
    role's, or the default."""
    if spec.get("model") or coordinator_model:
        return str(spec.get("model") or coordinator_model)
    try:
        from ..roles import all_roles, default_model
    except ImportError:
        return ""
    try:
        role = all_roles().get(str(spec.get("agent") or ""))
    except ValueError:  # a broken roles file: reported when the task runs
        role = None
    return (role.model if role is not None and role.model else None) or default_model()


def to_plan(plan: Mapping[str, Any], run_task: TaskRunner | None = None) -> Plan:
    """The coordinator's plan dict -> a runnable Plan.

    Without `run_task` the tasks are LLM tasks (`agent` + `prompt`), run by the executor's
    `llm` agent. With it, each task becomes a function task calling `run_task(spec, ctx)`.
    """
    if run_task is None:
        try:
            # The streaming planner starts from a plan with no tasks yet and grows it.
            return Plan.from_dict(plan, allow_empty=True)
        except PlanError as exc:
            if "agent" not in Task.model_fields:
                raise UsageError(
                    "this installation has no LLM agent kind (Task has no `agent` field), so "
                    "the coordinator's tasks cannot run; pass run_task=... to run them with "
                    "your own function") from exc
            raise
    pools = {name: Pool(**cfg) for name, cfg in (plan.get("pools") or {}).items()}
    tasks = []
    for spec in plan["tasks"]:
        tasks.append(Task(
            id=spec["id"], pool=spec["pool"], priority=spec["priority"],
            depends_on=tuple(spec["depends_on"]), description=spec.get("description"),
            estimated_seconds=spec["estimated_seconds"], run=_bind(run_task, spec),
        ))
    return Plan(name=plan.get("name", "plan"), strategy=plan.get("strategy"), pools=pools,
                tasks=tuple(tasks))


def _bind(run_task: TaskRunner, spec: dict[str, Any]) -> Callable[[TaskContext], Any]:
    async def call(ctx: TaskContext) -> Any:
        out = run_task(spec, ctx)
        if inspect.isawaitable(out):
            out = await out
        return out

    return call


def _planning_paid(decomposition: Decomposition) -> Prepaid | None:
    """The planning call as the run's spending before its tasks (None if none was made)."""
    planning = decomposition.planning
    if not planning:
        return None
    return Prepaid(cost_usd=float(planning.get("cost_usd") or 0.0),
                   usage=dict(planning.get("usage") or {}), label="planner")


#: The key of a coordinated run's metadata in the store (`RunOptions.metadata`).
COORDINATOR_METADATA = "parallel_agents.coordinator"


def stored_decomposition(saved: StoredRun) -> Decomposition | None:
    """The decomposition a coordinated run was started from, or None for another run."""
    data = (saved.options.get("metadata") or {}).get(COORDINATOR_METADATA)
    if not isinstance(data, dict) or not isinstance(data.get("decomposition"), dict):
        return None
    try:
        return Decomposition.from_dict(data["decomposition"])
    except (KeyError, TypeError) as exc:
        raise UsageError(f"run {saved.id}: its stored decomposition is unreadable ({exc}); "
                         f"resume it as a plan with Executor.resume") from None


@dataclass(slots=True)
class CoordinatorResult:
    """Everything a coordinated run produced."""

    decomposition: Decomposition
    run: RunResult
    aggregation: Aggregation
    final_response: str
    workspace: Path
    #: the run's limit on running tasks (None: only the pools' limits), as `--json` of a
    #: plan run has it
    max_workers: int | None = None

    @property
    def conflicts(self) -> list[Conflict]:
        return self.aggregation.conflicts

    def answer(self) -> dict[str, Any]:
        """The coordinator's fields as the HTTP gateway shows them and a durable run stores
        them with its result (`decision` holds the repairs)."""
        d = self.decomposition
        return {
            "final_response": self.final_response,
            "conflicts": [c.to_dict() for c in self.aggregation.conflicts],
            "files": self.aggregation.files,
            "security_requirements": self.aggregation.security_requirements,
            "workspace": str(self.workspace),
            "decision": {"mode": d.decision, "reason": d.reason, "source": d.source,
                         "template": d.template, "strategy": d.strategy,
                         "repairs": [r.to_dict() for r in d.repairs]},
        }

    def to_dict(self) -> dict[str, Any]:
        """The run summary (RunResult.to_dict) plus the coordinator's fields."""
        out = self.run.to_dict()
        out.update({
            "final_response": self.final_response,
            "conflicts": [c.to_dict() for c in self.aggregation.conflicts],
            "plan": self.decomposition.plan,
            "workspace": str(self.workspace),
            "files": self.aggregation.files,
            "repairs": [r.to_dict() for r in self.decomposition.repairs],
            "decision": {"mode": self.decomposition.decision,
                         "reason": self.decomposition.reason,
                         "source": self.decomposition.source,
                         "template": self.decomposition.template,
                         "strategy": self.decomposition.strategy,
                         "planning": self.decomposition.planning},
            "distribution": self.decomposition.distribution,
            "security_requirements": self.aggregation.security_requirements,
            "max_workers": self.max_workers,
        })
        return out


class Coordinator:
    """Turns requests into plans, runs them in parallel and answers with one response.

    **Parameters:**

    * **provider** - the planner's LLM (any `Provider`). None: the keyword analysis plans.
    * **planner_model** - the model name sent in planning requests.
    * **model** - `PROVIDER:MODEL` set on every planned task (None: the roles' default).
    * **workspace** - the run's workspace directory (default `.parallel_agents/runs/RUN_ID`).
    * **run_task** - run each task with this function instead of the LLM agent kind.
    * **agents**, **max_workers**, **on_event**, **executor_options** - passed to `Executor`.
      `max_workers` and `executor_options["strategy"]` also shape the plan's prediction and
      decision; `executor_options["budget_usd"]` also gates the planning call, whose cost
      and tokens are the run's (`RunResult.prepaid`).
    * **stream** - dispatch tasks as the planner emits them (needs a provider).
    * **summarize** - add an LLM summary paragraph to the final response.
    * **task_defaults** - fields every planned task gets unless it sets them, e.g.
      `{"max_iterations": 4}` for a small local model.
    * **answers_dir** - LLM tasks also save their final answer as `ANSWERS_DIR/TASK.md` in
      the workspace (the task's `output_file`); None to turn that off.
    """

    def __init__(
        self,
        provider: Provider | None = None,
        *,
        planner_model: str = "",
        model: str | None = None,
        workspace: str | Path | None = None,
        pools: dict[str, dict[str, Any]] | None = None,
        run_task: TaskRunner | None = None,
        agents: Mapping[str, Agent] | None = None,
        max_workers: int | None = None,
        on_event: Callable[[Event], None] | None = None,
        executor_options: Mapping[str, Any] | None = None,
        stream: bool = False,
        summarize: bool = False,
        task_defaults: Mapping[str, Any] | None = None,
        answers_dir: str | None = "answers",
        providers: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.provider = provider
        self.planner_model = planner_model
        self.model = model
        self.workspace = Path(workspace) if workspace is not None else None
        self.pools = dict(pools or DEFAULT_POOLS)
        self.run_task = run_task
        self.agents = dict(agents or {})
        self.max_workers = max_workers
        self.on_event = on_event
        self.executor_options = dict(executor_options or {})
        self.stream = stream
        self.summarize = summarize
        self.task_defaults = dict(task_defaults or {})
        self.answers_dir = answers_dir
        # Provider settings (a config file's `[providers.*]`) for the plans it makes.
        self.providers = {name: dict(cfg) for name, cfg in (providers or {}).items()}

    async def plan(self, request: str, template: str | None = None, *,
                   force_parallel: bool = False) -> Decomposition:
        """Decompose `request` (nothing runs).

        `force_parallel` keeps the request's parts as separate tasks even when running them
        serially was judged better.
        """
        decomposition = await decompose(request, self.provider, template=template,
                                        model=self.model, planner_model=self.planner_model,
                                        pools=self.pools, force_parallel=force_parallel,
                                        budget_usd=self.executor_options.get("budget_usd"),
                                        **self._limits())
        for spec in decomposition.tasks:
            self._defaults(spec)
        return decomposition

    def _limits(self) -> dict[str, Any]:
        """The run's scheduling limits, as the plan's prediction and decision must use them."""
        return {"strategy": self.executor_options.get("strategy"),
                "max_workers": self.max_workers}

    def _defaults(self, spec: dict[str, Any]) -> None:
        for key, value in self.task_defaults.items():
            spec.setdefault(key, value)
        if self.run_task is not None:
            return
        if self.answers_dir:
            # Each agent's answer is also a file of the workspace: a deliverable even when a
            # small model never calls write_file, and what the aggregator reads for findings.
            spec.setdefault("output_file", f"{self.answers_dir}/{spec['id']}.md")
        deliverable = f"{spec['id']}.md"
        prompt = spec.get("prompt") or spec.get("description") or ""
        if deliverable not in prompt:
            # Its own file per task: agents that all pick the same name overwrite each other
            # (a same-file conflict for the aggregator, and all but one deliverable lost).
            spec["prompt"] = (f"{prompt}\n\nSave your work with write_file to "
                              f"`{deliverable}`, then answer with a short summary.")
        if _effective_model(spec, self.model).startswith("local:"):
            for key, value in LOCAL_TASK_DEFAULTS.items():
                spec.setdefault(key, value)

    async def run(self, request: str, template: str | None = None) -> CoordinatorResult:
        """Plan, run, aggregate and synthesize. Never raises for a failed task.

        Under a budget (`executor_options["budget_usd"]`) the plan is not streamed: the
        planning call must be checked against the budget before it is made."""
        if (self.stream and template is None and self.provider is not None
                and self.executor_options.get("budget_usd") is None):
            return await self._run_streaming(request)
        decomposition = await self.plan(request, template)
        return await self.execute(decomposition)

    def _executor(self, run_id: str) -> tuple[Executor, Path, dict[str, dict[str, str]]]:
        workspace = self.workspace or Path(".parallel_agents") / "runs" / run_id
        executor = Executor(agents=self.agents, max_workers=self.max_workers,
                            on_event=self.on_event, workspace=workspace,
                            **self.executor_options)
        return executor, *self._adopt(executor, run_id)

    def _adopt(self, executor: Executor, run_id: str
               ) -> tuple[Path, dict[str, dict[str, str]]]:
        """Give `executor` the run's workspace and snapshot every file its agents write."""
        if executor.workspace is None:
            executor.workspace = self.workspace or Path(".parallel_agents") / "runs" / run_id
        workspace = executor.workspace
        workspace.mkdir(parents=True, exist_ok=True)
        snapshots: dict[str, dict[str, str]] = {}
        for kind, agent in list(executor.agents.items()):
            # A durable run keeps the versions in the workspace too, for a resume.
            executor.agents[kind] = Snapshotting(agent, snapshots,
                                                 persist=executor.store is not None)
        return workspace, snapshots

    async def execute(self, decomposition: Decomposition, *, run_id: str | None = None,
                      executor: Executor | None = None) -> CoordinatorResult:
        """Run a decomposition (e.g. one shown with --show-plan and then approved).

        `executor`: run on this executor instead of one built from this coordinator's
        options (the HTTP gateway passes its own, to stream its events and cancel it);
        its agents are wrapped to snapshot files, and it gets the run's workspace unless it
        has one.
        """
        self._add_providers(decomposition)
        plan = to_plan(decomposition.plan, self.run_task)
        run_id = run_id or new_run_id()
        if executor is None:
            executor, workspace, snapshots = self._executor(run_id)
        else:
            workspace, snapshots = self._adopt(executor, run_id)
        # Stored with a durable run: `resume` then answers as this would have.
        metadata = {COORDINATOR_METADATA: {"decomposition": decomposition.to_dict()}}
        result = await executor.execute(plan, run_id=run_id, metadata=metadata,
                                        prepaid=_planning_paid(decomposition))
        return self._stored(executor, await self._finish(decomposition, result, workspace,
                                                         snapshots, executor.max_workers))

    async def resume(self, run_id: str, *, executor: Executor | None = None
                     ) -> CoordinatorResult:
        """Finish a coordinated run that was interrupted and answer as `execute` would have.

        Tasks that succeeded before the interruption are not run again (`Executor.resume`);
        the aggregator gets their files as they wrote them (kept in the workspace, see
        `versions`), or as the checkpoint taken after each of them holds them. Needs an
        executor with the run's store (`executor`, or this coordinator's
        `executor_options["store"]`). Raises UsageError for a run the coordinator did not
        start (resume it with `Executor.resume`).
        """
        if executor is None:
            executor = Executor(agents=self.agents, max_workers=self.max_workers,
                                on_event=self.on_event, **self.executor_options)
        if executor.store is None:
            raise UsageError("resuming a coordinated run needs its store: "
                             "Coordinator(executor_options={'store': store}) or executor=")
        saved = executor.store.load_run(run_id)
        decomposition = stored_decomposition(saved)
        if decomposition is None:
            raise UsageError(f"run {run_id} was not started by the coordinator (from a "
                             f"request); resume it as a plan: Executor.resume({run_id!r})")
        if saved.workspace and not Path(saved.workspace).is_dir():
            raise UsageError(
                f"run {run_id}: its workspace {saved.workspace} is gone, and with it the files "
                f"of the tasks that succeeded before the interruption; restore it, or run the "
                f"request again")
        if executor.workspace is None and saved.workspace:
            executor.workspace = Path(saved.workspace)
        workspace, snapshots = self._adopt(executor, run_id)
        # Tasks run by `run_task` are Python functions: the store cannot rebuild them.
        plan = to_plan(decomposition.plan, self.run_task) if self.run_task is not None else None
        result = await executor.resume(run_id, plan=plan)
        for task_id, task in result.tasks.items():
            if task.status == "succeeded" and task_id not in snapshots and task.files:
                # Succeeded before the interruption: its versions as it wrote them, else (a
                # run from before they were kept) as the checkpoint after it holds them.
                rels = [rel for rel in (relative_in(workspace, name) for name in task.files)
                        if rel is not None]
                kept = load_versions(workspace, run_id, task_id)
                found = files_after(workspace, task_id, [r for r in rels if r not in kept],
                                    run_id)
                found.update({r: kept[r] for r in rels if r in kept})
                snapshots[task_id] = found
        # The resumed run keeps the limit it was started with (RunOptions), not this one's.
        max_workers = saved.options.get("max_workers")
        return self._stored(executor, await self._finish(decomposition, result, workspace,
                                                         snapshots, max_workers))

    @staticmethod
    def _stored(executor: Executor, outcome: CoordinatorResult) -> CoordinatorResult:
        """A durable run keeps the coordinator's answer with its result: `status --json` and
        the HTTP gateway show it, also for a run finished by `resume`."""
        if executor.store is not None:
            executor.store.add_to_result(outcome.run.run_id, outcome.answer())
        return outcome

    async def _finish(self, decomposition: Decomposition, result: RunResult, workspace: Path,
                      snapshots: dict[str, dict[str, str]],
                      max_workers: int | None = None) -> CoordinatorResult:
        aggregation = aggregate(decomposition.tasks, result, workspace, snapshots)
        summary = None
        if self.summarize and self.provider is not None and aggregation.outputs:
            summary = await llm_summary(self.provider, decomposition, aggregation,
                                        self.planner_model)
        text = synthesize(decomposition, result, aggregation, summary)
        (workspace / "FINAL_RESPONSE.md").write_text(text, encoding="utf-8")
        return CoordinatorResult(decomposition, result, aggregation, text, workspace,
                                 max_workers)

    def _add_providers(self, decomposition: Decomposition) -> None:
        if self.providers and self.run_task is None:
            have = decomposition.plan.setdefault("providers", {})
            for name, cfg in self.providers.items():
                have.setdefault(name, dict(cfg))

    # -- streaming planning --------------------------------------------------------------
    async def _run_streaming(self, request: str) -> CoordinatorResult:
        request = (request or "").strip()
        if not request:
            raise UsageError("the request is empty: say what you want built or done")
        decomposition = Decomposition(
            request=request, plan=_plan_dict(_plan_name(request), [], self.pools),
            decision="parallel", reason="streamed: tasks started as the planner emitted them",
            source="llm")
        decomposition.plan["pools"] = {p: dict(c) for p, c in self.pools.items()}
        self._add_providers(decomposition)
        run_id = new_run_id()
        executor, workspace, snapshots = self._executor(run_id)
        base = to_plan(decomposition.plan, self.run_task)
        updates = self._plan_updates(request, decomposition)
        result = await executor.execute_stream(base, updates, run_id=run_id)
        tasks = decomposition.tasks
        used = {t["pool"] for t in tasks}
        decomposition.plan["pools"] = {p: c for p, c in self.pools.items() if p in used}
        mode, why, makespan, serial = decide(tasks, self.pools, **self._limits())
        decomposition.predicted_makespan, decomposition.predicted_serial = makespan, serial
        decomposition.reason = (f"streamed: {len(tasks)} task(s) started as the planner "
                                f"emitted them (afterwards the coordinator would have chosen "
                                f"{mode}: {why})")
        return await self._finish(decomposition, result, workspace, snapshots,
                                  executor.max_workers)

    async def _plan_updates(self, request: str,
                            decomposition: Decomposition) -> AsyncIterator[Plan]:
        """Yield the growing plan: each task once it and all its dependencies are known.

        A dependency on a task the planner has not emitted yet holds the task back; at the
        end of the answer, leftover holds are repaired like a whole plan (unknown
        dependencies dropped, cycles broken) and released.
        """
        fixer = TaskRepairer(request, self.pools, self.model)
        released: list[dict[str, Any]] = []
        held: list[dict[str, Any]] = []
        sink: list[str] = []

        def plan_now() -> Plan:
            decomposition.plan["tasks"] = released
            return to_plan(decomposition.plan, self.run_task)

        def release_ready() -> bool:
            progressed = False
            again = True
            while again:
                again = False
                for spec in list(held):
                    known = [t["id"] for t in released]
                    if not fixer.clean_deps(spec, known, final=False):
                        held.remove(spec)
                        released.append(spec)
                        progressed = again = True
            return progressed

        try:
            async for raw in stream_raw_tasks(
                    self.provider, planning_request(request, self.planner_model),  # type: ignore[arg-type]
                    sink):
                spec = fixer.repair(raw)
                if spec is None:
                    continue
                self._defaults(spec)
                held.append(spec)
                if release_ready():
                    yield plan_now()
        except Exception as exc:  # noqa: BLE001 - a failed planner falls back, never crashes
            fixer.repairs.append(Repair("fallback", f"the planner stream failed ({exc})"))
        if held:
            ids = [t["id"] for t in released] + [t["id"] for t in held]
            for spec in held:
                fixer.clean_deps(spec, ids, final=True)
            break_cycles(released + held, fixer.repairs)
            release_ready()
            released.extend(held)  # anything left depends only on released or held tasks
            held.clear()
            yield plan_now()
        if not released:
            tasks, strategy = keyword_tasks(request)
            fixer.repairs.append(Repair("fallback", "the planner emitted no usable task: used "
                                        f"the keyword plan ({strategy})"))
            for t in tasks:
                if self.model:
                    t["model"] = self.model
                self._defaults(t)
                fixer.distribution[t["id"]] = distribute(
                    t["description"], t["agent"], self.pools).to_dict()
            released.extend(tasks)
            decomposition.source, decomposition.strategy = "keywords", strategy
            yield plan_now()
        decomposition.repairs = fixer.repairs
        decomposition.distribution = fixer.distribution
        decomposition.llm_text = "".join(sink) or None

