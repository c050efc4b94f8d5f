"""Runs many executions at once in the server's event loop and lets clients follow them.

Each execution gets its own `Executor` (a cheap object), so cancelling one never touches the
others. Every event is redacted, stored (through the `ExecutionStore` seam) and then wakes
the SSE streams waiting on that execution; a stream always reads from the store, never from a
private queue, which is what makes replay-then-live and `Last-Event-ID` resumption free of
gaps and duplicates: there is only one ordered list of events per execution.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from .._exceptions import UsageError
from ..events import Event
from ..executor import Executor, _check_llm_tasks, _check_strategy, new_run_id
from ..plan import Plan
from ..results import RunResult
from ..simulate import simulate
from ._planning import RunFn
from ._redact import Redactor, plan_secrets
from ._store import ExecutionRecord, ExecutionStore, MemoryExecutionStore

__all__ = ["ExecutionManager", "ExecutionNotFound", "PlanTooLarge", "Principal",
           "TooManyExecutions"]

log = logging.getLogger("parallel_agents.server")

@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking. `session` None with `operator` True sees every execution."""

    session: str | None = None
    operator: bool = True

    def may_see(self, record: ExecutionRecord) -> bool:
        return self.operator or record.owner == self.session


class ExecutionNotFound(LookupError):
    """No such execution, or one the caller may not see (never say which)."""


class TooManyExecutions(RuntimeError):
    """The server already runs its maximum number of executions."""


class PlanTooLarge(UsageError):
    """The plan has more tasks than the server accepts (HTTP 422 `plan_too_large`)."""

    def __init__(self, tasks: int, max_tasks: int) -> None:
        super().__init__(
            f"the plan has {tasks} tasks; this server accepts at most {max_tasks} per "
            f"execution (split the work, or start the server with a higher --max-tasks)")


@dataclass(slots=True)
class _Live:
    """What only exists while an execution runs in this process."""

    executor: Executor
    redact: Redactor
    pools: dict[str, str]  # task id -> pool
    slots: dict[str, int | None]  # pool -> max_concurrent
    tasks: dict[str, dict[str, Any]]  # task id -> live status view
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    runner: asyncio.Task[None] | None = None
    cost_usd: float = 0.0
    #: the run_finished event, published once the execution's result is stored (`_run`)
    finished_event: dict[str, Any] | None = None


class ExecutionManager:
    """Starts, tracks, cancels and streams executions.

    **Parameters:**

    * **store** - where executions live (`MemoryExecutionStore` by default).
    * **redactor** - masks secrets in events and results; per-plan secrets are added to it.
    * **max_active** - executions allowed to run at once; more are refused (HTTP 429).
    * **executor_options** - keyword arguments for each execution's `Executor`.
    """

    def __init__(self, store: ExecutionStore | None = None, *, redactor: Redactor | None = None,
                 max_active: int = 1000, executor_options: dict[str, Any] | None = None) -> None:
        self.store: ExecutionStore = store if store is not None else MemoryExecutionStore()
        self.redactor = redactor or Redactor()
        self.max_active = max_active
        self.executor_options = dict(executor_options or {})
        self.live: dict[str, _Live] = {}
        self._listeners: list[Callable[[str, dict[str, Any]], None]] = []
        self._finish_listeners: list[Callable[[ExecutionRecord], None]] = []

    # -- hooks (metrics) -----------------------------------------------------------------
    def on_event(self, fn: Callable[[str, dict[str, Any]], None]) -> None:
        """Call `fn(pool_or_None, event_dict)` for every event of every execution."""
        self._listeners.append(fn)

    def on_finish(self, fn: Callable[[ExecutionRecord], None]) -> None:
        self._finish_listeners.append(fn)

    # -- starting ------------------------------------------------------------------------
    def start(self, plan: Plan, *, principal: Principal, session_key: str | None = None,
              project: str | None = None, budget_usd: float | None = None,
              run: RunFn | None = None) -> ExecutionRecord:
        """Validate and start `plan` in the running loop; return at once.

        `run` runs the plan on the execution's executor instead of `executor.execute` (the
        coordinator's planner uses it to aggregate and synthesize); its extras join the
        result. Raises `UsageError`/`PlanError` for a plan the executor would refuse (an
        unknown price under a budget, ...), and `TooManyExecutions` when the server is full.
        """
        if len(self.live) >= self.max_active:
            raise TooManyExecutions(
                f"{len(self.live)} executions are already running (the limit is "
                f"{self.max_active}); retry when some have finished")
        options = dict(self.executor_options)
        if budget_usd is not None:
            options["budget_usd"] = budget_usd
        executor = Executor(**options)
        _check_strategy(plan, executor.strategy or plan.strategy or "dependency")
        _check_llm_tasks(plan, executor)
        execution_id = new_run_id()
        while self.store.get(execution_id) is not None:  # pragma: no cover - 24 random bits
            execution_id = new_run_id()
        secrets = plan_secrets(t.env for t in plan.tasks)
        redact = self.redactor.child(secrets)
        add_to_store = getattr(options.get("store"), "add_secrets", None)
        if add_to_store is not None:
            add_to_store(secrets)  # before the run writes anything to the durable store
        tasks = [redact(_task_view(t)) for t in plan.tasks]
        # What the client named things is shown and stored too (runs.plan_name, the workspace's
        # project_state.yaml, gateway_executions): masked like everything else.
        if redact(plan.name) != plan.name:
            plan = plan.model_copy(update={"name": redact(plan.name)})
        session_key, project = redact(session_key), redact(project)
        try:
            estimate = simulate(plan, strategy=executor.strategy).makespan
        except Exception:
            log.exception("could not estimate the duration of execution %s", execution_id)
            estimate = 0.0
        record = ExecutionRecord(
            execution_id=execution_id, owner=principal.session, session_key=session_key,
            project=project, plan_name=plan.name, tasks=tasks, created_at=time.time(),
            estimated_duration=round(estimate, 3),
        )
        self.store.create(record)
        live = _Live(
            executor=executor, redact=redact, pools={t.id: t.pool for t in plan.tasks},
            slots={name: pool.max_concurrent for name, pool in plan.all_pools().items()},
            tasks={t.id: {"status": "pending", "attempts": 0, "started_at": None,
                          "finished_at": None, "error": None} for t in plan.tasks},
        )
        executor.subscribe(lambda event: self._record_event(execution_id, live, event))
        self.live[execution_id] = live
        live.runner = asyncio.get_running_loop().create_task(
            self._run(execution_id, live, plan, run), name=f"execution {execution_id}")
        return record

    async def _run(self, execution_id: str, live: _Live, plan: Plan, run_fn: RunFn | None
                   ) -> None:
        status, result = "failed", None
        try:
            extras: dict[str, Any] = {}
            if run_fn is None:
                run = await live.executor.execute(plan, run_id=execution_id)
            else:
                run, extras = await run_fn(live.executor, execution_id)
            status, result = run.status, self._result_dict(live, run, extras)
        except asyncio.CancelledError:
            status = "cancelled"
            result = {"status": status, "reason": "the server stopped during the run"}
        except Exception as exc:
            log.exception("execution %s crashed", execution_id)
            result = {"status": status, "reason": live.redact(f"{type(exc).__name__}: {exc}")}
        finally:
            self.store.finish(execution_id, status, time.time(), result or {"status": status})
            if live.finished_event is not None:
                self._publish(execution_id, live, live.finished_event)
            self.live.pop(execution_id, None)
            live.wake.set()
            record = self.store.get(execution_id)
            if record is not None:
                for fn in self._finish_listeners:
                    fn(record)

    def _result_dict(self, live: _Live, run: RunResult, extras: dict[str, Any]
                     ) -> dict[str, Any]:
        out = run.to_dict()
        out.update(extras)
        # The run's cost: its tasks' and what it paid before them (the planning call).
        out["cost_usd"] = round(run.cost_usd, 6)
        tokens: dict[str, int] = {}
        usages = [t.usage for t in run.tasks.values()]
        if run.prepaid is not None:
            usages.append(run.prepaid.usage)
        for usage in usages:
            for key, n in usage.items():
                tokens[key] = tokens.get(key, 0) + int(n)
        out["tokens"] = tokens
        return live.redact(_jsonable(out))

    def _record_event(self, execution_id: str, live: _Live, event: Event) -> None:
        data = live.redact(_jsonable(event.to_dict()))
        if event.kind == "run_finished":
            # Held until the result is stored: a client that sees it and asks for the
            # execution must find it finished, with its result (and a coordinated run's
            # answer, which comes after the tasks).
            live.finished_event = data
            return
        self._publish(execution_id, live, data)

    def _publish(self, execution_id: str, live: _Live, data: dict[str, Any]) -> None:
        self.store.append_events(execution_id, [data])
        task_id = data.get("task_id")
        if task_id is not None and task_id in live.tasks:
            _apply(live.tasks[task_id], data)
        pool = live.pools.get(task_id) if task_id else None
        for fn in self._listeners:
            fn(pool, data)  # type: ignore[arg-type]
        # Wake every stream waiting on this execution, then arm a fresh event for the next.
        live.wake.set()
        live.wake = asyncio.Event()

    # -- reading -------------------------------------------------------------------------
    def get(self, execution_id: str, principal: Principal) -> ExecutionRecord:
        record = self.store.get(execution_id)
        if record is None or not principal.may_see(record):
            raise ExecutionNotFound(execution_id)
        return record

    async def wait(self, execution_id: str, principal: Principal) -> ExecutionRecord:
        """The execution once it has ended. A caller that goes away does not cancel it."""
        self.get(execution_id, principal)
        live = self.live.get(execution_id)
        if live is not None and live.runner is not None:
            await asyncio.wait([live.runner])  # unlike `await`, never cancels the runner
        return self.get(execution_id, principal)

    def task_states(self, record: ExecutionRecord) -> dict[str, dict[str, Any]]:
        """Each task's status now: live while running, from the final result afterwards."""
        live = self.live.get(record.execution_id)
        if live is not None:
            return {tid: dict(state) for tid, state in live.tasks.items()}
        tasks = (record.result or {}).get("tasks") or {}
        return {tid: {k: t.get(k) for k in ("status", "attempts", "started_at", "finished_at",
                                             "error")} for tid, t in tasks.items()}

    def list(self, principal: Principal, *, session_key: str | None, offset: int, limit: int
             ) -> tuple[list[ExecutionRecord], int]:
        return self.store.list(owner=principal.session, all_owners=principal.operator,
                               session_key=session_key, offset=offset, limit=limit)

    def cancel(self, execution_id: str, principal: Principal,
               reason: str = "cancelled over HTTP") -> bool:
        """Ask a running execution to stop. False if it had already finished."""
        self.get(execution_id, principal)
        live = self.live.get(execution_id)
        if live is None:
            return False
        live.executor.cancel(reason)
        return True

    async def events(self, execution_id: str, after: int = 0) -> AsyncIterator[dict[str, Any]]:
        """Every event with `seq > after`, then live ones until the execution ends."""
        seq = after
        while True:
            live = self.live.get(execution_id)
            wake = live.wake if live is not None else None
            batch = self.store.events_after(execution_id, seq)
            for event in batch:
                seq = event["seq"]
                yield event
            if batch:
                continue
            if wake is None:
                record = self.store.get(execution_id)
                # Finished: the final events are stored before `live` is dropped, so one more
                # read after seeing it gone cannot miss anything.
                if record is None or record.finished:
                    if not self.store.events_after(execution_id, seq):
                        return
                    continue
                await asyncio.sleep(0.05)  # created but not yet live (another process)
                continue
            await wake.wait()

    async def shutdown(self, timeout: float = 10.0) -> None:
        """Cancel every running execution and wait (bounded) for them to stop cleanly."""
        runners = [live.runner for live in self.live.values() if live.runner is not None]
        durable = self.executor_options.get("store") is not None
        for execution_id, live in list(self.live.items()):
            # With a store, the run can go on: its cancelled attempts do not use up retries.
            live.executor.cancel(
                "the server was shut down during the run" + (
                    f"; `parallel-agents resume {execution_id}` finishes it" if durable else ""))
        if runners:
            await asyncio.wait(runners, timeout=timeout)

    # -- numbers for /metrics ------------------------------------------------------------
    def live_counts(self) -> tuple[dict[str, int], dict[str, tuple[int, int | None]]]:
        """(tasks by status over running executions, pool name -> (running, slots)).

        Pools are per plan; pools of the same name in different executions add up. Slots is
        None when some execution gives that pool no limit.
        """
        by_status: dict[str, int] = {}
        running: dict[str, int] = {}
        slots: dict[str, int | None] = {}
        for live in list(self.live.values()):
            for name, limit in live.slots.items():
                if name in slots and (slots[name] is None or limit is None):
                    slots[name] = None
                else:
                    slots[name] = (slots.get(name) or 0) + limit  # type: ignore[operator]
                running.setdefault(name, 0)
            for tid, state in live.tasks.items():
                status = state["status"]
                by_status[status] = by_status.get(status, 0) + 1
                if status == "running":
                    running[live.pools[tid]] = running.get(live.pools[tid], 0) + 1
        return by_status, {name: (running[name], slots.get(name)) for name in running}


def _apply(state: dict[str, Any], event: dict[str, Any]) -> None:
    kind = event["kind"]
    if kind == "task_queued":
        state["status"] = "queued"
    elif kind == "task_started":
        state["status"] = "running"
        state["attempts"] = event.get("attempt") or state["attempts"] + 1
        if state["started_at"] is None:
            state["started_at"] = event["time"]
    elif kind == "task_retrying":
        state["status"] = "retrying"
        state["error"] = event.get("message")
    elif kind in ("task_succeeded", "task_failed", "task_skipped", "task_cancelled"):
        state["status"] = kind.removeprefix("task_")
        state["finished_at"] = event["time"]
        state["error"] = None if kind == "task_succeeded" else event.get("message")


def _task_view(task: Any) -> dict[str, Any]:
    """A task as clients see it: env values are never shown, only the variable names."""
    out: dict[str, Any] = {
        "id": task.id, "pool": task.pool, "priority": task.priority,
        "depends_on": list(task.depends_on), "kind": task.kind,
        "estimated_seconds": task.estimated_seconds,
    }
    if task.description:
        out["description"] = task.description
    if task.stage:
        out["stage"] = task.stage
    if task.command:
        out["command"] = list(task.command)
    if task.env:
        out["env"] = sorted(task.env)
    return out


def _jsonable(value: Any) -> Any:
    """Results may hold tuples, sets, paths or arbitrary objects from function tasks."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    return repr(value)


def check_plan_size(plan_data: Any, max_tasks: int) -> None:
    """Refuse oversized plans before validating them (validation cost grows with size)."""
    tasks = plan_data.get("tasks") if isinstance(plan_data, dict) else None
    if isinstance(tasks, list) and len(tasks) > max_tasks:
        raise PlanTooLarge(len(tasks), max_tasks)
