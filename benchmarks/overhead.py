"""Executor overhead: 10,000 no-op async function tasks vs bare `asyncio.gather`.

Shapes: fan-out (no dependencies), chain (each task depends on the previous one) and a
seeded random DAG (each task depends on up to 3 earlier ones). Every task is a no-op
coroutine, so the time measured is the engine's own cost per task: scheduling, slot
bookkeeping, result records and the asyncio task it runs in. The baseline, measured in the
same process and run, is `asyncio.gather` over the same number of the same coroutines.

Peak memory for 100,000 fan-out tasks is measured in a fresh child process (building the
plan and running it) and read from `resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`: the
peak resident set size (RSS) of that process, interpreter included.

    python benchmarks/overhead.py            # all figures
    python benchmarks/overhead.py --n 2000   # a quick look

Targets (issue #2): fan-out >= 30,000 tasks/s and within 4x of gather; chain < 50 µs per
task; 100,000 tasks < 500 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import resource
import subprocess
import sys
import time

import parallel_agents as pa

TARGET_FANOUT_TPS = 30_000
TARGET_GATHER_RATIO = 4.0
TARGET_CHAIN_US = 50.0
TARGET_MEMORY_MB = 500.0


async def noop() -> None:
    return None


def build(shape: str, n: int, seed: int = 1) -> pa.Plan:
    rng = random.Random(seed)
    tasks = []
    for i in range(n):
        if shape == "fan-out" or i == 0:
            deps: tuple[str, ...] = ()
        elif shape == "chain":
            deps = (f"t{i - 1}",)
        else:
            deps = tuple(sorted({f"t{rng.randrange(i)}" for _ in range(rng.randint(0, 3))}))
        tasks.append(pa.Task(id=f"t{i}", run=noop, depends_on=deps))
    # No pool limit: the benchmark measures the engine, not a configured cap.
    return pa.Plan(tasks=tasks, pools={"default": pa.Pool(max_concurrent=None)})


async def gather_baseline(n: int) -> None:
    await asyncio.gather(*(noop() for _ in range(n)))


async def engine(plan: pa.Plan) -> None:
    result = await pa.Executor().execute(plan)
    assert result.status == "succeeded", result.status


def best_of(fn, repeat: int) -> tuple[float, float]:  # noqa: ANN001 - a tiny local helper
    """Best wall time and best CPU time (this process) over `repeat` runs of `fn()`.

    The CPU time is printed too because the machine may be shared: other processes stretch
    wall time, hardly CPU time.
    """
    walls, cpus = [], []
    for _ in range(repeat):
        gc.collect()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - wall0)
        cpus.append(time.process_time() - cpu0)
    return min(walls), min(cpus)


def paired_best(base_fn, fn, repeat: int) -> tuple[tuple[float, float], tuple[float, float]]:  # noqa: ANN001
    """`best_of` for the baseline and the engine, their runs interleaved: on a machine whose
    speed drifts (other jobs, CPU frequency), both then see the same conditions."""
    base_w, base_c, walls, cpus = [], [], [], []
    for _ in range(repeat):
        w, c = best_of(base_fn, 1)
        base_w.append(w)
        base_c.append(c)
        w, c = best_of(fn, 1)
        walls.append(w)
        cpus.append(c)
    return (min(base_w), min(base_c)), (min(walls), min(cpus))


def memory_child(n: int) -> None:
    plan = build("fan-out", n)
    result = asyncio.run(pa.Executor().execute(plan))
    assert result.status == "succeeded"
    print(json.dumps({"tasks": len(result.tasks)}))


def peak_rss_mb(n: int) -> float:
    proc = subprocess.run([sys.executable, __file__, "--memory-child", str(n)],
                          capture_output=True, text=True, check=True)
    assert json.loads(proc.stdout)["tasks"] == n
    # Linux reports ru_maxrss in KiB: the largest child waited for so far, i.e. this one.
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--memory-n", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child)
        return 0

    n = args.n
    load = os.getloadavg()[0]
    print(f"parallel-agents {pa.__version__}, Python {sys.version.split()[0]}, "
          f"{n:,} no-op async tasks, best of {args.repeat}, {os.cpu_count()} CPUs, "
          f"load average {load:.1f}")
    print("each run is one asyncio.run(...) (a fresh loop), timed as a whole; "
          "[cpu: ...] is this process's CPU time")
    print("each shape's runs alternate with gather's; ratios are to the gather runs beside them")
    ok = True
    for shape in ("fan-out", "chain", "random DAG"):
        t0 = time.perf_counter()
        plan = build(shape, n)
        built = time.perf_counter() - t0
        (base, base_cpu), (took, took_cpu) = paired_best(
            lambda: asyncio.run(gather_baseline(n)), lambda: asyncio.run(engine(plan)),
            args.repeat)
        print(f"{'asyncio.gather':>16}: {n / base:>10,.0f} tasks/s {base / n * 1e6:>7.2f} "
              f"µs/task         [cpu: {base_cpu / n * 1e6:.2f} µs/task]  (baseline)")
        per = took / n * 1e6
        ratio = took / base
        line = (f"{shape:>16}: {n / took:>10,.0f} tasks/s {per:>7.2f} µs/task "
                f"{ratio:>5.2f}x gather [cpu: {took_cpu / n * 1e6:.2f} µs/task, "
                f"{took_cpu / base_cpu:.2f}x]  (plan built in {built:.2f}s, not counted)")
        print(line)
        cpu_ratio = took_cpu / base_cpu
        if shape == "fan-out":
            for what, tps, r in (("wall", n / took, ratio), ("cpu", n / took_cpu, cpu_ratio)):
                hit = tps >= TARGET_FANOUT_TPS and r <= TARGET_GATHER_RATIO
                print(f"{'':>18}target ({what}) >= {TARGET_FANOUT_TPS:,} tasks/s: "
                      f"{'OK' if tps >= TARGET_FANOUT_TPS else 'MISSED'} ({tps:,.0f}); "
                      f"<= {TARGET_GATHER_RATIO:g}x gather: "
                      f"{'OK' if r <= TARGET_GATHER_RATIO else 'MISSED'} ({r:.2f}x)")
                ok &= hit
        elif shape == "chain":
            for what, us in (("wall", per), ("cpu", took_cpu / n * 1e6)):
                hit = us < TARGET_CHAIN_US
                print(f"{'':>18}target ({what}) < {TARGET_CHAIN_US:g} µs/task: "
                      f"{'OK' if hit else 'MISSED'} ({us:.1f})")
                ok &= hit
    mb = peak_rss_mb(args.memory_n)
    hit = mb < TARGET_MEMORY_MB
    ok &= hit
    print(f"{'peak RSS':>16}: {mb:,.0f} MB for {args.memory_n:,} fan-out tasks (child process "
          f"ru_maxrss: plan + run + interpreter)  target < {TARGET_MEMORY_MB:g} MB: "
          + ("OK" if hit else "MISSED"))
    print("all targets met" if ok else "some targets MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
