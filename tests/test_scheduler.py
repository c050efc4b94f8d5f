"""Property tests of the pure scheduler over random DAGs, in virtual time.

Two drivers: `parallel_agents.simulate.simulate` (the public one) and `_CheckedDriver`
below, which drives `Scheduler` directly and checks every invariant at every decision.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import parallel_agents as pa
from parallel_agents._core._scheduler import (
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
from parallel_agents._core._state import TaskState
from parallel_agents.metrics import critical_path, lower_bound
from parallel_agents.simulate import simulate

# Deterministic: the same examples on every machine and every run, no example database.
PROPS = settings(
    max_examples=120,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# -- random plans --------------------------------------------------------------------------
@dataclass
class Case:
    plan: pa.Plan
    fails: dict[str, int]  # first n attempts of the task fail
    max_workers: int | None


def _noop() -> None:
    return None


@st.composite
def cases(draw: st.DrawFn, *, max_tasks: int = 14, failures: bool = True,
          pools: bool = True, stages: bool = False) -> Case:
    n = draw(st.integers(0, max_tasks))
    pool_names = ["default"]
    pool_defs: dict[str, pa.Pool] = {}
    if pools:
        for i in range(draw(st.integers(1, 3))):
            name = f"p{i}"
            pool_names.append(name)
            pool_defs[name] = pa.Pool(
                max_concurrent=draw(st.integers(1, 3)),
                max_retries=draw(st.integers(0, 2)),
                retry_backoff_sec=draw(st.sampled_from([0.0, 0.5, 2.0])),
            )
    pool_defs["default"] = pa.Pool(max_concurrent=draw(st.integers(1, 4)))
    tasks = []
    fails: dict[str, int] = {}
    stage_of: dict[str, int] = {}
    for i in range(n):
        tid = f"t{i}"
        deps = sorted(set(draw(st.lists(st.integers(0, i - 1), max_size=3)))) if i else []
        dep_ids = tuple(f"t{d}" for d in deps)
        stage = None
        if stages:
            lowest = max((stage_of[d] for d in dep_ids), default=0)
            stage_of[tid] = draw(st.integers(lowest, 3))
            stage = f"s{stage_of[tid]}"
        retries = draw(st.one_of(st.none(), st.integers(0, 2))) if failures else None
        tasks.append(pa.Task(
            id=tid, run=_noop, depends_on=dep_ids,
            pool=draw(st.sampled_from(pool_names)),
            priority=draw(st.integers(0, 10)),
            # Integers make many events land on the same instant, where ordering matters.
            estimated_seconds=draw(st.sampled_from([1, 1, 2, 3, 5])),
            max_retries=retries,
            retry_backoff_sec=draw(st.sampled_from([None, 0.0, 1.0])),
            stage=stage,
        ))
        if failures and draw(st.booleans()):
            fails[tid] = draw(st.integers(1, 3))
    max_workers = draw(st.one_of(st.none(), st.integers(1, 5)))
    extra = {"stages": tuple(f"s{i}" for i in range(4))} if stages else {}
    return Case(pa.Plan(tasks=tasks, pools=pool_defs, **extra), fails, max_workers)


# -- the checking driver -------------------------------------------------------------------
@dataclass
class Trace:
    starts: list[tuple[float, str, int]] = field(default_factory=list)  # (time, task, attempt)
    ends: dict[tuple[str, int], float] = field(default_factory=dict)
    retry_waits: list[tuple[str, float, float]] = field(default_factory=list)
    concurrency_peak: int = 0
    status: str | None = None
    final: dict[str, str] = field(default_factory=dict)
    makespan: float = 0.0


class _CheckedDriver:
    """Runs the scheduler in virtual time and asserts the contract at every decision."""

    def __init__(self, plan: pa.Plan, *, strategy: str = "dependency",
                 max_workers: int | None = None, fails: dict[str, int] | None = None,
                 fail_fast: bool = False, cancel_at: float | None = None) -> None:
        self.plan = plan
        self.strategy = strategy
        self.fails = fails or {}
        self.sched = Scheduler(plan, strategy=strategy, max_workers=max_workers,  # type: ignore[arg-type]
                               fail_fast=fail_fast, rng=random.Random(7))
        self.limit = self.sched.max_workers
        self.cancel_at = cancel_at
        self.slots = {name: (p.max_concurrent or 10**9) for name, p in plan.all_pools().items()}
        self.running: dict[str, int] = {}  # task -> attempt
        self.waiting_retry: dict[str, float] = {}
        self.succeeded: set[str] = set()
        self.terminal_at: dict[str, float] = {}
        self.trace = Trace()
        self.now = 0.0
        self.heap: list[tuple[float, int, str, str, int]] = []
        self.seq = 0
        self.levels = self._levels()
        self.stage_index = {s: i for i, s in enumerate(plan.stage_order())}

    def _levels(self) -> dict[str, int]:
        level: dict[str, int] = {}
        for t in self.plan.tasks:  # plan order is topological in generated plans
            level[t.id] = 1 + max((level[d] for d in t.depends_on), default=-1)
        return level

    def _pool_running(self, pool: str) -> int:
        return sum(1 for t in self.running if self.plan.task(t).pool == pool)

    def _gate(self, task_id: str) -> int:
        if self.strategy == "waves":
            return self.levels[task_id]
        if self.strategy == "pipeline":
            return self.stage_index[self.plan.task(task_id).stage or ""]
        return 0

    def _decide(self) -> None:
        # READY tasks now: all of them compete at this instant.
        ready = {t for t, s in self.sched.state.items() if s is TaskState.READY}
        started_now: set[str] = set()
        for d in self.sched.decide():
            assert self.trace.status is None, f"decision {d} after RunFinished"
            if isinstance(d, QueueTask):
                ready.add(d.task_id)
            elif isinstance(d, StartTask):
                self._check_start(d, ready - started_now)
                started_now.add(d.task_id)
                self._start(d)
            elif isinstance(d, ScheduleRetry):
                tid = d.task_id
                assert tid not in self.running, "a task waiting for a retry holds a slot"
                assert d.delay >= 0
                self.waiting_retry[tid] = self.now
                self.seq += 1
                heapq.heappush(self.heap, (self.now + d.delay, self.seq, "retry", tid, 0))
            elif isinstance(d, FailTask):
                self.terminal_at[d.task_id] = self.now
                self.trace.final[d.task_id] = "failed"
            elif isinstance(d, SkipTask):
                self.terminal_at[d.task_id] = self.now
                self.trace.final[d.task_id] = "skipped"
                self.waiting_retry.pop(d.task_id, None)
            elif isinstance(d, CancelTask):
                self.waiting_retry.pop(d.task_id, None)
                if d.task_id in self.running:
                    attempt = self.running.pop(d.task_id)
                    self.trace.ends[(d.task_id, attempt)] = self.now
                    self.sched.send(TaskCancelled(d.task_id))
                    self.trace.final[d.task_id] = "cancelled"
                else:
                    self.trace.final.setdefault(d.task_id, "cancelled")
                self.terminal_at.setdefault(d.task_id, self.now)
            elif isinstance(d, RunFinished):
                self.trace.status = d.status
        # Work-conserving: nobody left READY while its pool and the global limit have room.
        if self.sched._cancel_reason is None:
            for t, s in self.sched.state.items():
                if s is TaskState.READY:
                    pool = self.plan.task(t).pool
                    assert (self._pool_running(pool) >= self.slots[pool]
                            or len(self.running) >= self.limit), f"{t} idles with a free slot"
        assert self.sched.running_count == len(self.running)

    def _check_start(self, d: StartTask, competing: set[str]) -> None:
        tid = d.task_id
        task = self.plan.task(tid)
        assert tid not in self.running, f"{tid} started twice at once"
        previous = [a for (_, t, a) in self.trace.starts if t == tid]
        assert d.attempt == len(previous) + 1, f"{tid}: attempt {d.attempt} after {previous}"
        assert tid not in self.succeeded and tid not in self.trace.final
        for dep in task.depends_on:
            assert dep in self.succeeded, f"{tid} started before its dependency {dep} succeeded"
        assert self._pool_running(task.pool) < self.slots[task.pool], "pool limit exceeded"
        assert len(self.running) < self.limit, "max_workers exceeded"
        if self.strategy == "sequential":
            assert not self.running
        if self.strategy in ("waves", "pipeline"):
            gate = self._gate(tid)
            for other in self.plan.tasks:
                if self._gate(other.id) < gate:
                    assert other.id in self.terminal_at, (
                        f"{tid} (gate {gate}) started while {other.id} of an earlier gate "
                        "had not finished")
        if self.strategy != "sequential":
            # Priority: no competing READY task with a free slot outranks the one started.
            for other in competing - {tid}:
                pool = self.plan.task(other).pool
                if self._pool_running(pool) < self.slots[pool]:
                    assert self.plan.task(other).priority <= task.priority, (
                        f"{tid} (priority {task.priority}) started before READY {other} "
                        f"(priority {self.plan.task(other).priority})")
        else:
            # Topological plan order: the lowest-index ready task goes first.
            for other in competing - {tid}:
                assert self.plan._order[other] > self.plan._order[tid]

    def _start(self, d: StartTask) -> None:
        tid = d.task_id
        if tid in self.waiting_retry:
            since = self.waiting_retry.pop(tid)
            self.trace.retry_waits.append((tid, since, self.now))
        self.running[tid] = d.attempt
        self.trace.starts.append((self.now, tid, d.attempt))
        self.trace.concurrency_peak = max(self.trace.concurrency_peak, len(self.running))
        self.seq += 1
        end = self.now + self.plan.task(tid).estimated_seconds
        heapq.heappush(self.heap, (end, self.seq, "end", tid, d.attempt))

    def run(self) -> Trace:
        if self.cancel_at is not None:
            self.seq += 1
            heapq.heappush(self.heap, (self.cancel_at, self.seq, "cancel", "", 0))
        self._decide()
        while self.heap and self.trace.status is None:
            self.now = self.heap[0][0]
            while self.heap and self.heap[0][0] == self.now:
                _, _, what, tid, attempt = heapq.heappop(self.heap)
                if what == "end":
                    if self.running.get(tid) != attempt:
                        continue  # cancelled meanwhile
                    del self.running[tid]
                    self.trace.ends[(tid, attempt)] = self.now
                    if attempt > self.fails.get(tid, 0):
                        self.succeeded.add(tid)
                        self.terminal_at[tid] = self.now
                        self.trace.final[tid] = "succeeded"
                        self.sched.send(TaskSucceeded(tid))
                    else:
                        self.sched.send(TaskFailed(tid, f"attempt {attempt} failed"))
                elif what == "retry":
                    self.sched.send(RetryDue(tid))
                else:
                    self.sched.send(CancelRequested("test cancel"))
            self._decide()
        assert self.trace.status is not None, "the run never finished"
        assert not self.running
        self.trace.makespan = max(self.trace.ends.values(), default=0.0)
        for tid, state in self.sched.state.items():
            assert state.value == self.trace.final.get(tid), (tid, state, self.trace.final.get(tid))
        return self.trace


def expected_statuses(plan: pa.Plan, fails: dict[str, int]) -> dict[str, str]:
    """Oracle without fail-fast: succeeds iff its retries cover its failures and deps succeed."""
    out: dict[str, str] = {}
    for t in plan.tasks:
        _, retries, _ = plan.policy(t)
        if any(out[d] != "succeeded" for d in t.depends_on):
            out[t.id] = "skipped"
        elif fails.get(t.id, 0) > retries:
            out[t.id] = "failed"
        else:
            out[t.id] = "succeeded"
    return out


def expected_run_status(statuses: dict[str, str]) -> str:
    ok = sum(1 for s in statuses.values() if s == "succeeded")
    if ok == len(statuses):
        return "succeeded"
    return "partial" if ok else "failed"


# -- properties ----------------------------------------------------------------------------
@PROPS
@given(cases())
def test_dependency_strategy_invariants(case: Case) -> None:
    trace = _CheckedDriver(case.plan, max_workers=case.max_workers, fails=case.fails).run()
    expected = expected_statuses(case.plan, case.fails)
    assert trace.final == expected
    assert trace.status == expected_run_status(expected)
    # Failed tasks' dependents are skipped, transitively; they never started.
    started = {t for _, t, _ in trace.starts}
    for tid, status in expected.items():
        if status == "skipped":
            assert tid not in started
    # Each task made exactly min(failures + 1, retries + 1) attempts if it ran at all.
    for t in case.plan.tasks:
        if expected[t.id] != "skipped":
            _, retries, _ = case.plan.policy(t)
            n = sum(1 for _, tid, _ in trace.starts if tid == t.id)
            assert n == min(case.fails.get(t.id, 0) + 1, retries + 1)


@PROPS
@given(cases())
def test_retry_waits_hold_no_slot(case: Case) -> None:
    # The driver asserts a waiting task is not running and the scheduler's running count
    # matches; here we also check that the waits really happened and took their backoff.
    trace = _CheckedDriver(case.plan, max_workers=case.max_workers, fails=case.fails).run()
    for tid, since, until in trace.retry_waits:
        assert until >= since


def test_a_task_waiting_for_retry_frees_its_slot_for_another() -> None:
    plan = pa.Plan(
        tasks=[
            pa.Task(id="flaky", run=_noop, pool="one", priority="critical", max_retries=1,
                    retry_backoff_sec=10, estimated_seconds=1),
            pa.Task(id="other", run=_noop, pool="one", priority="low", estimated_seconds=2),
        ],
        pools={"one": pa.Pool(max_concurrent=1)},
    )
    trace = _CheckedDriver(plan, fails={"flaky": 1}).run()
    starts = [(t, tid, a) for t, tid, a in trace.starts]
    assert starts[0] == (0.0, "flaky", 1)
    # The low-priority task runs during flaky's 10 s (±25% jitter) backoff.
    assert starts[1] == (1.0, "other", 1)
    assert starts[2][1:] == ("flaky", 2) and starts[2][0] >= 1 + 7.5
    assert trace.final == {"flaky": "succeeded", "other": "succeeded"}


@PROPS
@given(cases(failures=False))
def test_sequential_runs_one_at_a_time_in_topological_order(case: Case) -> None:
    trace = _CheckedDriver(case.plan, strategy="sequential", max_workers=case.max_workers).run()
    assert trace.concurrency_peak <= 1
    order = [tid for _, tid, _ in trace.starts]
    # Generated plans list tasks topologically, so the serial baseline is plan order.
    assert order == [t.id for t in case.plan.tasks]
    assert trace.makespan == pytest.approx(sum(t.estimated_seconds for t in case.plan.tasks))


@PROPS
@given(cases())
def test_sequential_with_failures_keeps_invariants(case: Case) -> None:
    trace = _CheckedDriver(case.plan, strategy="sequential", fails=case.fails).run()
    assert trace.concurrency_peak <= 1
    assert trace.final == expected_statuses(case.plan, case.fails)


@PROPS
@given(cases())
def test_waves_run_level_by_level(case: Case) -> None:
    # The driver asserts no task of wave L starts before every task of waves < L ended.
    trace = _CheckedDriver(case.plan, strategy="waves", max_workers=case.max_workers,
                           fails=case.fails).run()
    assert trace.final == expected_statuses(case.plan, case.fails)


@PROPS
@given(cases(stages=True))
def test_pipeline_runs_stage_by_stage(case: Case) -> None:
    trace = _CheckedDriver(case.plan, strategy="pipeline", max_workers=case.max_workers,
                           fails=case.fails).run()
    assert trace.final == expected_statuses(case.plan, case.fails)


def test_pipeline_tasks_inside_a_stage_run_in_parallel() -> None:
    plan = pa.Plan(
        stages=("design", "build"),
        tasks=[
            pa.Task(id="arch", run=_noop, stage="design", estimated_seconds=1),
            pa.Task(id="ux", run=_noop, stage="design", estimated_seconds=3),
            pa.Task(id="backend", run=_noop, stage="build", depends_on=["arch"]),
            pa.Task(id="frontend", run=_noop, stage="build"),
        ],
    )
    trace = _CheckedDriver(plan, strategy="pipeline").run()
    starts = {tid: t for t, tid, _ in trace.starts}
    assert starts == {"arch": 0, "ux": 0, "backend": 3, "frontend": 3}
    dep = _CheckedDriver(plan, strategy="dependency").run()
    assert {tid: t for t, tid, _ in dep.starts}["backend"] == 1


@PROPS
@given(cases())
def test_fail_fast_stops_starting_work(case: Case) -> None:
    driver = _CheckedDriver(case.plan, max_workers=case.max_workers, fails=case.fails,
                            fail_fast=True)
    trace = driver.run()
    failed_at = [t for tid, t in driver.terminal_at.items() if trace.final.get(tid) == "failed"]
    if failed_at:
        first = min(failed_at)
        assert all(t <= first for t, _, _ in trace.starts)
        assert set(trace.final.values()) <= {"succeeded", "failed", "skipped", "cancelled"}
        assert trace.status in ("partial", "failed")
    else:
        assert trace.status == "succeeded"


@PROPS
@given(cases(), st.sampled_from([0.0, 0.5, 1.0, 2.5, 4.0]))
def test_cancel_mid_run(case: Case, at: float) -> None:
    trace = _CheckedDriver(case.plan, max_workers=case.max_workers, fails=case.fails,
                           cancel_at=at).run()
    assert all(t <= at for t, _, _ in trace.starts)
    if "cancelled" in trace.final.values():
        assert trace.status == "cancelled"


@PROPS
@given(cases())
def test_simulate_agrees_with_the_checked_driver(case: Case) -> None:
    sim = simulate(case.plan, max_workers=case.max_workers, failing_attempts=case.fails, seed=7)
    trace = _CheckedDriver(case.plan, max_workers=case.max_workers, fails=case.fails).run()
    assert sim.statuses == trace.final
    assert sim.status == trace.status
    assert sim.makespan == pytest.approx(trace.makespan)
    assert sorted(sim.start_order) == sorted(tid for _, tid, _ in trace.starts)


# -- makespan quality ----------------------------------------------------------------------
@PROPS
@given(cases(pools=False, failures=False), st.integers(1, 4))
def test_dependency_makespan_within_grahams_bound(case: Case, m: int) -> None:
    plan = pa.Plan(tasks=case.plan.tasks, pools={"default": pa.Pool(max_concurrent=m)})
    sim = simulate(plan)
    assert sim.status == "succeeded"
    weight = {t.id: t.estimated_seconds for t in plan.tasks}
    work = sum(weight.values())
    cp, _ = critical_path(plan, weight)
    assert sim.makespan <= work / m + (1 - 1 / m) * cp + 1e-9
    bound = lower_bound(plan, weight, None)
    assert bound <= sim.makespan + 1e-9
    assert sim.makespan <= (2 - 1 / m) * bound + 1e-9


def _random_plan(rng: random.Random, n: int) -> pa.Plan:
    pools = {"codegen": pa.Pool(max_concurrent=3), "review": pa.Pool(max_concurrent=2),
             "default": pa.Pool(max_concurrent=4)}
    tasks = []
    for i in range(n):
        deps = {f"t{rng.randrange(i)}" for _ in range(rng.randint(0, 3))} if i else set()
        tasks.append(pa.Task(id=f"t{i}", run=_noop, depends_on=sorted(deps),
                             pool=rng.choice(list(pools)),
                             priority=rng.randint(0, 10),
                             estimated_seconds=rng.choice([1, 2, 3, 5, 8, 13])))
    return pa.Plan(tasks=tasks, pools=pools)


def test_dependency_beats_waves_on_average() -> None:
    rng = random.Random(20261123)
    dep_total = waves_total = 0.0
    dep_wins = waves_wins = 0
    for _ in range(150):
        plan = _random_plan(rng, rng.randint(10, 40))
        dep = simulate(plan, strategy="dependency").makespan
        waves = simulate(plan, strategy="waves").makespan
        seq = simulate(plan, strategy="sequential").makespan
        assert dep <= seq and waves <= seq
        dep_total += dep
        waves_total += waves
        dep_wins += dep < waves
        waves_wins += waves < dep
    # Clearly better on average (a single instance may go either way).
    assert dep_total < 0.9 * waves_total, (dep_total, waves_total)
    assert dep_wins > 3 * waves_wins


def test_priority_then_critical_path_then_plan_order() -> None:
    plan = pa.Plan(
        tasks=[
            pa.Task(id="short", run=_noop, priority=5),
            pa.Task(id="long_head", run=_noop, priority=5),
            pa.Task(id="tail", run=_noop, priority=5, depends_on=["long_head"],
                    estimated_seconds=5),
            pa.Task(id="plain", run=_noop, priority=5),
            pa.Task(id="urgent", run=_noop, priority="critical"),
        ],
        pools={"default": pa.Pool(max_concurrent=1)},
    )
    sim = simulate(plan)
    assert sim.start_order[:4] == ["urgent", "long_head", "short", "plain"] or \
        sim.start_order[:3] == ["urgent", "long_head", "tail"]
    assert sim.start_order[:2] == ["urgent", "long_head"]


@PROPS
@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 6)), max_size=30))
def test_peak_concurrency_counts_overlaps(raw: list[tuple[int, int]]) -> None:
    from parallel_agents.metrics import peak_concurrency

    intervals = [(float(s), float(s + d)) for s, d in raw]
    # Reference: the most intervals containing some instant, half-open [start, end).
    instants = {s for s, _ in intervals}
    expected = max((sum(1 for s, e in intervals if s <= t < e) for t in instants), default=0)
    assert peak_concurrency(intervals) == expected


def test_committing_task_frees_its_slot_unless_a_dependent_wants_it() -> None:
    """Durable runs: a task whose work is done waits for its commit. With no dependent that
    could use its slot it frees the slot at once (the next task runs during the commit);
    with one it holds the slot, so the dependent gets it by priority once the commit lands,
    not whatever low-priority task was ready meanwhile."""
    plan = pa.Plan(
        tasks=[pa.Task(id="a", run=_noop, priority="high"),
               pa.Task(id="low", run=_noop, priority="low"),
               pa.Task(id="c", run=_noop, depends_on=["a"], priority="high"),
               pa.Task(id="d", run=_noop, depends_on=["c"], priority="high")],
        pools={"default": pa.Pool(max_concurrent=1)},
    )
    s = Scheduler(plan)
    assert [d.task_id for d in s.decide() if isinstance(d, StartTask)] == ["a"]
    s.send(TaskWorkDone("a"))
    assert s.state["a"] is TaskState.COMMITTING
    assert not [d for d in s.decide() if isinstance(d, StartTask)]  # held for c
    s.send(TaskSucceeded("a"))
    assert [d.task_id for d in s.decide() if isinstance(d, StartTask)] == ["c"]
    s.send(TaskWorkDone("c"))
    s.send(TaskSucceeded("c"))
    assert [d.task_id for d in s.decide() if isinstance(d, StartTask)] == ["d"]
    s.send(TaskWorkDone("d"))  # no dependent: its slot goes on at once
    assert [d.task_id for d in s.decide() if isinstance(d, StartTask)] == ["low"]
    s.send(TaskSucceeded("d"))
    s.send(TaskSucceeded("low"))
    assert [d for d in s.decide() if isinstance(d, RunFinished)] == [RunFinished("succeeded")]
    assert s.running_count == 0


def test_a_committing_task_keeps_its_slot_only_if_its_success_readies_a_dependent() -> None:
    """A fan-in: z waits on a0 and a1. a0's commit readies nothing, so its slot goes on at
    once; a1's readies z, so it holds the slot for it."""
    plan = pa.Plan(tasks=[pa.Task(id="a0", run=_noop, priority="high"),
                          pa.Task(id="a1", run=_noop, priority="high"),
                          pa.Task(id="b", run=_noop, priority="low"),
                          pa.Task(id="z", run=_noop, depends_on=["a0", "a1"], priority="high")],
                   pools={"default": pa.Pool(max_concurrent=1)})
    s = Scheduler(plan)
    assert [d.task_id for d in s.decide() if isinstance(d, StartTask)] == ["a0"]
    s.send(TaskWorkDone("a0"))
    assert [d.task_id for d in s.decide() if isinstance(d, StartTask)] == ["a1"]
    s.send(TaskSucceeded("a0"))
    s.send(TaskWorkDone("a1"))
    assert not [d for d in s.decide() if isinstance(d, StartTask)]  # held for z
    s.send(TaskSucceeded("a1"))
    assert [d.task_id for d in s.decide() if isinstance(d, StartTask)] == ["z"]


@PROPS
@given(cases(failures=False), st.data())
def test_commits_that_take_time_keep_limits_and_hand_slots_to_dependents_by_priority(
        case: Case, data: st.DataObject) -> None:
    """Durable-run protocol: each success is TaskWorkDone, then TaskSucceeded once its commit
    lands (in any order with other events). The pool and run limits hold, a slot held for a
    dependent is given back exactly once (every run ends, nothing counts as running), and no
    task starts ahead of a READY one of higher priority in its pool."""
    plan = case.plan
    s = Scheduler(plan, max_workers=case.max_workers, rng=random.Random(3))
    limit = {name: (p.max_concurrent or 10**9) for name, p in plan.all_pools().items()}
    running: list[str] = []
    committing: list[str] = []
    finished = False
    for _ in range(10 * len(plan.tasks) + 5):
        decisions = s.decide()
        ready = {t for t, st_ in s.state.items() if st_ is TaskState.READY}
        for d in decisions:
            if isinstance(d, StartTask):
                pool = plan.task(d.task_id).pool
                for other in ready - {d.task_id}:
                    if plan.task(other).pool == pool:
                        assert plan.task(other).priority <= plan.task(d.task_id).priority
                running.append(d.task_id)
            elif isinstance(d, RunFinished):
                assert d.status == "succeeded"
                finished = True
        assert s.running_count <= (case.max_workers or 10**9)
        busy: dict[str, int] = {}
        for t in running:
            busy[plan.task(t).pool] = busy.get(plan.task(t).pool, 0) + 1
        assert all(n <= limit[p] for p, n in busy.items())
        if finished:
            break
        choices = [("done", t) for t in running] + [("commit", t) for t in committing]
        if not choices:
            continue
        what, tid = data.draw(st.sampled_from(choices))
        if what == "done":
            running.remove(tid)
            committing.append(tid)
            s.send(TaskWorkDone(tid))
        else:
            committing.remove(tid)
            s.send(TaskSucceeded(tid))
    assert finished and not running and not committing
    assert s.running_count == 0


def test_resumed_attempts_count_against_retries_unless_free() -> None:
    """A resume passes the attempts already made; those the run's own cancel stopped are
    free: they number the next attempt but do not use up a retry."""
    plan = pa.Plan(tasks=[pa.Task(id="a", run=_noop, max_retries=1, retry_backoff_sec=0)])
    spent = Scheduler(plan, prior_attempts={"a": 2})
    assert [type(d) for d in spent.decide()] == [FailTask, RunFinished]
    assert "no retries left: 2 attempt(s) already made" in spent.errors["a"]
    s = Scheduler(plan, prior_attempts={"a": 2}, free_attempts={"a": 1})
    assert [d.attempt for d in s.decide() if isinstance(d, StartTask)] == [3]
    s.send(TaskFailed("a", "boom"))
    assert [d for d in s.decide() if isinstance(d, FailTask)]  # its one retry was attempt 3


def test_failed_commit_retries_without_releasing_a_slot_twice() -> None:
    plan = pa.Plan(tasks=[pa.Task(id="a", run=_noop, max_retries=1, retry_backoff_sec=0)],
                   pools={"default": pa.Pool(max_concurrent=1)})
    s = Scheduler(plan)
    s.decide()
    s.send(TaskWorkDone("a"))
    s.decide()
    s.send(TaskFailed("a", "the output could not be committed: disk full"))
    retry = [d for d in s.decide() if isinstance(d, ScheduleRetry)]
    assert retry and s.running_count == 0
    s.send(RetryDue("a"))
    assert [d.attempt for d in s.decide() if isinstance(d, StartTask)] == [2]
    assert s.running_count == 1


def test_cancel_leaves_a_commit_in_flight_to_finish() -> None:
    plan = pa.Plan(tasks=[pa.Task(id="a", run=_noop), pa.Task(id="b", run=_noop)],
                   pools={"default": pa.Pool(max_concurrent=1)})
    s = Scheduler(plan)
    s.decide()
    s.send(TaskWorkDone("a"))
    s.decide()  # b starts
    s.send(CancelRequested("stop"))
    cancels = [d.task_id for d in s.decide() if isinstance(d, CancelTask)]
    assert cancels == ["b"]  # a's commit is not cancelled
    s.send(TaskCancelled("b"))
    s.send(TaskSucceeded("a"))
    finished = [d for d in s.decide() if isinstance(d, RunFinished)]
    assert s.state["a"] is TaskState.SUCCEEDED and finished


def test_max_starts_slices_a_wide_start_in_priority_order() -> None:
    tasks = [pa.Task(id=f"t{i}", run=_noop, priority=i % 3 * 4) for i in range(7)]
    s = Scheduler(pa.Plan(tasks=tasks))
    everything = Scheduler(pa.Plan(tasks=tasks)).decide()
    expected = [d.task_id for d in everything if isinstance(d, StartTask)]
    got: list[str] = []
    first = s.decide(max_starts=3)
    got += [d.task_id for d in first if isinstance(d, StartTask)]
    assert len(got) == 3 and s.start_capped
    while s.start_capped:
        got += [d.task_id for d in s.decide(max_starts=3) if isinstance(d, StartTask)]
    assert got == expected  # the same order as one uncapped decide()
    assert not [d for d in s.decide(max_starts=3) if isinstance(d, StartTask)]
    assert not s.start_capped


def test_max_starts_is_not_capped_by_a_full_pool() -> None:
    plan = pa.Plan(tasks=[pa.Task(id=f"t{i}", run=_noop) for i in range(4)],
                   pools={"default": pa.Pool(max_concurrent=2)})
    s = Scheduler(plan)
    assert len([d for d in s.decide(max_starts=2) if isinstance(d, StartTask)]) == 2
    assert not s.start_capped  # the pool is full: nothing more could start anyway
