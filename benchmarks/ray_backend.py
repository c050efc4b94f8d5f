"""Local vs Ray backend: per-task overhead and makespan on the same plans, in the same run.

    python benchmarks/ray_backend.py [--tasks 400] [--sleep-tasks 48] [--sleep 0.2]

Figures (the local backend is the baseline, measured in this run):
- startup: `ray.init` of a private local instance, then the pool actors coming up (paid once
  per executor, not per run; shown so the per-run figures are not mistaken for it);
- per-task overhead: makespan / tasks for no-op function tasks in one pool of 8 slots,
  i.e. what the backend adds per attempt (dispatch, pickling, the object store round trip);
- makespan: a DAG of sleeping function tasks (fan-out, then fan-in) and a batch of command
  tasks (a real `python -c` per task), where the work dominates and Ray should cost little.
Ray runs each plan once untimed first, so actors and worker imports are warm.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import parallel_agents as pa  # noqa: E402
from parallel_agents.backends.ray import RayBackend  # noqa: E402


def noop() -> None:
    return None


async def nap(ctx: pa.TaskContext) -> float:
    await asyncio.sleep(float(ctx.task.env["SLEEP"]))
    return time.time()


def noop_plan(n: int) -> pa.Plan:
    return pa.Plan(name="noop", pools={"default": pa.Pool(max_concurrent=8)},
                   tasks=[pa.Task(id=f"t{i}", run=noop) for i in range(n)])


def sleep_plan(n: int, sleep: float) -> pa.Plan:
    env = {"SLEEP": str(sleep)}
    tasks = [pa.Task(id="root", run=nap, env=env)]
    tasks += [pa.Task(id=f"w{i}", run=nap, env=env, depends_on=["root"]) for i in range(n)]
    tasks.append(pa.Task(id="join", run=nap, env=env, depends_on=[f"w{i}" for i in range(n)]))
    return pa.Plan(name="fan", pools={"default": pa.Pool(max_concurrent=8)}, tasks=tasks)


def command_plan(n: int) -> pa.Plan:
    return pa.Plan(name="commands", pools={"default": pa.Pool(max_concurrent=4)},
                   tasks=[pa.Task(id=f"c{i}", command=[sys.executable, "-c", "pass"])
                          for i in range(n)])


async def timed(executor: pa.Executor, plan: pa.Plan) -> float:
    start = time.perf_counter()
    result = await executor.execute(plan)
    elapsed = time.perf_counter() - start
    if result.status != "succeeded":
        raise SystemExit(f"{plan.name} did not succeed on {executor.backend.name}: {result.reason}")
    return elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=400, help="no-op tasks (overhead)")
    parser.add_argument("--sleep-tasks", type=int, default=48, help="fan-out width (makespan)")
    parser.add_argument("--sleep", type=float, default=0.2, help="seconds each sleeping task takes")
    parser.add_argument("--commands", type=int, default=24, help="command tasks (makespan)")
    args = parser.parse_args()

    plans = {
        "overhead": noop_plan(args.tasks),
        "fan-out/fan-in": sleep_plan(args.sleep_tasks, args.sleep),
        "commands": command_plan(args.commands),
    }
    local = pa.Executor(backend="local")
    ray_backend = RayBackend()
    remote = pa.Executor(backend=ray_backend)
    t0 = time.perf_counter()
    await ray_backend.start()
    t1 = time.perf_counter()
    for plan in plans.values():
        await ray_backend.prepare(plan)
    t2 = time.perf_counter()
    print(f"ray startup: init {t1 - t0:.2f}s, pool actors {t2 - t1:.2f}s (once per executor)")

    try:
        print(f"{'plan':<16} {'tasks':>5} {'local':>10} {'ray':>10} {'ray/local':>10}")
        for name, plan in plans.items():
            await timed(remote, plan)  # warm: worker imports, pickled functions cached
            t_local = min([await timed(local, plan) for _ in range(3)])
            t_ray = min([await timed(remote, plan) for _ in range(3)])
            n = len(plan.tasks)
            print(f"{name:<16} {n:>5} {t_local:>9.3f}s {t_ray:>9.3f}s {t_ray / t_local:>9.1f}x")
            if name == "overhead":
                per_local, per_ray = t_local / n * 1e6, t_ray / n * 1e6
                print(f"{'':<16} per task: local {per_local:,.0f} µs, ray {per_ray:,.0f} µs "
                      f"(+{per_ray - per_local:,.0f} µs per attempt on Ray, 8 slots)")
            if name == "fan-out/fan-in":
                ideal = args.sleep * (2 + -(-args.sleep_tasks // 8))
                print(f"{'':<16} ideal makespan {ideal:.3f}s: local {t_local / ideal:.2f}x, "
                      f"ray {t_ray / ideal:.2f}x of ideal")
    finally:
        await remote.aclose()
        await local.aclose()


if __name__ == "__main__":
    asyncio.run(main())
