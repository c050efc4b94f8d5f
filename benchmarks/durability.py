"""Durability overhead: tasks/s with the SQLite store on vs off, same plan, same process.

    python benchmarks/durability.py [--tasks 10000] [--repeat 3] [--task-ms 0] [--no-cache]

The plan is N independent no-op async function tasks in one pool. "off" is the in-memory
executor; "on" records every event, attempt and output in the store (WAL, group commit),
keeps the workspace's coordination files and takes a checkpoint after every task, and
acknowledges each success only after its output is committed. The target (issue #3) is an
overhead under 30% of in-memory throughput.

Then the result cache: a "similar project" is run twice. Each run is a 3-stage pipeline of
tasks that sleep and report a cost; the second run changes some tasks' definitions. Changed
tasks and everything downstream of them (their inputs changed) run again; the rest are
served from the cache. Printed: cost and time saved on the second run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from parallel_agents import Executor, Plan, Pool, Task, TaskOutput
from parallel_agents.store import RunStore


async def _noop() -> None:
    return None


def _waits(ms: float):  # noqa: ANN202 - a task body that awaits `ms` (an I/O-bound task)
    async def task() -> None:
        await asyncio.sleep(ms / 1000)
    return task


def noop_plan(n: int, slots: int | None, task_ms: float = 0.0) -> Plan:
    body = _noop if task_ms <= 0 else _waits(task_ms)
    return Plan(name="noop", pools={"default": Pool(max_concurrent=slots)},
                tasks=[Task(id=f"t{i}", run=body) for i in range(n)])


async def _timed(executor: Executor, plan: Plan) -> float:
    t0 = time.perf_counter()
    result = await executor.execute(plan)
    elapsed = time.perf_counter() - t0
    assert result.status == "succeeded", result.status
    return elapsed


def bench_overhead(n: int, slots: int | None, repeat: int, durability: str,
                   task_ms: float = 0.0) -> tuple[float, float]:
    plan = noop_plan(n, slots, task_ms)
    off_times, on_times = [], []
    with tempfile.TemporaryDirectory() as tmp:
        store = RunStore(Path(tmp) / "runs.db", durability=durability)
        for _ in range(repeat):  # interleaved, so both see the same machine load
            off_times.append(asyncio.run(_timed(Executor(), plan)))
            on_times.append(asyncio.run(_timed(Executor(store=store), plan)))
        store.close()
    return n / statistics.median(off_times), n / statistics.median(on_times)


# -- the cache on a similar project -----------------------------------------------------
def _work(seconds: float, cost: float):  # noqa: ANN202 - a task body with a fixed identity
    async def task(ctx):  # noqa: ANN001, ANN202
        await asyncio.sleep(seconds)
        # Like an LLM answer: it changes when the task's prompt or its inputs change.
        answer = {"topic": ctx.task.env["TOPIC"], "version": ctx.task.env["PROMPT_VERSION"],
                  "inputs": ctx.inputs}
        return TaskOutput(output=answer, cost_usd=cost)
    return task


_BODY = _work(0.02, 0.01)


def project(version: int, changed: set[str]) -> Plan:
    """research (6) -> design (4, each reads 3 research) -> build (6, each reads 2 design)."""
    tasks = []
    for i in range(6):
        tasks.append(("research", f"r{i}", ()))
    for i in range(4):
        tasks.append(("design", f"d{i}", tuple(f"r{(i + k) % 6}" for k in range(3))))
    for i in range(6):
        tasks.append(("build", f"b{i}", (f"d{i % 4}", f"d{(i + 1) % 4}")))
    return Plan(name="project", strategy="pipeline", stages=("research", "design", "build"),
                tasks=[Task(id=tid, stage=stage, depends_on=deps, cache=True, run=_BODY,
                            env={"TOPIC": tid,
                                 "PROMPT_VERSION": str(version if tid in changed else 0)})
                       for stage, tid, deps in tasks])


async def _cache_case(store: RunStore, changed: set[str]) -> tuple[float, float, int, int]:
    first = await Executor(store=store).execute(project(0, set()))
    second = await Executor(store=store).execute(project(1, changed))
    cost1 = sum(t.cost_usd for t in first.tasks.values())
    cost2 = sum(t.cost_usd for t in second.tasks.values())
    cached = sum(1 for t in second.tasks.values() if t.cached)
    return cost1, cost2, cached, len(second.tasks)


def bench_cache() -> list[tuple[str, float, float, int, int]]:
    cases = {
        "1 build task changed": {"b0"},
        "1 design task changed": {"d0"},
        "1 research task changed": {"r0"},
        "half the build stage changed": {"b0", "b1", "b2"},
    }
    rows = []
    for label, changed in cases.items():
        with tempfile.TemporaryDirectory() as tmp:
            store = RunStore(Path(tmp) / "runs.db")
            cost1, cost2, cached, n = asyncio.run(_cache_case(store, changed))
            store.close()
        rows.append((label, cost1, cost2, cached, n))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--durability", choices=("normal", "full"), default="normal")
    parser.add_argument("--task-ms", type=float, default=0.0,
                        help="each task awaits this long (default 0: no-op tasks, the issue's "
                             "target); e.g. 1 or 10 for small I/O-bound tasks")
    parser.add_argument("--no-cache", action="store_true", help="skip the cache measurement")
    args = parser.parse_args()
    kind = "no-op" if args.task_ms <= 0 else f"{args.task_ms:g} ms"
    print(f"{args.tasks} {kind} tasks, store durability={args.durability}, "
          f"median of {args.repeat} interleaved runs")
    print(f"{'pool slots':>10} {'off tasks/s':>12} {'on tasks/s':>11} {'overhead':>9} "
          f"{'added/task':>11}  target < 30%" + ("" if args.task_ms <= 0 else " (no-op)"))
    worst = 0.0
    for slots in (None, 64, 4):
        off, on = bench_overhead(args.tasks, slots, args.repeat, args.durability, args.task_ms)
        overhead = (off - on) / off * 100
        worst = max(worst, overhead)
        label = "unlimited" if slots is None else str(slots)
        added_us = (1 / on - 1 / off) * 1e6
        verdict = ("ok" if overhead < 30 else "MISSED") if args.task_ms <= 0 else "-"
        print(f"{label:>10} {off:12.0f} {on:11.0f} {overhead:8.1f}% {added_us:9.0f}us  "
              f"{verdict}")
    print("overhead = throughput lost to the store; added/task = extra wall time per task. A task")
    print("that does real work (a subprocess, an LLM call: milliseconds to minutes) pays the same")
    print("added time, so its relative overhead is that figure over its own duration.")
    if args.no_cache:
        return 0
    print()
    print("result cache, second run of a similar 16-task pipeline project:")
    for label, cost1, cost2, cached, n in bench_cache():
        saved = (cost1 - cost2) / cost1 * 100 if cost1 else 0.0
        print(f"  {label:32} {cached:2}/{n} tasks cached, cost ${cost1:.2f} -> ${cost2:.2f} "
              f"({saved:.0f}% saved)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
