"""What watching a run costs: wall time of a plan of many tiny function tasks, with no
subscriber (baseline, same run), with the plain line printer, and with the live display
drawing to a (virtual) terminal. Prints seconds and ratios to the baseline."""

from __future__ import annotations

import asyncio
import io
import sys
import time

from rich.console import Console

from parallel_agents import Executor, Plan, Task
from parallel_agents.progress import LinePrinter, LiveProgress


def noop() -> int:
    return 1


def make_plan(n: int) -> Plan:
    tasks = [Task(id=f"t{i}", pool="p", run=noop, estimated_seconds=0.001,
                  depends_on=[f"t{i - 1}"] if i % 20 else []) for i in range(n)]
    return Plan(name="overhead", pools={"p": {"max_concurrent": 16}}, tasks=tasks)


def timed(plan: Plan, watcher: str) -> float:
    ex = Executor()
    live = None
    if watcher == "lines":
        ex.subscribe(LinePrinter(Console(file=io.StringIO(), force_terminal=False)))
    elif watcher == "live":
        console = Console(file=io.StringIO(), force_terminal=True, width=120)
        live = LiveProgress(plan, console, refresh_per_second=10)
        ex.subscribe(live)
        live.start()
    start = time.perf_counter()
    try:
        asyncio.run(ex.execute(plan))
    finally:
        if live is not None:
            live.stop()
    return time.perf_counter() - start


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    plan = make_plan(n)
    results = {}
    for _ in range(5):  # interleaved rounds, best of each: less noise from a busy machine
        for watcher in ("none", "lines", "live"):
            results[watcher] = min(results.get(watcher, 1e9), timed(plan, watcher))
    base = results["none"]
    for watcher, seconds in results.items():
        print(f"{watcher:>6}: {seconds:.3f}s for {n} tasks  ({seconds / base:.2f}x baseline)")


if __name__ == "__main__":
    main()
