"""The scheduling core: a pure state machine, no asyncio, no clock, no I/O.

Drivers (the asyncio executor, the virtual-time simulator, the Ray backend, the tests) feed it
events with `send()` and ask it what to do next with `decide()`. Because it never looks at a
clock, the same plan and the same events always give the same decisions, which is what makes
the property tests and the simulator possible.

Ordering among ready tasks: highest priority first, then the longest remaining critical path
(sum of `estimated_seconds` from the task to the end of the graph), then plan order. Events
sent between two `decide()` calls are "the same instant": every task they make ready competes
for the free slots together.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..plan import Plan, Strategy
from ._budget import BUDGET_EXHAUSTED, Budget
from ._state import TERMINAL, TRANSITIONS, TaskState, check_transition

__all__ = [
    "Scheduler",
    # events in
    "TaskSucceeded",
    "TaskWorkDone",
    "TaskFailed",
    "TaskCancelled",
    "RetryDue",
    "CancelRequested",
    # decisions out
    "QueueTask",
    "StartTask",
    "ScheduleRetry",
    "FailTask",
    "SkipTask",
    "CancelTask",
    "RunFinished",
    "MAX_BACKOFF_SEC",
    "backoff_delay",
]

MAX_BACKOFF_SEC = 60.0


# Events and decisions are made several times per task attempt. They are plain slotted
# dataclasses, not frozen ones (which cost about twice as much to create): treat them as
# read-only values.

# -- events the driver sends -------------------------------------------------------------
@dataclass(slots=True)
class TaskSucceeded:
    task_id: str


@dataclass(slots=True)
class TaskWorkDone:
    """A running task's work succeeded and its output is being committed (durable runs).

    Frees its slot at once, as a retry wait does, unless one of its dependents would want
    that slot: then it holds the slot until `TaskSucceeded` (sent once the commit has landed,
    or `TaskFailed` if it could not), so the dependent competes for it by priority rather
    than find it taken by whatever was ready meanwhile. Its dependents wait for the commit
    either way.
    """

    task_id: str


@dataclass(slots=True)
class TaskFailed:
    task_id: str
    error: str
    retryable: bool = True
    #: a server's Retry-After, in seconds; the backoff is at least this long
    retry_after: float | None = None


@dataclass(slots=True)
class TaskCancelled:
    """A running task the driver was told to cancel has stopped."""

    task_id: str


@dataclass(slots=True)
class RetryDue:
    """The backoff of a task in RETRY_WAIT has elapsed."""

    task_id: str


@dataclass(slots=True)
class CancelRequested:
    reason: str = "cancelled by user"


# -- decisions the driver carries out ----------------------------------------------------
@dataclass(slots=True)
class QueueTask:
    """The task's dependencies are met; it waits for a slot (informational)."""

    task_id: str


@dataclass(slots=True)
class StartTask:
    task_id: str
    attempt: int  # 1-based


@dataclass(slots=True)
class ScheduleRetry:
    """Send RetryDue(task_id) after `delay` seconds. The task holds no slot meanwhile."""

    task_id: str
    next_attempt: int
    delay: float
    error: str


@dataclass(slots=True)
class FailTask:
    """The task failed for good (no retries left, or not retryable)."""

    task_id: str
    error: str


@dataclass(slots=True)
class SkipTask:
    task_id: str
    reason: str


@dataclass(slots=True)
class CancelTask:
    """Stop the task. `running`: it has an attempt in flight (or a retry timer) to stop."""

    task_id: str
    running: bool
    reason: str


@dataclass(slots=True)
class RunFinished:
    status: str  # succeeded | partial | failed | cancelled


Decision = QueueTask | StartTask | ScheduleRetry | FailTask | SkipTask | CancelTask | RunFinished
Event = (TaskSucceeded | TaskWorkDone | TaskFailed | TaskCancelled | RetryDue
         | CancelRequested)


def backoff_delay(base: float, failed_attempt: int, rng: random.Random) -> float:
    """Delay before the attempt after `failed_attempt`: base doubling, jittered, capped."""
    if base <= 0:
        return 0.0
    raw = base * (2 ** min(failed_attempt - 1, 30))
    return min(MAX_BACKOFF_SEC, raw * rng.uniform(0.75, 1.25))


_NO_DEPENDENTS: tuple[str, ...] = ()


@dataclass(slots=True)
class _Info:
    index: int
    pool: str
    deps: tuple[str, ...]
    # A shared empty tuple until the first dependent arrives: most tasks of a wide plan have
    # none, and one list per task is one more object for the garbage collector to walk.
    dependents: list[str] | tuple[str, ...] = _NO_DEPENDENTS
    remaining_path: float = 0.0
    waiting_on: int = 0
    gate: int = 0  # wave or stage index; 0 for strategies without gates
    priority: int = 5
    estimate: float = 1.0
    max_retries: int = 0
    backoff: float = 1.0


class Scheduler:
    """Decides which task starts when. See the module docstring for the contract.

    `already_succeeded` and `prior_attempts` let a driver resume a run: succeeded tasks are
    never started again, and attempts already made count against `max_retries`, except the
    `free_attempts` among them (attempts the run's own cancel stopped: Ctrl-C, a server
    shutdown; nothing the task did). Attempt numbers go on after all of them.
    """

    def __init__(
        self,
        plan: Plan,
        *,
        strategy: Strategy | None = None,
        max_workers: int | None = None,
        fail_fast: bool = False,
        rng: random.Random | None = None,
        already_succeeded: Iterable[str] = (),
        prior_attempts: Mapping[str, int] | None = None,
        free_attempts: Mapping[str, int] | None = None,
        budget: Budget | None = None,
        start_cost: Mapping[str, float] | None = None,
        open_ended: bool = False,
    ) -> None:
        self.plan = plan
        # Budget gate: a task with a start cost (the worst case of its first paid call) starts
        # only if that much can be reserved; the reservation is held under the task's id until
        # the driver moves it to the call, and whatever is left is released when it ends.
        self.budget = budget
        self.start_cost: dict[str, float] = dict(start_cost or {})
        #: streaming planning: more tasks may arrive with `extend()`; no RunFinished until
        #: `close()` says the plan is complete.
        self.open_ended = open_ended
        self._stop_reason: str | None = None  # fail-fast: tasks added later are skipped
        self.strategy: Strategy = strategy or plan.strategy or "dependency"
        limit = max_workers if max_workers is not None else plan.max_workers
        if self.strategy == "sequential":
            limit = 1
        self.max_workers: float = math.inf if limit is None else limit
        self.fail_fast = fail_fast
        self.rng = rng or random.Random()

        self.state: dict[str, TaskState] = {}
        self.attempts: dict[str, int] = dict(prior_attempts or {})
        self._free: dict[str, int] = dict(free_attempts or {})
        self.errors: dict[str, str] = {}
        self._info: dict[str, _Info] = {}
        self._pending_decisions: list[Decision] = []
        #: the last `decide(max_starts=...)` stopped at its cap with startable tasks left
        self.start_capped = False
        self._heaps: dict[str, list[tuple]] = {}
        self._pool_free: dict[str, float] = {}
        #: committing tasks that keep their slot until their commit lands (see TaskWorkDone)
        self._holding: set[str] = set()
        self._running = 0
        self._terminal = 0
        self._cancel_reason: str | None = None
        self._stopping = False  # fail-fast or cancel: nothing new starts, nothing retries
        self._finished = False
        self._gate_open = 0  # highest open wave/stage index
        self._gate_left: list[int] = []  # per gate: tasks not yet terminal

        for name, pool in plan.all_pools().items():
            self._heaps[name] = []
            self._pool_free[name] = math.inf if pool.max_concurrent is None else pool.max_concurrent

        # Setup is per task and runs for every plan: plain loops and locals, no helpers.
        # The retry policy is `plan.policy(task)` inlined: the task's own value, else its pool's.
        infos = self._info
        state = self.state
        pending = TaskState.PENDING
        pool_of = {name: plan.pool_for_name(name) for name in self._heaps}
        any_deps = False
        for index, task in enumerate(plan.tasks):
            task_id = task.id
            pool = pool_of[task.pool]
            retries = task.max_retries
            backoff = task.retry_backoff_sec
            deps = task.depends_on
            if deps:
                any_deps = True
            infos[task_id] = _Info(
                index, task.pool, deps, _NO_DEPENDENTS, 0.0, len(deps), 0, task.priority,
                task.estimated_seconds,
                pool.max_retries if retries is None else retries,
                pool.retry_backoff_sec if backoff is None else backoff)
            state[task_id] = pending
        if any_deps:
            for task in plan.tasks:
                for dep in task.depends_on:
                    self._add_dependent(dep, task.id)
        order = self._topological_order() if any_deps else list(infos)
        self._compute_remaining_paths(order)
        self._compute_gates(order)

        done = set(already_succeeded)
        for task_id in done:
            if task_id in self.state:
                self.state[task_id] = TaskState.SUCCEEDED
                self._terminal += 1
                self._gate_left[self._info[task_id].gate] -= 1
        if done:
            for info in infos.values():
                info.waiting_on = sum(1 for d in info.deps if d not in done)
        self._advance_gate()
        # `_maybe_ready` inlined for the tasks ready at the start (every task of a fan-out);
        # the unusual cases (a closed gate, no retries left on resume) take the full path.
        ready = TaskState.READY
        assert ready in TRANSITIONS[pending]
        sequential = self.strategy == "sequential"
        decisions = self._pending_decisions
        attempts = self.attempts
        heaps = self._heaps
        push = heapq.heappush
        for task_id, info in infos.items():
            if info.waiting_on or state[task_id] is not pending:
                continue
            if info.gate > self._gate_open or (attempts and task_id in attempts):
                self._maybe_ready(task_id)
                continue
            state[task_id] = ready
            decisions.append(QueueTask(task_id))
            push(heaps[info.pool], (info.index, task_id) if sequential else
                 (-info.priority, -info.remaining_path, info.index, task_id))

    def _add_dependent(self, dep: str, task_id: str) -> None:
        info = self._info[dep]
        if info.dependents is _NO_DEPENDENTS:
            info.dependents = [task_id]
        else:
            info.dependents.append(task_id)  # type: ignore[union-attr]

    # -- setup ---------------------------------------------------------------------------
    def _compute_remaining_paths(self, order: list[str]) -> None:
        # Reverse plan order is not a topological order in general; walk a real one.
        infos = self._info
        for task_id in reversed(order):
            info = infos[task_id]
            tail = 0.0
            for child in info.dependents:
                path = infos[child].remaining_path
                if path > tail:
                    tail = path
            info.remaining_path = info.estimate + tail

    def _topological_order(self) -> list[str]:
        waiting = {tid: len(info.deps) for tid, info in self._info.items()}
        order = [tid for tid, n in waiting.items() if n == 0]
        i = 0
        while i < len(order):
            for dep in self._info[order[i]].dependents:
                waiting[dep] -= 1
                if waiting[dep] == 0:
                    order.append(dep)
            i += 1
        return order

    def _compute_gates(self, order: list[str]) -> None:
        if self.strategy == "waves":
            level: dict[str, int] = {}
            for tid in order:
                deps = self._info[tid].deps
                level[tid] = 1 + max((level[d] for d in deps), default=-1)
            for tid, lv in level.items():
                self._info[tid].gate = lv
            count = 1 + max(level.values(), default=0)
        elif self.strategy == "pipeline":
            stages = {name: i for i, name in enumerate(self.plan.stage_order())}
            for task in self.plan.tasks:
                # Validated by the executor: every task has a known stage.
                self._info[task.id].gate = stages.get(task.stage or "", 0)
            count = max(len(stages), 1)
        else:
            self._gate_left = [len(self._info)]
            return
        self._gate_left = [0] * count
        for info in self._info.values():
            self._gate_left[info.gate] += 1

    # -- public API ----------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def running_count(self) -> int:
        return self._running

    def send(self, event: Event) -> None:
        """Record what happened. Decisions that follow are returned by the next `decide()`."""
        if isinstance(event, TaskSucceeded):
            self._on_succeeded(event.task_id)
        elif isinstance(event, TaskWorkDone):
            self._on_work_done(event.task_id)
        elif isinstance(event, TaskFailed):
            self._on_failed(event)
        elif isinstance(event, RetryDue):
            self._on_retry_due(event.task_id)
        elif isinstance(event, TaskCancelled):
            self._on_cancelled(event.task_id)
        elif isinstance(event, CancelRequested):
            self._on_cancel_requested(event.reason)
        else:  # pragma: no cover - a driver bug
            raise TypeError(f"unknown scheduler event {event!r}")

    def extend(self, plan: Plan) -> None:
        """Streaming planning: `plan` is the current plan with new tasks appended at the end.

        New tasks may depend on any task already known (running or done). A task whose
        dependency already failed is skipped at once; after a cancel or a fail-fast stop new
        tasks never start. Only the `dependency` and `sequential` strategies can grow: waves
        and stages are computed from the whole plan.
        """
        old = len(self.plan.tasks)
        if self.strategy not in ("dependency", "sequential"):
            raise ValueError(f"a {self.strategy} run cannot take new tasks: waves and stages "
                             "need the whole plan; use the dependency strategy")
        if self._finished:
            raise ValueError("the run has finished: open it with open_ended=True to add tasks")
        if [t.id for t in plan.tasks[:old]] != [t.id for t in self.plan.tasks]:
            raise ValueError("extend() takes the same plan with tasks appended at the end")
        for name, pool in plan.all_pools().items():
            if name not in self._heaps:
                self._heaps[name] = []
                self._pool_free[name] = (
                    math.inf if pool.max_concurrent is None else pool.max_concurrent)
        new = plan.tasks[old:]
        previous = self.plan
        try:
            self.plan = plan
            for index, task in enumerate(new, start=old):
                _, retries, backoff = plan.policy(task)
                self._info[task.id] = _Info(index=index, pool=task.pool, deps=task.depends_on,
                                            priority=task.priority,
                                            estimate=task.estimated_seconds,
                                            max_retries=retries, backoff=backoff)
                self.state[task.id] = TaskState.PENDING
            for task in new:
                for dep in task.depends_on:
                    self._add_dependent(dep, task.id)
            self._compute_remaining_paths(self._topological_order())
        except Exception:
            # All or nothing: a half-registered task would never start and never finish.
            self.plan = previous
            added = {t.id for t in new}
            for task_id in added:
                self._info.pop(task_id, None)
                self.state.pop(task_id, None)
            for info in self._info.values():
                if info.dependents:
                    info.dependents = [d for d in info.dependents if d not in added]
            raise
        self._gate_left[0] += len(new)
        stopped = self._cancel_reason or self._stop_reason
        for task in new:
            info = self._info[task.id]
            info.waiting_on = sum(
                1 for d in info.deps if self.state[d] is not TaskState.SUCCEEDED)
            bad = [d for d in info.deps
                   if self.state[d] in TERMINAL and self.state[d] is not TaskState.SUCCEEDED]
            if stopped is not None and self._cancel_reason is not None:
                self._set(task.id, TaskState.CANCELLED, "CancelRequested")
                self._pending_decisions.append(CancelTask(task.id, False, stopped))
            elif stopped is not None:
                self._set(task.id, TaskState.SKIPPED, "FailFast")
                self._pending_decisions.append(SkipTask(task.id, stopped))
            elif bad:
                reason = f"dependency {bad[0]!r} {self.state[bad[0]].value}"
                self._set(task.id, TaskState.SKIPPED, "DependencyFailed")
                self._pending_decisions.append(SkipTask(task.id, reason))
            elif info.waiting_on == 0:
                self._maybe_ready(task.id)

    def close(self) -> None:
        """Streaming planning: the plan is complete; the run may finish."""
        self.open_ended = False

    def decide(self, max_starts: int | None = None) -> list[Decision]:
        """Everything the driver must do now: queued notices, skips, retries, starts, finish.

        `max_starts` caps the starts of this call; the ready tasks left over keep their place
        in the queue, and `start_capped` says to call again soon. A driver on an event loop
        uses it to start a 10^4-task fan-out in slices, so the loop keeps serving other work
        (the gateway's HTTP requests) and fewer tasks are alive at once.
        """
        self.start_capped = False
        self._dispatch(max_starts)
        if not self._finished and not self.open_ended and self._terminal == len(self.state):
            self._finished = True
            self._pending_decisions.append(RunFinished(self.status()))
        out, self._pending_decisions = self._pending_decisions, []
        return out

    def status(self) -> str:
        if self._cancel_reason is not None and any(
            s is TaskState.CANCELLED for s in self.state.values()
        ):
            return "cancelled"
        succeeded = sum(1 for s in self.state.values() if s is TaskState.SUCCEEDED)
        if succeeded == len(self.state):
            return "succeeded"
        if self._cancel_reason is not None:
            return "cancelled"
        return "partial" if succeeded else "failed"

    def ready_count(self) -> int:
        return sum(len(h) for h in self._heaps.values())

    # -- transitions ---------------------------------------------------------------------
    def _set(self, task_id: str, new: TaskState, event: str) -> None:
        current = self.state[task_id]
        if new not in TRANSITIONS[current]:  # the check, inlined: this runs per transition
            check_transition(task_id, current, new, event)
        self.state[task_id] = new
        if new in TERMINAL:
            self._terminal += 1
            gate = self._info[task_id].gate
            self._gate_left[gate] -= 1

    def _release_slot(self, task_id: str) -> None:
        if self.budget is not None:
            self.budget.release(task_id)
        self._running -= 1
        self._pool_free[self._info[task_id].pool] += 1

    def _on_work_done(self, task_id: str) -> None:
        self._set(task_id, TaskState.COMMITTING, "TaskWorkDone")
        if self._dependent_wants_slot(task_id):
            self._holding.add(task_id)
        else:
            self._release_slot(task_id)

    def _dependent_wants_slot(self, task_id: str) -> bool:
        """Whether this task's success makes a dependent ready that could take its slot: one
        waiting on nothing else, past its gate, in its pool (or in any, under max_workers)."""
        info = self._info[task_id]
        limited = self.max_workers != math.inf
        for dep in info.dependents:
            d = self._info[dep]
            if (d.waiting_on == 1 and d.gate <= self._gate_open
                    and self.state[dep] is TaskState.PENDING
                    and (limited or d.pool == info.pool)):
                return True
        return False

    def _holds_slot(self, task_id: str) -> bool:
        """Whether the task's slot is still taken (running, or committing while it holds)."""
        if self.state[task_id] is not TaskState.COMMITTING:
            return True
        if self._holding and task_id in self._holding:
            self._holding.discard(task_id)
            return True
        return False

    def _on_succeeded(self, task_id: str) -> None:
        holds = self._holds_slot(task_id)
        self._set(task_id, TaskState.SUCCEEDED, "TaskSucceeded")
        if holds:
            self._release_slot(task_id)
        for dep in self._info[task_id].dependents:
            info = self._info[dep]
            info.waiting_on -= 1
            if info.waiting_on == 0 and self.state[dep] is TaskState.PENDING:
                self._maybe_ready(dep)
        self._advance_gate()

    def _on_failed(self, event: TaskFailed) -> None:
        task_id = event.task_id
        info = self._info[task_id]
        attempt = self.attempts.get(task_id, 0)
        if self._holds_slot(task_id):
            self._release_slot(task_id)
        counted = attempt - self._free.get(task_id, 0) if self._free else attempt
        if event.retryable and counted <= info.max_retries and not self._stopping:
            self._set(task_id, TaskState.RETRY_WAIT, "TaskFailed")
            delay = backoff_delay(info.backoff, counted, self.rng)  # free attempts: no wait
            if event.retry_after is not None:
                delay = max(delay, min(event.retry_after, MAX_BACKOFF_SEC * 10))
            self._pending_decisions.append(
                ScheduleRetry(task_id, attempt + 1, delay, event.error)
            )
            return
        self._fail(task_id, event.error, "TaskFailed")

    def _fail(self, task_id: str, error: str, event: str) -> None:
        self._set(task_id, TaskState.FAILED, event)
        self.errors[task_id] = error
        self._pending_decisions.append(FailTask(task_id, error))
        if self.fail_fast and not self._stopping:
            self._stop_reason = f"fail-fast: task {task_id!r} failed"
            self._stop_everything(self._stop_reason, skip=True)
        else:
            self._skip_dependents(task_id)
        self._advance_gate()

    def _on_retry_due(self, task_id: str) -> None:
        if self.state[task_id] is not TaskState.RETRY_WAIT:
            return  # cancelled or skipped while waiting: the timer is stale
        self._set(task_id, TaskState.READY, "RetryDue")
        self._push_ready(task_id)

    def _on_cancelled(self, task_id: str) -> None:
        if self.state[task_id] is not TaskState.RUNNING:
            return
        self._set(task_id, TaskState.CANCELLED, "TaskCancelled")
        self._release_slot(task_id)
        self._advance_gate()

    def _on_cancel_requested(self, reason: str) -> None:
        if self._cancel_reason is not None or self._finished:
            return
        self._cancel_reason = reason
        self._stop_everything(reason, skip=False)

    def _stop_everything(self, reason: str, *, skip: bool) -> None:
        """Cancel running tasks; skip (fail-fast) or cancel (user) everything not started."""
        self._stopping = True
        for task_id, state in self.state.items():
            if state is TaskState.RUNNING:
                self._pending_decisions.append(CancelTask(task_id, True, reason))
            elif state in TERMINAL or state is TaskState.COMMITTING:
                continue  # a commit in flight is finished, not cancelled: its work is paid for
            elif skip:
                was_waiting = state is TaskState.RETRY_WAIT
                self._set(task_id, TaskState.SKIPPED, "FailFast")
                if was_waiting:
                    self._pending_decisions.append(CancelTask(task_id, True, reason))
                self._pending_decisions.append(SkipTask(task_id, reason))
            else:
                was_waiting = state is TaskState.RETRY_WAIT
                self._set(task_id, TaskState.CANCELLED, "CancelRequested")
                self._pending_decisions.append(CancelTask(task_id, was_waiting, reason))
        for heap in self._heaps.values():
            heap.clear()

    def _skip_dependents(self, failed_id: str, first_reason: str | None = None) -> None:
        stack = [(failed_id, first_reason or f"dependency {failed_id!r} failed")]
        while stack:
            parent, reason = stack.pop()
            for child in self._info[parent].dependents:
                if self.state[child] in TERMINAL:
                    continue
                # A pending child is not in a heap; a READY one cannot exist (its parent
                # had not succeeded), so skipping never leaves a stale heap entry behind.
                self._set(child, TaskState.SKIPPED, "DependencyFailed")
                self._pending_decisions.append(SkipTask(child, reason))
                stack.append((child, f"dependency {child!r} was skipped ({reason})"))

    # -- readiness and dispatch ----------------------------------------------------------
    def _maybe_ready(self, task_id: str) -> None:
        info = self._info[task_id]
        if info.waiting_on or info.gate > self._gate_open:
            return
        made = self.attempts.get(task_id, 0) - self._free.get(task_id, 0)
        if made > info.max_retries:
            # Resumed with every allowed attempt already spent (e.g. interrupted by a crash).
            self._fail(
                task_id,
                f"no retries left: {made} attempt(s) already made "
                f"(max_retries={info.max_retries})",
                "Resume",
            )
            return
        self._set(task_id, TaskState.READY, "DependenciesMet")
        self._pending_decisions.append(QueueTask(task_id))
        self._push_ready(task_id)

    def _push_ready(self, task_id: str) -> None:
        info = self._info[task_id]
        # Flat entries compare fastest; `index` is unique, so `task_id` never gets compared.
        entry: tuple
        if self.strategy == "sequential":
            entry = (info.index, task_id)
        else:
            entry = (-info.priority, -info.remaining_path, info.index, task_id)
        heapq.heappush(self._heaps[info.pool], entry)

    def _advance_gate(self) -> None:
        """Waves/pipeline: open the next gate once every task behind the current one ended."""
        if len(self._gate_left) == 1:
            return  # dependency/sequential: a single gate, always open
        opened = False
        while self._gate_open < len(self._gate_left) - 1 and self._gate_left[self._gate_open] == 0:
            self._gate_open += 1
            opened = True
        if opened:
            for task_id, info in self._info.items():
                if (
                    info.gate == self._gate_open or (info.gate < self._gate_open)
                ) and self.state[task_id] is TaskState.PENDING and info.waiting_on == 0:
                    self._maybe_ready(task_id)

    def _dispatch(self, max_starts: int | None = None) -> None:
        if self._cancel_reason is not None:
            return
        heaps = self._heaps
        free = self._pool_free
        unaffordable: list[tuple[tuple, str]] = []
        try:
            self._dispatch_loop(heaps, free, unaffordable,
                                math.inf if max_starts is None else max_starts)
        finally:
            for entry in unaffordable:  # wait for in-flight reservations to settle
                heapq.heappush(heaps[self._info[entry[-1]].pool], entry)

    def _affordable(self, task_id: str) -> bool | None:
        """True: reserved (or free). None: wait for money in flight. False: never affordable."""
        cost = self.start_cost.get(task_id, 0.0)
        if self.budget is None or cost <= 0:
            return True
        if self.budget.try_reserve(task_id, cost):
            return True
        return None if self.budget.outstanding else False

    def _dispatch_loop(self, heaps: dict[str, list[tuple]], free: dict[str, float],
                       unaffordable: list[tuple[tuple, str]], max_starts: float) -> None:
        starts = 0
        while self._running < self.max_workers:
            if starts >= max_starts:
                self.start_capped = any(heap and free[name] > 0 for name, heap in heaps.items())
                return
            best_pool = None
            best_entry = None
            for name, heap in heaps.items():
                if heap and free[name] > 0 and (best_entry is None or heap[0] < best_entry):
                    best_entry = heap[0]
                    best_pool = name
            if best_pool is None:
                return
            entry = heapq.heappop(heaps[best_pool])
            task_id = entry[-1]
            affordable = self._affordable(task_id)
            if affordable is None:
                unaffordable.append(entry)
                continue
            if affordable is False:
                assert self.budget is not None
                reason = (f"{BUDGET_EXHAUSTED}: its first call may cost up to "
                          f"${self.start_cost[task_id]:.6f} and ${self.budget.remaining:.6f} of "
                          f"the ${self.budget.limit:g} budget is left")
                self._set(task_id, TaskState.SKIPPED, "BudgetExhausted")
                self.errors[task_id] = reason
                self._pending_decisions.append(SkipTask(task_id, reason))
                self._skip_dependents(
                    task_id, f"dependency {task_id!r} was skipped ({BUDGET_EXHAUSTED})")
                self._advance_gate()
                continue
            self._set(task_id, TaskState.RUNNING, "Dispatch")
            free[best_pool] -= 1
            self._running += 1
            attempt = self.attempts.get(task_id, 0) + 1
            self.attempts[task_id] = attempt
            self._pending_decisions.append(StartTask(task_id, attempt))
            starts += 1
