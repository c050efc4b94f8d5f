"""The asyncio driver of the scheduling core.

It turns the scheduler's decisions into running agent calls and reports back what happened.
Policy (what starts when, retries, skips) is all in `_core._scheduler`; this module only does
I/O and timing: per-attempt timeouts, backoff timers that hold no slot, cancellation, events.

Completions that arrive in the same loop iteration are fed to the scheduler together and
followed by one `decide()`, so tasks that became ready at the same instant compete for slots
by priority rather than by which callback ran first.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import random
import secrets
import time
from collections.abc import AsyncIterable, Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import metrics
from ._core._budget import BUDGET_EXHAUSTED, Budget
from ._core._scheduler import (
    CancelRequested,
    CancelTask,
    FailTask,
    QueueTask,
    RetryDue,
    RunFinished,
    ScheduleRetry,
    Scheduler,
    SkipTask,
    StartTask,
    TaskCancelled,
    TaskFailed,
    TaskSucceeded,
    TaskWorkDone,
)
from ._exceptions import PlanError, PlanProblem, TaskError, UsageError
from .agents import Agent, TaskContext, TaskOutput
from .agents.command import CommandAgent, kill_leftovers
from .agents.function import FunctionAgent, function_shape
from .agents.llm import BUILTIN_PROVIDERS, LLMAgent, call_identity, start_cost
from .backends import Backend, resolve_backend
from .backends.local import LocalBackend
from .events import Event, EventBus, EventKind
from .plan import STRATEGIES, Plan, Strategy, pipeline_problems
from .pricing import PriceTable, sum_usage
from .providers.base import Provider, attempt_wait_meter, split_model
from .results import AttemptRecord, Prepaid, RunResult, TaskResult
from .roles import default_model, llm_settings, run_default_model
from .store import DurableRun, RunOptions, RunStore, StoredRun, plan_from_store

__all__ = ["Executor", "run", "new_run_id"]

#: Tasks started per turn of the event loop. A huge fan-out starts in slices of this many,
#: so one turn never holds the loop for long (the gateway serves HTTP on the same loop) and
#: fewer asyncio tasks are alive at once (less memory, fewer garbage collections).
_STARTS_PER_TURN = 1000


def new_run_id() -> str:
    """Sortable by start time, unique enough to never collide in one store."""
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def _check_strategy(plan: Plan, strategy: str, source: str | None = None) -> None:
    """UsageError for an unknown strategy; PlanError (naming `source`, the plan's file) if
    the plan cannot run as a pipeline when that is the strategy."""
    if strategy not in STRATEGIES:
        raise UsageError(f"unknown strategy {strategy!r}: use one of {', '.join(STRATEGIES)}")
    if strategy != "pipeline":
        return
    problems = pipeline_problems(plan.tasks, plan.stages)
    if problems:
        raise PlanError(problems, source)


class Executor:
    """Runs plans. One executor may run several plans, one after another or at once.

    **Parameters:**

    * **strategy** - `dependency` (default), `sequential`, `waves` or `pipeline`; overrides
      the plan's own `strategy`.
    * **max_workers** - a limit on each run's running tasks, on top of the pools' limits
      (per run: two plans executed at once by one executor have one each).
    * **fail_fast** - on the first task that fails for good, cancel running tasks and skip
      the rest. By default independent work continues (graceful degradation).
    * **agents** - extra or replacement agents by task kind (`"command"`, `"function"`, ...).
    * **seed** - seeds the retry jitter, for reproducible runs.
    * **providers** - LLM providers by name (`PROVIDER` in `model: PROVIDER:MODEL`), used
      before the provider registry: custom backends, or a `FunctionProvider` in tests.
    * **budget_usd** - spending limit per run (overrides the plan's `budget_usd`): no LLM call
      starts whose worst-case cost exceeds what is left; tasks that cannot start are skipped.
    * **record_dir** / **replay_dir** - record provider calls to cassettes, or answer them from
      cassettes without any network (see docs/llm-agents.md).
    * **backend** - where agent calls run: `"local"` (default, this process), `"ray"` (Ray
      workers; see docs/ray.md) or a `Backend` instance. Scheduling stays here either way.
    * **ray_address** - with `backend="ray"`: the cluster to join; None starts a local one.

    A non-local backend holds workers: close it with `await executor.aclose()` or use
    `async with Executor(...) as executor:` (`pa.run` does this for you).
    * **store** - a `RunStore` (or its path): the run is recorded durably and can be resumed
      with `resume(run_id)`; a task counts as succeeded only once its output is committed.
    * **cache** - with a store, reuse stored outputs for every task (not only `cache: true`).
    * **rollback_on_failure** - with a store, restore the run's workspace to its last
      checkpoint when the run does not succeed.
    """

    def __init__(
        self,
        *,
        strategy: Strategy | None = None,
        max_workers: int | None = None,
        fail_fast: bool = False,
        agents: Mapping[str, Agent] | None = None,
        on_event: Callable[[Event], None] | None = None,
        workspace: str | Path | None = None,
        seed: int | None = None,
        providers: Mapping[str, Provider] | None = None,
        budget_usd: float | None = None,
        record_dir: str | Path | None = None,
        replay_dir: str | Path | None = None,
        backend: str | Backend = "local",
        ray_address: str | None = None,
        store: RunStore | str | Path | None = None,
        cache: bool = False,
        rollback_on_failure: bool = False,
    ) -> None:
        if max_workers is not None and max_workers < 1:
            raise UsageError(f"max_workers must be at least 1, got {max_workers}")
        if strategy is not None and strategy not in STRATEGIES:
            raise UsageError(f"unknown strategy {strategy!r}: use one of {', '.join(STRATEGIES)}")
        self.strategy = strategy
        self.max_workers = max_workers
        self.fail_fast = fail_fast
        if budget_usd is not None and budget_usd < 0:
            raise UsageError(f"budget must be at least 0 USD, got {budget_usd}")
        if record_dir is not None and replay_dir is not None:
            raise UsageError("give record_dir (--record) or replay_dir (--replay), not both")
        if replay_dir is not None and not Path(replay_dir).is_dir():
            raise UsageError(f"replay folder {replay_dir} does not exist: record cassettes "
                             "first with --record DIR")
        self.providers: dict[str, Provider] = dict(providers or {})
        self.budget_usd = budget_usd
        # Stored with durable runs (RunOptions), for `parallel-agents resume`.
        self.record_dir = str(Path(record_dir).resolve()) if record_dir is not None else None
        self.replay_dir = str(Path(replay_dir).resolve()) if replay_dir is not None else None
        self.agents: dict[str, Agent] = {
            "command": CommandAgent(), "function": FunctionAgent(),
            "llm": LLMAgent(self.providers, record_dir=record_dir, replay_dir=replay_dir),
        }
        self.agents.update(agents or {})
        self.workspace = Path(workspace) if workspace is not None else None
        self.seed = seed
        self.backend = resolve_backend(backend, ray_address=ray_address)
        self._backend_started = False
        self._subscribers: list[Callable[[Event], None]] = [on_event] if on_event else []
        self._active: set[_Run] = set()
        # -- durability (store/) --
        self.store = store if isinstance(store, RunStore) or store is None else RunStore(store)
        if (cache or rollback_on_failure) and self.store is None:
            raise UsageError("cache and rollback_on_failure need a store: pass store=PATH")
        self.cache = cache
        self.rollback_on_failure = rollback_on_failure

    def subscribe(self, fn: Callable[[Event], None]) -> Callable[[], None]:
        """Call `fn(event)` for every event of every run this executor starts from now on."""
        self._subscribers.append(fn)

        def unsubscribe() -> None:
            if fn in self._subscribers:
                self._subscribers.remove(fn)

        return unsubscribe

    async def execute(self, plan: Plan, *, run_id: str | None = None,
                      metadata: Mapping[str, Any] | None = None,
                      prepaid: Prepaid | None = None) -> RunResult:
        """Run `plan` to the end and return its result. Never raises for a failed task.

        `metadata`: JSON values stored with a durable run, given back by
        `RunStore.load_run(run_id).options["metadata"]` (what a caller needs to finish its
        own work after `resume`, as the coordinator does).
        `prepaid`: what was already spent for this run before its tasks (the coordinator's
        planning call): it is in the result's cost and tokens, and the budget has that much
        less for the tasks.
        """
        strategy = self.strategy or plan.strategy or "dependency"
        _check_strategy(plan, strategy)
        _check_llm_tasks(plan, self)
        if metadata is not None:
            metadata = _json_metadata(metadata)
        await self._start_backend(plan)
        run = _Run(self, plan, strategy, run_id or new_run_id(), metadata=metadata,
                   prepaid=prepaid)
        self._active.add(run)
        try:
            return await run.go()
        finally:
            self._active.discard(run)

    async def execute_stream(
        self, plan: Plan, updates: AsyncIterable[Plan], *, run_id: str | None = None
    ) -> RunResult:
        """Streaming planning: run `plan` now and grow it while `updates` yields.

        Each plan from `updates` is the current plan with tasks appended (same pools); its new
        tasks start as soon as their dependencies allow, before the plan is complete. The run
        ends when `updates` is exhausted and every task has ended. If `updates` raises, no
        more tasks are added and the error becomes the run's `reason`.
        """
        strategy = self.strategy or plan.strategy or "dependency"
        if strategy not in ("dependency", "sequential"):
            raise UsageError(f"a streamed plan runs with the dependency or sequential "
                             f"strategy, not {strategy!r}")
        _check_llm_tasks(plan, self)
        await self._start_backend(plan)
        run = _Run(self, plan, strategy, run_id or new_run_id(), open_ended=True)
        self._active.add(run)
        feeder = asyncio.ensure_future(run.feed(updates))
        try:
            return await run.go()
        finally:
            feeder.cancel()
            self._active.discard(run)

    async def resume(self, run_id: str, *, plan: Plan | None = None) -> RunResult:
        """Finish a stored run that was interrupted: succeeded tasks are never run again.

        Attempts that were running when the process died are recorded as `interrupted`; they
        count against `max_retries`. Plans with Python function tasks cannot be reloaded from
        the store: pass the same `plan` again. Raises `RunLockedError` if another live
        process owns the run.
        """
        if self.store is None:
            raise UsageError("resume needs a store: Executor(store=PATH).resume(run_id)")
        last_alive = self.store.acquire(run_id)  # before reading: nobody else may change it
        try:
            saved = self.store.load_run(run_id)
            saved.last_alive = last_alive
            plan = plan_from_store(saved, plan)
            options = RunOptions.from_dict(saved.options)
            _check_strategy(plan, options.strategy)
            _check_cwd(saved, plan, options)
            if last_alive is not None and any(t.kind == "command" for t in plan.tasks):
                kill_leftovers(run_id)  # its dead runner's tasks' children (see there)
            # The checks and the budget's prices are of the model the run started with.
            with run_default_model(options.default_model):
                _check_llm_tasks(plan, self)
                await self._start_backend(plan)
                run = _Run(self, plan, options.strategy, run_id, resumed=saved, options=options)
        except BaseException:
            self.store.release(run_id)
            raise
        self._active.add(run)
        try:
            return await run.go()
        finally:
            self._active.discard(run)

    async def _start_backend(self, plan: Plan) -> None:
        if not self._backend_started:
            await self.backend.start()
            self._backend_started = True
        await self.backend.prepare(plan)

    def cancel(self, reason: str = "cancelled by user") -> None:
        """Stop every active run: running tasks are cancelled, queued ones never start."""
        for run in list(self._active):
            run.cancel(reason)

    async def aclose(self) -> None:
        """Release the backend's workers (a Ray instance this executor started stops too) and
        the threads of sync function tasks (one abandoned on timeout is not waited for)."""
        for agent in self.agents.values():
            agent.close()
        if self._backend_started:
            self._backend_started = False
            await self.backend.close()

    async def __aenter__(self) -> Executor:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _cwd() -> str | None:
    try:
        return os.getcwd()
    except OSError:  # the directory was deleted under us
        return None


def _check_cwd(saved: StoredRun, plan: Plan, options: RunOptions) -> None:
    """A resumed run's command tasks run where it started: that directory must still exist."""
    if not options.cwd or Path(options.cwd).is_dir():
        return
    left = [t.id for t in plan.tasks if t.kind == "command" and t.id not in saved.outputs]
    if left:
        raise UsageError(
            f"run {saved.id} started in {options.cwd}, which no longer exists, and its command "
            f"task(s) {', '.join(left[:5])}{' …' if len(left) > 5 else ''} run there (their "
            f"relative paths mean files there); recreate that directory, or start a new run")


def run(plan: Plan, **options: Any) -> RunResult:
    """Run `plan` and block until it ends. Options are those of `Executor`."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise UsageError("parallel_agents.run() blocks, so it cannot be called from async code "
                         "(an event loop is running here); use `await "
                         "parallel_agents.Executor(...).execute(plan)` instead")

    async def go() -> RunResult:
        async with Executor(**options) as executor:
            return await executor.execute(plan)

    return asyncio.run(go())


class _Run:
    """One execution of one plan."""

    def __init__(self, executor: Executor, plan: Plan, strategy: str, run_id: str, *,
                 open_ended: bool = False, resumed: StoredRun | None = None,
                 options: RunOptions | None = None,
                 metadata: dict[str, Any] | None = None,
                 prepaid: Prepaid | None = None) -> None:
        self.executor = executor
        self.plan = plan
        self.strategy = strategy
        self.run_id = run_id
        self.bus = EventBus(list(executor._subscribers))
        # -- durability (store/): a resumed run keeps the options it was started with --
        self.options = options or RunOptions(
            strategy, executor.max_workers, executor.fail_fast, executor.cache,
            executor.rollback_on_failure, executor.seed, executor.budget_usd,
            default_model=default_model(), metadata=metadata,
            record_dir=executor.record_dir, replay_dir=executor.replay_dir,
            backend=getattr(executor.backend, "name", None),
            ray_address=getattr(executor.backend, "address", None), cwd=_cwd(),
            prepaid=prepaid.to_dict() if prepaid is not None else None)
        # Spent before the tasks (a resumed run has it from the options it started with).
        self.prepaid = Prepaid.from_dict(self.options.prepaid)
        # Command tasks of a resumed run run where the run started (see RunOptions.cwd).
        self.cwd = (Path(self.options.cwd) if resumed is not None and self.options.cwd
                    and self.options.cwd != _cwd() else None)
        self.resumed = resumed
        #: (since, until) periods a resumed run was not running: not part of its makespan
        self.idle: list[tuple[float, float]] = []
        self.durable: DurableRun | None = None
        self.workspace = executor.workspace
        self.results: dict[str, TaskResult] = {
            t.id: TaskResult(t.id, t.pool) for t in plan.tasks  # positional: runs per task
        }
        succeeded: set[str] = set()
        prior: dict[str, int] = {}
        free: dict[str, int] = {}
        if executor.store is not None:
            self.durable = DurableRun(executor.store, run_id, plan, self.options,
                                      workspace=executor.workspace, resumed=resumed)
            self.workspace = self.durable.workspace_path
            if resumed is not None:
                self.bus.seq = resumed.last_seq
                succeeded, prior, free = self.durable.restore(self.results, time.time())
        seed = self.options.seed
        rng = random.Random(seed) if seed is not None else random.Random()
        # -- budget: the worst case of each LLM task's first call gates its start --
        # (a resumed run keeps the budget it was started with, unless given a new one)
        limit = executor.budget_usd if executor.budget_usd is not None else (
            self.options.budget_usd if self.options.budget_usd is not None
            else plan.budget_usd)
        self.budget = Budget(limit) if limit is not None else None
        if self.budget is not None and resumed is not None:
            # The run's budget covers the whole run: what it paid before the crash counts.
            self.budget.settle("paid before resume",
                               sum(r.cost_usd for r in self.results.values()))
        if self.budget is not None and self.prepaid is not None:
            self.budget.settle("paid before the tasks", self.prepaid.cost_usd)
        costs: dict[str, float] = {}
        if self.budget is not None:
            prices = PriceTable(plan.prices)
            for t in plan.tasks:
                if t.kind == "llm":
                    costs[t.id] = start_cost(t, plan, prices) or 0.0
        self.scheduler = Scheduler(
            plan, strategy=strategy,  # type: ignore[arg-type]
            max_workers=self.options.max_workers, fail_fast=self.options.fail_fast, rng=rng,
            already_succeeded=succeeded, prior_attempts=prior, free_attempts=free,
            budget=self.budget, start_cost=costs, open_ended=open_ended,
        )
        self.feed_error: str | None = None
        self.inflight: dict[str, asyncio.Task[None]] = {}
        self._commit_waiters: dict[asyncio.Future[None], list[str]] = {}
        self.timers: dict[str, asyncio.TimerHandle] = {}
        self.cancelling: set[str] = set()
        self.loop = asyncio.get_running_loop()
        self.done: asyncio.Future[str] = self.loop.create_future()
        self.pump_scheduled = False
        self.cancel_reason: str | None = None
        # The backend seam: where `agent.run(task, ctx)` executes (local: the agent's own
        # coroutine, no extra frame).
        self.run_agent = executor.backend.run
        # Function tasks on the local backend with the built-in agent: the executor awaits the
        # callable's coroutine itself (see `_call`); None disables that shortcut.
        function_agent = executor.agents.get("function")
        self._direct_agent: Agent | None = (
            function_agent if type(function_agent) is FunctionAgent
            and isinstance(executor.backend, LocalBackend) else None)
        # `asyncio.Task(...)` is `loop.create_task(...)` minus a Python frame, unless someone
        # installed a task factory, which must keep seeing every task we create.
        self._new_task: Callable[[Any], asyncio.Task[None]] = (
            self.loop.create_task if self.loop.get_task_factory() is not None
            else functools.partial(asyncio.Task, loop=self.loop))
        # Monotonic clock for durations, anchored once to wall time for unix timestamps.
        self._perf0 = time.perf_counter()
        self._wall0 = time.time()

    def now(self) -> float:
        return self._wall0 + (time.perf_counter() - self._perf0)

    def emit(self, kind: EventKind, task_id: str | None = None, *, attempt: int | None = None,
             message: str | None = None, data: dict[str, Any] | None = None) -> None:
        bus = self.bus
        durable = self.durable
        if durable is None:
            if bus.subscribers:
                bus.publish(Event(kind, self.run_id, self.now(), task_id, attempt, message, data))
            return
        # The store takes the event's fields, numbered in the same stream: no Event object
        # unless someone else listens (three per task add up on big runs, GC included).
        now = self.now()
        bus.seq += 1
        durable.record_event(bus.seq, kind, task_id, attempt, now, message, data)
        if bus.subscribers:
            bus.deliver(Event(kind, self.run_id, now, task_id, attempt, message, data, bus.seq))

    def emit_group(self, kind: EventKind, task_ids: list[str], attempts: list[int] | None = None,
                   datas: list[Any] | None = None) -> None:
        """Events of one kind for many tasks at once, numbered in order, with one time: the
        queued and started tasks of a pump pass, the successes of a group commit. The store
        keeps them as one group; subscribers still get one `Event` each."""
        bus = self.bus
        now = self.now()
        first = bus.seq + 1
        bus.seq += len(task_ids)
        if self.durable is not None:
            self.durable.record_group(first, kind, now, task_ids, attempts, datas)
        if bus.subscribers:
            run_id = self.run_id
            for i, task_id in enumerate(task_ids):
                bus.deliver(Event(kind, run_id, now, task_id,
                                  attempts[i] if attempts is not None else None, None,
                                  datas[i] if datas is not None else None, first + i))

    # -- the loop ------------------------------------------------------------------------
    async def go(self) -> RunResult:
        # LLM tasks that name no model use the run's (a resumed run: the one it started with).
        with run_default_model(self.options.default_model):
            return await self._go()

    async def _go(self) -> RunResult:
        started = self.now()
        if self.durable is not None:
            self.durable.begin()  # records the run (or checks the lease) before anything runs
        resumed: dict[str, Any] = {}
        if self.durable is not None and self.resumed is not None:
            # The time the run lay dead (or finished) before this resume is not its makespan.
            # Each resume's run_started event keeps its gap, so later resumes know them all.
            self.idle, gap = self.durable.idle_periods(started)
            resumed = {"resumed": True, **({"idle": gap} if gap else {})}
        self.emit("run_started", data={"plan": self.plan.name, "tasks": len(self.plan.tasks),
                                       "strategy": self.strategy, **resumed})
        if self.durable is not None and self.resumed is not None:
            started = self.resumed.created_at
            for task_id in self.durable.missing_success_events():
                # Committed just before the crash, acknowledged never: complete the stream.
                self.emit("task_succeeded", task_id, attempt=self.results[task_id].attempts,
                          data={"recovered": True})
        self.pump()
        try:
            await asyncio.shield(self.done)
        except asyncio.CancelledError:
            # The caller was cancelled (e.g. Ctrl-C through asyncio.run): stop cleanly first.
            self.cancel("cancelled")
            if not self.done.done():
                await asyncio.wait([self.done], timeout=30)
            raise
        finished = self.now()
        result = self._result(started, finished, self.done.result())
        if self.durable is not None:
            result.workspace = str(self.workspace)
            result.rollback = await self.durable.finish(result.status, result)
        return result

    def cancel(self, reason: str) -> None:
        if self.done.done() or self.cancel_reason is not None:
            return
        self.cancel_reason = reason
        self.scheduler.send(CancelRequested(reason))
        self.pump()

    async def feed(self, updates: AsyncIterable[Plan]) -> None:
        """Streaming planning: add each update's new tasks, then close the plan."""
        try:
            async for plan in updates:
                if self.done.done() or self.cancel_reason is not None:
                    break
                old = len(self.plan.tasks)
                # The new tasks get the same checks and budget pricing as a whole plan does.
                _check_llm_tasks(plan, self.executor)
                if self.budget is not None:
                    prices = PriceTable(plan.prices)
                    for task in plan.tasks[old:]:
                        if task.kind == "llm":
                            self.scheduler.start_cost[task.id] = (
                                start_cost(task, plan, prices) or 0.0)
                await self.executor.backend.prepare(plan)
                if self.durable is not None:
                    self.durable.extend(plan)
                self.scheduler.extend(plan)
                self.plan = plan
                for task in plan.tasks[old:]:
                    self.results[task.id] = TaskResult(id=task.id, pool=task.pool)
                self._pump_soon()
        except Exception as exc:  # noqa: BLE001 - the planner's failure ends planning only
            self.feed_error = f"the plan stream failed: {type(exc).__name__}: {exc}"
        finally:
            self.scheduler.close()
            if not self.done.done():
                self._pump_soon()

    def pump(self) -> None:
        self.pump_scheduled = False
        results = self.results
        scheduler = self.scheduler
        observed = self.durable is not None or bool(self.bus.subscribers)
        # Consecutive queued (started) notices become one event group: at most one of these
        # two lists is non-empty at a time, so the events keep the decisions' order.
        queued: list[str] = []
        started: list[str] = []
        attempts: list[int] = []
        for decision in scheduler.decide(_STARTS_PER_TURN):
            kind = type(decision)  # starts and queued notices are most decisions: test first
            if kind is StartTask:
                task_id = decision.task_id  # type: ignore[union-attr]
                if queued:
                    self.emit_group("task_queued", queued)
                    queued = []
                self._start(task_id, decision.attempt)  # type: ignore[union-attr]
                if observed:
                    started.append(task_id)
                    attempts.append(decision.attempt)  # type: ignore[union-attr]
            elif kind is QueueTask:
                task_id = decision.task_id  # type: ignore[union-attr]
                results[task_id].status = "queued"
                if observed:
                    if started:
                        self.emit_group("task_started", started, attempts)
                        started, attempts = [], []
                    queued.append(task_id)
            else:
                if queued:
                    self.emit_group("task_queued", queued)
                    queued = []
                if started:
                    self.emit_group("task_started", started, attempts)
                    started, attempts = [], []
                self._carry_out(decision)
        if queued:
            self.emit_group("task_queued", queued)
        if started:
            self.emit_group("task_started", started, attempts)
        if scheduler.start_capped:
            self._pump_soon()  # the rest after the loop's other callbacks have had a turn

    def _carry_out(self, decision: Any) -> None:
        if isinstance(decision, ScheduleRetry):
            self._schedule_retry(decision)
        elif isinstance(decision, FailTask):
            result = self.results[decision.task_id]
            result.status = "failed"
            result.error = decision.error
            self.emit("task_failed", decision.task_id, attempt=result.attempts,
                      message=decision.error)
        elif isinstance(decision, SkipTask):
            result = self.results[decision.task_id]
            result.status = "skipped"
            result.error = decision.reason
            self.emit("task_skipped", decision.task_id, message=decision.reason)
        elif isinstance(decision, CancelTask):
            self._cancel_task(decision)
        elif isinstance(decision, RunFinished):
            if not self.done.done():
                self.done.set_result(decision.status)

    def _pump_soon(self) -> None:
        if not self.pump_scheduled:
            self.pump_scheduled = True
            self.loop.call_soon(self.pump)

    # -- decisions -----------------------------------------------------------------------
    def _start(self, task_id: str, attempt: int) -> None:
        # Runs once per attempt: the clock and the subscriber check are inlined.
        result = self.results[task_id]
        result.status = "running"
        record = AttemptRecord(attempt, self._wall0 + (time.perf_counter() - self._perf0))
        result.history.append(record)
        # (its task_started event, and the stored start, go with the pump pass's group)
        self.inflight[task_id] = self._new_task(self._attempt(task_id, record))

    def _schedule_retry(self, d: ScheduleRetry) -> None:
        result = self.results[d.task_id]
        result.status = "retrying"
        result.error = d.error
        self.emit("task_retrying", d.task_id, attempt=d.next_attempt, message=d.error,
                  data={"delay_seconds": round(d.delay, 3)})
        self.timers[d.task_id] = self.loop.call_later(d.delay, self._retry_due, d.task_id)

    def _retry_due(self, task_id: str) -> None:
        self.timers.pop(task_id, None)
        self.scheduler.send(RetryDue(task_id))
        self._pump_soon()

    def _cancel_task(self, d: CancelTask) -> None:
        timer = self.timers.pop(d.task_id, None)
        if timer is not None:
            timer.cancel()
        inflight = self.inflight.get(d.task_id)
        if inflight is not None:
            self.cancelling.add(d.task_id)
            inflight.cancel()
            return  # the attempt reports TaskCancelled when it has stopped
        result = self.results[d.task_id]
        if self.scheduler.state[d.task_id].value == "cancelled":
            result.status = "cancelled"
            result.error = d.reason
            self.emit("task_cancelled", d.task_id, message=d.reason)

    # -- one attempt ---------------------------------------------------------------------
    def _inputs(self, task: Any) -> dict[str, Any]:
        # Not a comprehension inside `_attempt`: one would make `self` a closure cell there,
        # one more object per attempt for the garbage collector.
        results = self.results
        return {d: results[d].output for d in task.depends_on}

    def _cache_extra(self, task: Any, inputs: dict[str, Any]) -> Any:
        """What a task's output may depend on beyond its definition's work fields (see
        store/cache.py): a command reads its whole task on stdin (and its id from the
        environment), a function that takes the context sees `ctx.task`, and an LLM task's
        answer depends on the messages, model and server it really uses."""
        kind = task.kind
        if kind == "llm":
            return call_identity(task, self.plan, inputs)
        if kind == "command" or function_shape(task.run)[1]:
            return {"task": task.describe()}
        return None

    def _context(self, task: Any, record: AttemptRecord) -> TaskContext:
        task_id = task.id
        return TaskContext(
            task=task, run_id=self.run_id, attempt=record.attempt,
            inputs=self._inputs(task) if task.depends_on else {},
            workspace=self.workspace,
            plan=self.plan, budget=self.budget, cwd=self.cwd,
            _report=lambda msg, frac: self.emit(
                "task_progress", task_id, attempt=record.attempt, message=msg,
                data=None if frac is None else {"fraction": frac}),
        )

    def _call(self, agent: Agent, task: Any, record: AttemptRecord) -> Any:
        """The awaitable that does the attempt's work."""
        if agent is self._direct_agent:
            fn = task.run
            is_async, takes_ctx = function_shape(fn)
            if is_async:
                # What FunctionAgent.run would do, minus its frame and, when the callable
                # takes no context, the TaskContext: measurable on 10^4 tiny tasks.
                return fn(self._context(task, record)) if takes_ctx else fn()
        return self.run_agent(agent, task, self._context(task, record))

    async def _attempt(self, task_id: str, record: AttemptRecord) -> None:
        task = self.plan.task(task_id)
        agent = self.executor.agents.get(task.kind)
        timeout = task.timeout_sec  # `plan.policy(task)[0]`, inlined (runs per attempt)
        if timeout is None:
            timeout = self.plan.pool_for_name(task.pool).timeout_sec
        result = self.results[task_id]
        event: TaskSucceeded | TaskFailed | TaskCancelled
        key, hit, attempt_cost = None, None, 0.0
        # What the attempt waits for shared resources (not work; see providers.note_wait).
        # Set in this attempt's own task context; the direct function path waits for none.
        waits = None if agent is self._direct_agent else attempt_wait_meter()
        try:
            if agent is None:
                raise TaskError(f"no agent for tasks of kind {task.kind!r}", retryable=False)
            if self.durable is not None and self.durable.caches(task):
                inputs = self._inputs(task)
                key, hit, _ = self.durable.cache_lookup(task, inputs,
                                                        self._cache_extra(task, inputs))
            if hit is None and self.durable is not None and agent is not self._direct_agent:
                # Counted before it can take the process down (see starts_committed).
                await self.durable.starts_committed()
            if hit is not None:
                output = hit
            elif timeout is None:
                output = await self._call(agent, task, record)
            else:
                try:
                    async with asyncio.timeout(timeout):
                        output = await self._call(agent, task, record)
                except TimeoutError:
                    if task_id in self.cancelling:
                        raise asyncio.CancelledError from None
                    raise
        except asyncio.CancelledError:
            record.finished_at = self.now()
            record.outcome = "cancelled"
            record.error = self.cancel_reason or "cancelled"
            event = TaskCancelled(task_id)
            if task_id not in self.cancelling:
                # Cancelled from outside our own decisions: treat as a failed attempt.
                record.outcome = "failed"
                event = TaskFailed(task_id, "attempt was cancelled unexpectedly")
        except TimeoutError as exc:
            record.finished_at = self.now()
            record.outcome = "timeout"
            if timeout is None or isinstance(exc, TaskError):
                record.error = str(exc) or f"{type(exc).__name__} raised by the agent"
                record.outcome = "failed"
            else:
                record.error = f"timed out after {timeout:g}s (timeout_sec={timeout:g})"
            event = TaskFailed(task_id, record.error)
        except TaskError as exc:
            self._count_partial(result, exc)
            record.finished_at = self.now()
            record.outcome = "failed"
            record.error = str(exc) or type(exc).__name__
            event = TaskFailed(task_id, record.error, exc.retryable,
                               getattr(exc, "retry_after", None))
        except Exception as exc:  # noqa: BLE001 - any agent failure fails the attempt only
            self._count_partial(result, exc)
            record.finished_at = self.now()
            record.outcome = "failed"
            record.error = f"{type(exc).__name__}: {exc}"
            event = TaskFailed(task_id, record.error)
        else:
            record.finished_at = self._wall0 + (time.perf_counter() - self._perf0)
            record.outcome = "succeeded"
            if hit is not None:
                result.cached = True
            if isinstance(output, TaskOutput):
                attempt_cost = output.cost_usd
                result.usage = _add_usage(result.usage, output.usage)
                result.cost_usd += output.cost_usd
                result.files = output.files
                output = output.output
            result.output = output
            result.status = "succeeded"
            result.error = None
            event = TaskSucceeded(task_id)
        if waits is not None and waits[0]:
            record.waited = min(waits[0], record.duration)
        if self.durable is not None:
            if type(event) is TaskSucceeded:
                # This asyncio task ends here: drop it now rather than keep 10^4 finished
                # tasks alive (and walked by the garbage collector) until their commit.
                self.inflight.pop(task_id, None)
                self._commit(task_id, record, result, key, attempt_cost)
                return  # acknowledged by `_on_commit` once the output is durable
            self.durable.attempt_finished(task_id, record)
        self._acknowledge(task_id, record, result, event)

    def _acknowledge(self, task_id: str, record: AttemptRecord, result: TaskResult,
                     event: TaskSucceeded | TaskFailed | TaskCancelled) -> None:
        """The attempt is over (and, in a durable run, its success committed): tell everyone."""
        self.inflight.pop(task_id, None)
        if self.cancelling:
            self.cancelling.discard(task_id)
        if type(event) is TaskSucceeded:
            if self.durable is not None or self.bus.subscribers:
                self.emit("task_succeeded", task_id, attempt=record.attempt,
                          data=_success_data(record, result))
        elif isinstance(event, TaskCancelled):
            result.status = "cancelled"
            result.error = record.error
            self.emit("task_cancelled", task_id, attempt=record.attempt, message=record.error)
        self.scheduler.send(event)
        self._pump_soon()

    @staticmethod
    def _count_partial(result: TaskResult, exc: BaseException) -> None:
        """A failed LLM attempt may have paid for calls: count them in the totals."""
        partial = getattr(exc, "partial_output", None)
        if isinstance(partial, TaskOutput):
            result.usage = _add_usage(result.usage, partial.usage)
            result.cost_usd += partial.cost_usd
    # -- durability (store/) -------------------------------------------------------------
    def _commit(self, task_id: str, record: AttemptRecord, result: TaskResult, key: str | None,
                cost: float) -> None:
        """Queue a success for commit; `_on_commit` acknowledges it once it is durable.

        Successes of one loop turn share one commit future, and each future gets one callback
        here (not one suspended coroutine per task): a wave of 10^4 tasks waiting for their
        group commit costs a list entry each. Nothing can cancel a queued commit, so the work
        of a task that finished is never lost to a cancel arriving during its commit.
        """
        assert self.durable is not None
        commit = self.durable.commit_success(task_id, record, result, key, result.cached, cost)
        # The work is done: its slot goes to the next task while the commit is in flight (the
        # group commit then batches more tasks); dependents still wait for the commit.
        self.scheduler.send(TaskWorkDone(task_id))
        self._pump_soon()
        waiting = self._commit_waiters.get(commit)
        if waiting is None:
            waiting = self._commit_waiters[commit] = []
            commit.add_done_callback(self._on_commit)
        waiting.append(task_id)  # a str: no tuple per task for the GC to walk

    def _on_commit(self, commit: asyncio.Future[None]) -> None:
        error = (asyncio.CancelledError("the commit was cancelled") if commit.cancelled()
                 else commit.exception())
        results = self.results
        waiting = self._commit_waiters.pop(commit, ())
        if error is not None:  # the store failed: the attempts did too
            for task_id in waiting:
                result = results[task_id]
                record = result.history[-1]  # the attempt that committed: nothing ran since
                record.outcome = "failed"
                record.error = f"the output could not be committed: {error}"
                result.status, result.output, result.cached = "running", None, False
                assert self.durable is not None
                self.durable.attempt_finished(task_id, record)
                self._acknowledge(task_id, record, result, TaskFailed(task_id, record.error))
            return
        # `_acknowledge` for the whole group: one task_succeeded event group, then the
        # scheduler hears of each success (its decisions are pulled by the next pump).
        inflight, cancelling = self.inflight, self.cancelling
        attempts: list[int] = []
        datas: list[dict[str, Any]] = []
        for task_id in waiting:
            result = results[task_id]
            record = result.history[-1]
            inflight.pop(task_id, None)
            if cancelling:
                cancelling.discard(task_id)
            attempts.append(record.attempt)
            datas.append(_success_data(record, result))
        if waiting:
            self.emit_group("task_succeeded", waiting, attempts, datas)
        send = self.scheduler.send
        for task_id in waiting:
            send(TaskSucceeded(task_id))
        self._pump_soon()

    # -- the result ----------------------------------------------------------------------
    def _result(self, started: float, finished: float, status: str) -> RunResult:
        # One pass over every attempt: the run's metrics come from these (runs per task).
        busy: dict[str, float] = {}
        intervals: list[tuple[float, float]] = []
        pools = self.plan.all_pools()
        by_pool: dict[str, list[tuple[float, float]]] = {name: [] for name in pools}
        last_end: float | None = None
        for tid, r in self.results.items():
            history = r.history
            spent = 0.0
            in_pool = by_pool[r.pool]
            for a in history:
                end = a.finished_at
                if end is not None:
                    interval = (a.started_at, end)
                    intervals.append(interval)
                    in_pool.append(interval)
                    if end > a.started_at:
                        spent += max(0.0, end - a.started_at - a.waited)  # waits: no work
            busy[tid] = spent
            if history and history[-1].finished_at is not None:
                end = history[-1].finished_at
                if last_end is None or end > last_end:
                    last_end = end
        # Nothing ran (an empty plan, or cancelled before any start): no time was spent.
        makespan = 0.0
        if last_end is not None:
            idle = sum(max(0.0, min(to, last_end) - max(since, started))
                       for since, to in self.idle)
            makespan = max(last_end - started - idle, 0.0)
        serial = sum(busy.values())
        cp_seconds, cp = metrics.critical_path(self.plan, busy)
        workers = self.scheduler.max_workers
        bound = metrics.lower_bound(
            self.plan, busy, None if workers == float("inf") else int(workers),
            critical_path_seconds=cp_seconds,
        )
        peaks: dict[str, int] = {}
        utilization = metrics.utilization(pools, by_pool, makespan, peaks)
        used = [name for name, got in by_pool.items() if got]
        if len(used) == 1 and used[0] in peaks:
            max_parallel = peaks[used[0]]  # one pool did everything: its peak is the run's
        else:
            max_parallel = metrics.peak_concurrency(intervals)
        reason = self.cancel_reason or self.feed_error
        if reason is None and status != "succeeded":
            broke = [r for r in self.results.values()
                     if r.status in ("skipped", "failed") and r.error
                     and r.error.startswith(BUDGET_EXHAUSTED)]
            bad = [r for r in self.results.values() if r.status == "failed" and r not in broke]
            if broke:
                reason = (f"{BUDGET_EXHAUSTED} (${self.budget.limit if self.budget else 0:g}): "
                          f"{len(broke)} task(s) not run or stopped: "
                          + ", ".join(r.id for r in broke[:5]))
                if bad:
                    reason += f"; {len(bad)} task(s) failed: " + ", ".join(r.id for r in bad[:5])
            elif bad:
                reason = f"{len(bad)} task(s) failed: " + ", ".join(r.id for r in bad[:5])
        by_pool: dict[str, float] = {}
        by_agent: dict[str, float] = {}
        for t in self.plan.tasks:
            r = self.results[t.id]
            if r.usage or r.cost_usd:
                by_pool[t.pool] = by_pool.get(t.pool, 0.0) + r.cost_usd
                agent = t.agent or t.kind
                by_agent[agent] = by_agent.get(agent, 0.0) + r.cost_usd
        usages = [r.usage for r in self.results.values() if r.usage]
        cost = sum(r.cost_usd for r in self.results.values())
        prepaid = self.prepaid
        if prepaid is not None:
            usages.append(prepaid.usage)
            cost += prepaid.cost_usd
            by_agent[prepaid.label] = by_agent.get(prepaid.label, 0.0) + prepaid.cost_usd
        result = RunResult(
            run_id=self.run_id,
            status=status,  # type: ignore[arg-type]
            tasks=self.results,
            strategy=self.strategy,
            started_at=started,
            finished_at=finished,
            makespan_seconds=makespan,
            serial_seconds=serial,
            critical_path_seconds=cp_seconds,
            critical_path=cp,
            lower_bound_seconds=bound,
            speedup=(serial / makespan) if makespan > 0 else 1.0,
            efficiency=min(1.0, bound / makespan) if makespan > 0 else 1.0,
            max_parallel=max_parallel,
            pool_utilization=utilization,
            reason=reason,
            cost_usd=cost,
            usage=sum_usage(usages),
            cost_by_pool=by_pool,
            cost_by_agent=by_agent,
            budget_usd=self.budget.limit if self.budget is not None else None,
            prepaid=prepaid,
        )
        self.emit("run_finished", message=status, data={
            "status": status, "makespan_seconds": round(makespan, 6),
            "speedup": round(result.speedup, 4), "cost_usd": round(result.cost_usd, 8),
        })
        return result


def _json_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `metadata` as JSON values, or a UsageError naming what is not one."""
    try:
        return json.loads(json.dumps(dict(metadata), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise UsageError(f"run metadata must be JSON values (str, numbers, bool, None, lists, "
                         f"dicts with str keys): {exc}") from None


def _success_data(record: AttemptRecord, result: TaskResult) -> dict[str, Any]:
    """The data of a task_succeeded event."""
    data: dict[str, Any] = {"duration": round(record.duration, 6)}
    if record.waited:
        data["waited"] = round(record.waited, 6)  # of the duration: not work
    if result.usage or result.cost_usd:
        data["cost_usd"] = round(result.cost_usd, 8)  # the live display sums it
        data["usage"] = dict(result.usage)
    if result.cached:
        data["cached"] = True
    return data


def _add_usage(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    out = dict(a)
    for key, value in b.items():
        out[key] = out.get(key, 0) + int(value or 0)
    return out


def _check_llm_tasks(plan: Plan, executor: Executor) -> None:
    """Before anything runs: every LLM task names a usable provider and, under a budget, a
    model with a known price (an unknown price would make the budget meaningless)."""
    # `t.kind == "llm"` without the property call: this runs over every task of every plan.
    llm = [(i, t) for i, t in enumerate(plan.tasks) if t.command is None and t.run is None]
    if not llm:
        return
    known = set(BUILTIN_PROVIDERS) | set(plan.providers) | set(executor.providers)
    limit = executor.budget_usd if executor.budget_usd is not None else plan.budget_usd
    prices = PriceTable(plan.prices)
    problems: list[PlanProblem] = []
    for index, task in llm:
        spec = llm_settings(task, plan).model
        provider, _ = split_model(spec)
        where = f"tasks[{index}] ({task.id}).model"
        if provider not in known:
            import difflib

            close = difflib.get_close_matches(provider, sorted(known), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            problems.append(PlanProblem(where, (
                f"unknown provider {provider!r} in {spec!r}: {hint}use one of "
                f"{', '.join(sorted(known))} (openai: is any OpenAI-compatible server; set "
                f"its base_url under `providers:`)")))
        elif limit is not None and prices.price(spec) is None:
            problems.append(PlanProblem(where, (
                f"no price known for {spec!r}, so the budget cannot be enforced: add it under "
                f"`prices:` ({split_model(spec)[1]}: {{input_per_mtok: ..., output_per_mtok: ...}})")))
    if problems:
        raise PlanError(problems)
