"""parallel-agents against the systems users would pick instead: same workloads, one run.

Every figure in the table is measured in this run, on this machine, and every ratio divides two
figures of this run. Workloads (deterministic: fixed seeds, scaled-down sleeps for agent latency):

1. overhead   - 1,000 no-op tasks fanned out, and a 1,000-step chain: wall time per task.
2. makespan   - the seeds' restaurant plan (frontend 45 s, backend 90 s, schema 45 s in parallel;
                security audit 60 s after backend) and seeded random DAGs of sleeping tasks, with
                every duration scaled (x0.01 by default): makespan / `metrics.lower_bound`.
3. fast branch - a -> a2 beside a slow b: when does a2 finish? (A ready task must not wait for
                an unrelated slow one.)
4. llm        - 60 chat calls at once against the loopback fake OpenAI-compatible server, which
                enforces an RPM limit (a scaled-down "minute"): goodput and failures.

Contenders, each used the way its documentation recommends (the how is in each runner below):

* asyncio          - bare `asyncio.gather` / hand-written tasks awaiting their dependencies:
                     the floor for overhead, no scheduler at all.
* parallel-agents  - `Executor().execute(plan)`, default `dependency` strategy; also our own
                     `waves` strategy for the DAG rows.
* seeds waves      - a literal reimplementation of the seeds' `DependencyAwareOrchestrator` wave
                     loop (shared/seeds/parallel-agent-architecture-spec.md).
* LangGraph        - a `StateGraph`: the Send API for fan-out, edges (incl. multi-source
                     "wait for all" edges) for DAGs, `RetryPolicy` and langchain-core's
                     `InMemoryRateLimiter` for the LLM row.
* Ray, Dask        - overhead rows only: Ray remote tasks (`ray.get` of a list; a chain passes
                     each ObjectRef on), Dask futures (`client.map` / `client.submit`) on an
                     in-process `LocalCluster(processes=False)` (threads, no worker processes).
* CrewAI           - LLM row only, in its own venv (crewai pulls ~1 GB and pins of its own):
                     `python3 -m venv .venv-crewai && .venv-crewai/bin/pip install crewai`;
                     benchmarks/_crewai_llm.py runs there against the same fake server.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python benchmarks/compare.py --quick                 # < 1 minute
    .venv/bin/python benchmarks/compare.py --markdown table.md     # the full run, a few minutes
    .venv/bin/python benchmarks/compare.py --contenders asyncio,parallel-agents --quick

Ray and Dask start-up (a local cluster) and graph compilation are done before timing and are
not counted; plan building is not counted for parallel-agents either (see overhead.py).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.metadata
import json
import operator
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypedDict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.fakes (the loopback LLM server)

import parallel_agents as pa
from parallel_agents.metrics import lower_bound

CONTENDERS = ("asyncio", "parallel-agents", "pa-waves", "seeds-waves", "langgraph", "ray", "dask",
              "crewai")
CREWAI_PYTHON = ROOT / ".venv-crewai" / "bin" / "python"
OURS = "parallel-agents"
# (label, lower is better?) per metric, for the verdict column.
LOWER_IS_BETTER = {"µs/task": True, "makespan/bound": True, "a2 done at (s)": True,
                   "goodput": False}


@dataclass
class Row:
    workload: str
    contender: str
    metric: str
    value: float | None
    note: str = ""
    ratio: float | None = None      # value / parallel-agents' value in the same workload
    verdict: str = ""
    failed: int = 0                 # LLM rows: calls that ended in an error
    total: int = 0


@dataclass
class Spec:
    """A DAG of sleeping tasks: (id, dependencies, seconds) in topological order."""
    name: str
    tasks: list[tuple[str, tuple[str, ...], float]]
    pools: dict[str, int | None] = field(default_factory=dict)   # pool -> slots
    pool_of: dict[str, str] = field(default_factory=dict)

    def plan(self, run_factory: Callable[[str, float], Callable[[], Awaitable[None]]]) -> pa.Plan:
        return pa.Plan(
            name=self.name,
            pools={p: pa.Pool(max_concurrent=n) for p, n in self.pools.items()}
            | {"default": pa.Pool(max_concurrent=None)},
            tasks=[pa.Task(id=tid, depends_on=deps, run=run_factory(tid, secs),
                           pool=self.pool_of.get(tid, "default"), estimated_seconds=secs)
                   for tid, deps, secs in self.tasks])

    def bound(self) -> float:
        plan = self.plan(lambda tid, s: _async_noop)
        return lower_bound(plan, {tid: s for tid, _, s in self.tasks}, None)


class DoneState(TypedDict):
    """LangGraph state for DAGs: the ids of finished nodes, merged by a reducer."""
    done: Annotated[list[str], operator.add]


class MapState(TypedDict):
    """LangGraph state for fan-out with Send: the items, and a reducer collecting results."""
    items: list[int]
    done: Annotated[list[int], operator.add]


async def _async_noop() -> None:
    return None


def _noop(*_: Any) -> None:
    return None


# --------------------------------------------------------------------------- workloads

def restaurant(scale: float) -> Spec:
    """The seeds' plan, with the seeds' pool limits (codegen 2, database 1, security 1)."""
    return Spec(
        "restaurant",
        [("frontend", (), 45 * scale), ("backend", (), 90 * scale), ("schema", (), 45 * scale),
         ("security_audit", ("backend",), 60 * scale)],
        pools={"codegen": 2, "database": 1, "security": 1},
        pool_of={"frontend": "codegen", "backend": "codegen", "schema": "database",
                 "security_audit": "security"})


def random_dag(rng: random.Random, scale: float, index: int) -> Spec:
    """12-30 tasks, up to 3 dependencies on recent tasks, lognormal durations (like makespan.py).

    No pool limits: every contender can run everything that is ready, so the bound is the
    critical path and the gap above it is the contender's own (waiting or overhead).
    """
    n = rng.randint(12, 30)
    tasks = []
    for i in range(n):
        deps: set[str] = set()
        if i:
            for _ in range(rng.choice([0, 1, 1, 2, 3])):
                deps.add(f"t{rng.randrange(max(0, i - 6), i)}")
        secs = min(30.0, round(rng.lognormvariate(1.5, 0.8), 1) + 0.1) * scale
        tasks.append((f"t{i}", tuple(sorted(deps)), secs))
    return Spec(f"random-{index}", tasks)


def fast_branch(scale: float) -> Spec:
    """a (10 s) -> a2 (10 s), beside an unrelated b (50 s); a2 can be done at 20 s."""
    return Spec("fast-branch", [("a", (), 10 * scale), ("a2", ("a",), 10 * scale),
                                ("b", (), 50 * scale)])


# --------------------------------------------------------------------------- DAG runners
# Each takes a Spec and returns (wall seconds, {task id: finish time from the run's start}).

DagResult = tuple[float, dict[str, float]]


async def dag_asyncio(spec: Spec) -> DagResult:
    """Hand-written: one asyncio task per node, awaiting its dependencies' tasks. No pools."""
    t0 = time.perf_counter()
    finish: dict[str, float] = {}
    tasks: dict[str, asyncio.Task[None]] = {}

    async def one(tid: str, deps: tuple[str, ...], secs: float) -> None:
        if deps:
            await asyncio.gather(*(tasks[d] for d in deps))
        await asyncio.sleep(secs)
        finish[tid] = time.perf_counter() - t0

    for tid, deps, secs in spec.tasks:
        tasks[tid] = asyncio.create_task(one(tid, deps, secs))
    await asyncio.gather(*tasks.values())
    return time.perf_counter() - t0, finish


async def dag_parallel_agents(spec: Spec, strategy: str = "dependency") -> DagResult:
    """`Executor(strategy=...).execute(plan)`: tasks are plain async functions (`run=`)."""
    finish: dict[str, float] = {}
    t0 = 0.0

    def run_factory(tid: str, secs: float) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            await asyncio.sleep(secs)
            finish[tid] = time.perf_counter() - t0
        return run

    plan = spec.plan(run_factory)
    t0 = time.perf_counter()
    result = await pa.Executor(strategy=strategy).execute(plan)  # type: ignore[arg-type]
    wall = time.perf_counter() - t0
    assert result.status == "succeeded", result.status
    return wall, finish


class SeedsDependencyGraph:
    """The graph the seeds' wave loop asks for: `has_tasks`, `get_ready_tasks`, `mark_completed`.

    The seeds leave it unwritten; this is the plain reading (a scan of the pending tasks).
    """

    def __init__(self, tasks: list[dict[str, Any]]) -> None:
        self.pending = {t["id"]: t for t in tasks}
        self.completed: set[str] = set()

    def has_tasks(self) -> bool:
        return bool(self.pending)

    def get_ready_tasks(self) -> list[dict[str, Any]]:
        return [t for t in self.pending.values()
                if all(d in self.completed for d in t["depends_on"])]

    def mark_completed(self, task_id: str) -> None:
        self.completed.add(task_id)
        del self.pending[task_id]


class SeedsDependencyAwareOrchestrator:
    """The seeds' `DependencyAwareOrchestrator.execute_with_dependencies`, line for line.

    `execute_parallel` is awaited in the seeds' loop, so it is the asyncio version: every task
    of the wave at once (`asyncio.gather`), no `max_agents` cap (the seeds' thread-pool version
    caps at 4; no cap is the kinder reading for makespan).
    """

    def build_dependency_graph(self, tasks: list[dict[str, Any]]) -> SeedsDependencyGraph:
        return SeedsDependencyGraph(tasks)

    async def execute_parallel(self, tasks: list[dict[str, Any]]) -> dict[str, Any]:
        outs = await asyncio.gather(*(t["run"]() for t in tasks), return_exceptions=True)
        return {t["id"]: {"result": o, "success": not isinstance(o, BaseException)}
                for t, o in zip(tasks, outs, strict=True)}

    def merge_wave_results(self, wave_results: list[dict[str, Any]]) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for w in wave_results:
            merged.update(w)
        return merged

    async def execute_with_dependencies(self, tasks: list[dict[str, Any]]) -> dict[str, Any]:
        graph = self.build_dependency_graph(tasks)
        wave_results = []
        while graph.has_tasks():
            ready_tasks = graph.get_ready_tasks()
            if not ready_tasks:
                raise Exception("Circular dependency detected")  # noqa: TRY002 - as in the seeds
            wave_result = await self.execute_parallel(ready_tasks)
            wave_results.append(wave_result)
            for task in ready_tasks:
                graph.mark_completed(task["id"])
        return self.merge_wave_results(wave_results)


async def dag_seeds_waves(spec: Spec) -> DagResult:
    finish: dict[str, float] = {}
    t0 = time.perf_counter()

    def job(tid: str, secs: float) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            await asyncio.sleep(secs)
            finish[tid] = time.perf_counter() - t0
        return run

    tasks = [{"id": tid, "depends_on": list(deps), "run": job(tid, secs)}
             for tid, deps, secs in spec.tasks]
    out = await SeedsDependencyAwareOrchestrator().execute_with_dependencies(tasks)
    assert all(r["success"] for r in out.values())
    return time.perf_counter() - t0, finish


def langgraph_dag(spec: Spec, finish: dict[str, float], clock: list[float]) -> Any:
    """A StateGraph with one node per task and the plan's edges, as the LangGraph docs build
    parallel branches: `add_edge(START, n)` for roots, `add_edge(dep, n)` for one dependency,
    `add_edge([d1, d2], n)` (wait for all) for several; a reducer merges parallel writes.
    """
    from langgraph.graph import END, START, StateGraph

    def node(tid: str, secs: float) -> Callable[[DoneState], Awaitable[dict[str, list[str]]]]:
        async def run(state: DoneState) -> dict[str, list[str]]:
            await asyncio.sleep(secs)
            finish[tid] = time.perf_counter() - clock[0]
            return {"done": [tid]}
        return run

    g = StateGraph(DoneState)
    has_child: set[str] = set()
    for tid, deps, secs in spec.tasks:
        g.add_node(tid, node(tid, secs))
        if not deps:
            g.add_edge(START, tid)
        elif len(deps) == 1:
            g.add_edge(deps[0], tid)
        else:
            g.add_edge(list(deps), tid)
        has_child.update(deps)
    for tid, _, _ in spec.tasks:
        if tid not in has_child:
            g.add_edge(tid, END)
    return g.compile()


async def dag_langgraph(spec: Spec) -> DagResult:
    finish: dict[str, float] = {}
    clock = [0.0]
    graph = langgraph_dag(spec, finish, clock)  # compiled before timing
    clock[0] = time.perf_counter()
    out = await graph.ainvoke({"done": []}, {"recursion_limit": len(spec.tasks) + 10})
    wall = time.perf_counter() - clock[0]
    assert sorted(out["done"]) == sorted(t for t, _, _ in spec.tasks), "LangGraph lost a task"
    return wall, finish


DAG_RUNNERS: dict[str, Callable[[Spec], Awaitable[DagResult]]] = {
    "asyncio": dag_asyncio,
    "parallel-agents": dag_parallel_agents,
    "pa-waves": lambda spec: dag_parallel_agents(spec, "waves"),
    "seeds-waves": dag_seeds_waves,
    "langgraph": dag_langgraph,
}
LABEL = {
    "asyncio": "asyncio (floor)",
    "parallel-agents": "parallel-agents",
    "pa-waves": "parallel-agents waves",
    "seeds-waves": "seeds' wave loop",
    "langgraph": "LangGraph",
    "ray": "Ray tasks",
    "dask": "Dask futures",
    "crewai": "CrewAI",
}


# --------------------------------------------------------------------------- overhead runners
# Each returns a callable that runs the shape once (n tasks) and is timed by `best_of`.

def overhead_asyncio(shape: str, n: int) -> Callable[[], None]:
    if shape == "fan-out":
        async def go() -> None:
            await asyncio.gather(*(_async_noop() for _ in range(n)))
    else:
        async def go() -> None:  # one task per step, each awaited before the next starts
            for _ in range(n):
                await asyncio.create_task(_async_noop())
    return lambda: asyncio.run(go())


def _chain_plan(shape: str, n: int, strategy: str | None = None) -> pa.Plan:
    tasks = [pa.Task(id=f"t{i}", run=_async_noop,
                     depends_on=(f"t{i - 1}",) if shape == "chain" and i else ())
             for i in range(n)]
    return pa.Plan(tasks=tasks, strategy=strategy,  # type: ignore[arg-type]
                   pools={"default": pa.Pool(max_concurrent=None)})


def overhead_parallel_agents(shape: str, n: int, strategy: str = "dependency"
                             ) -> Callable[[], None]:
    plan = _chain_plan(shape, n, strategy)  # built once, not timed (as in overhead.py)

    async def go() -> None:
        result = await pa.Executor().execute(plan)
        assert result.status == "succeeded", result.status
    return lambda: asyncio.run(go())


def overhead_seeds_waves(shape: str, n: int) -> Callable[[], None]:
    def tasks() -> list[dict[str, Any]]:
        return [{"id": f"t{i}", "depends_on": [f"t{i - 1}"] if shape == "chain" and i else [],
                 "run": _async_noop} for i in range(n)]

    async def go() -> None:
        await SeedsDependencyAwareOrchestrator().execute_with_dependencies(tasks())
    return lambda: asyncio.run(go())


def overhead_langgraph(shape: str, n: int) -> Callable[[], None]:
    """Fan-out: the documented map-reduce pattern, a conditional edge returning one `Send` per
    item and a reducer collecting results. Chain: n nodes joined by `add_edge`, with
    `recursion_limit` raised above n (each node is one superstep)."""
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import Send

    async def work(state: dict[str, Any]) -> dict[str, list[int]]:
        return {"done": [1]}

    g = StateGraph(MapState)
    if shape == "fan-out":
        g.add_node("work", work)
        g.add_conditional_edges(START, lambda s: [Send("work", {"i": i}) for i in s["items"]],
                                ["work"])
        g.add_edge("work", END)
    else:
        for i in range(n):
            g.add_node(f"n{i}", work)
            g.add_edge(START if i == 0 else f"n{i - 1}", f"n{i}")
        g.add_edge(f"n{n - 1}", END)
    graph = g.compile()
    config = {"recursion_limit": n + 10}

    async def go() -> None:
        out = await graph.ainvoke({"items": list(range(n)), "done": []}, config)
        assert len(out["done"]) == n
    return lambda: asyncio.run(go())


_ray_ready = False


def overhead_ray(shape: str, n: int) -> Callable[[], None]:
    """Ray's documented patterns: `f.remote()` per task and one `ray.get` on the list; a chain
    passes each ObjectRef to the next call, so Ray resolves the dependency. A fresh local
    cluster (`address="local"`: never attach to one another process started), 2 CPUs."""
    global _ray_ready
    import ray

    if not _ray_ready:
        ray.init(address="local", num_cpus=os.cpu_count() or 2, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
        _ray_ready = True

    @ray.remote
    def noop(*_: Any) -> None:
        return None

    ray.get([noop.remote() for _ in range(50)])  # warm the worker processes, not timed

    def go() -> None:
        if shape == "fan-out":
            ray.get([noop.remote() for _ in range(n)])
        else:
            ref = noop.remote()
            for _ in range(n - 1):
                ref = noop.remote(ref)
            ray.get(ref)
    return go


_dask_client: Any = None


def overhead_dask(shape: str, n: int) -> Callable[[], None]:
    """Dask futures as documented: `client.map` for many independent calls, `client.submit`
    with a future as argument for a dependency, `client.gather` to wait. The cluster is
    `LocalCluster(processes=False)`: one in-process worker with a thread per core, so no
    pickling between processes (the cheapest Dask set-up for tiny tasks). `pure=False` so
    identical calls are not deduplicated."""
    global _dask_client
    from dask.distributed import Client, LocalCluster

    if _dask_client is None:
        cluster = LocalCluster(processes=False, n_workers=1,
                               threads_per_worker=os.cpu_count() or 2, dashboard_address=None)
        _dask_client = Client(cluster)
    client = _dask_client
    client.gather(client.map(_noop, range(50), pure=False))  # warm the worker, not timed

    def go() -> None:
        if shape == "fan-out":
            client.gather(client.map(_noop, range(n), pure=False))
        else:
            fut = client.submit(_noop, pure=False)
            for _ in range(n - 1):
                fut = client.submit(_noop, fut, pure=False)
            fut.result()
    return go


OVERHEAD_RUNNERS: dict[str, Callable[[str, int], Callable[[], None]]] = {
    "asyncio": overhead_asyncio,
    "parallel-agents": overhead_parallel_agents,
    "pa-waves": lambda shape, n: overhead_parallel_agents(shape, n, "waves"),
    "seeds-waves": overhead_seeds_waves,
    "langgraph": overhead_langgraph,
    "ray": overhead_ray,
    "dask": overhead_dask,
}


def best_of(fn: Callable[[], None], repeat: int) -> tuple[float, float]:
    """Best wall time and best CPU time of this process over `repeat` timed runs, after one
    untimed warm-up run (so the first contender does not pay for cold caches and imports).

    CPU time is shown beside wall time because other work on a shared machine stretches wall
    time, hardly CPU time; it misses what Ray's worker processes spend.
    """
    fn()
    walls, cpus = [], []
    for _ in range(repeat):
        gc.collect()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - wall0)
        cpus.append(time.process_time() - cpu0)
    return min(walls), min(cpus)


# --------------------------------------------------------------------------- LLM workload

LLM_KEY = "sk-bench-not-a-real-key"


async def llm_gather(base_url: str, n: int, limit: int, period: float) -> tuple[int, int]:
    """The official SDK as its docs show it: `AsyncOpenAI` with its default retries (2, which
    honour Retry-After), all calls at once with `asyncio.gather`."""
    import openai

    client = openai.AsyncOpenAI(api_key=LLM_KEY, base_url=base_url)

    async def one(i: int) -> bool:
        try:
            await client.chat.completions.create(
                model="fake", messages=[{"role": "user", "content": f"request {i}"}])
            return True
        except openai.OpenAIError:
            return False

    try:
        ok = sum(await asyncio.gather(*(one(i) for i in range(n))))
    finally:
        await client.close()
    return ok, n - ok


async def llm_parallel_agents(base_url: str, n: int, limit: int, period: float
                              ) -> tuple[int, int]:
    """Our provider layer: `OpenAIProvider` with the shared `RateLimiter` told the RPM (as a
    plan's provider config does), engine retries with backoff; all 60 tasks ready at once."""
    from parallel_agents.providers.limits import RateLimiter
    from parallel_agents.providers.openai_compat import OpenAIProvider

    from parallel_agents.providers.base import ChatRequest, Message

    provider = OpenAIProvider(api_key=LLM_KEY, base_url=base_url,
                              limiter=RateLimiter(rpm=limit, period=period))

    def task(i: int) -> pa.Task:
        async def run() -> str:
            return (await provider.complete(
                ChatRequest("fake", [Message("user", f"request {i}")]))).text
        return pa.Task(id=f"r{i}", run=run, max_retries=10, retry_backoff_sec=0.1)

    try:
        plan = pa.Plan(pools={"default": pa.Pool(max_concurrent=None)},
                       tasks=tuple(task(i) for i in range(n)))
        result = await pa.Executor().execute(plan)
    finally:
        await provider.aclose()
    ok = sum(1 for t in result.tasks.values() if t.status == "succeeded")
    return ok, n - ok


async def llm_langgraph(base_url: str, n: int, limit: int, period: float) -> tuple[int, int]:
    """LangGraph's documented tools for this: fan out with `Send`; pace calls with
    langchain-core's `InMemoryRateLimiter` (the `rate_limiter=` chat models take, here awaited
    directly around the SDK call), set to the same requests per second; retry a node on
    `RateLimitError` with a `RetryPolicy`. The SDK keeps its default retries too."""
    import openai
    from langchain_core.rate_limiters import InMemoryRateLimiter
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import RetryPolicy, Send

    client = openai.AsyncOpenAI(api_key=LLM_KEY, base_url=base_url)
    limiter = InMemoryRateLimiter(requests_per_second=limit / period,
                                  check_every_n_seconds=0.01, max_bucket_size=1)
    succeeded = [0]

    async def call(state: dict[str, Any]) -> dict[str, list[int]]:
        await limiter.aacquire()
        await client.chat.completions.create(
            model="fake", messages=[{"role": "user", "content": f"request {state['i']}"}])
        succeeded[0] += 1
        return {"done": [state["i"]]}

    g = StateGraph(MapState)
    g.add_node("call", call, retry_policy=RetryPolicy(max_attempts=5,
                                                      retry_on=openai.RateLimitError))
    g.add_conditional_edges(START, lambda s: [Send("call", {"i": i}) for i in s["items"]],
                            ["call"])
    g.add_edge("call", END)
    graph = g.compile()
    try:
        out = await graph.ainvoke({"items": list(range(n)), "done": []})
        ok = len(out["done"])
    except openai.OpenAIError:
        ok = 0  # one node out of retries fails the superstep, and the run with it
    finally:
        await client.close()
    return ok, n - ok


def llm_crewai(base_url: str, n: int, limit: int, period: float) -> tuple[int, int, float]:
    """CrewAI in its own venv (see benchmarks/_crewai_llm.py for how it is used). Its own rate
    limit, `max_rpm`, counts per wall-clock minute (a fixed 60 s timer in RPMController), so it
    cannot be scaled to this row's window and is left unset: CrewAI meets the 429s with its
    OpenAI client's retries. Returns (ok, failed, seconds of the kickoff, import excluded)."""
    proc = subprocess.run(
        [str(CREWAI_PYTHON), str(ROOT / "benchmarks" / "_crewai_llm.py"), "--base-url", base_url,
         "--n", str(n)],
        check=False, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"CrewAI run failed (exit {proc.returncode}): {proc.stderr[-500:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return out["ok"], out["failed"], out["seconds"]


LLM_RUNNERS: dict[str, Callable[[str, int, int, float], Awaitable[tuple[int, int]]]] = {
    "asyncio": llm_gather,
    "parallel-agents": llm_parallel_agents,
    "langgraph": llm_langgraph,
}
LLM_SUBPROCESS_RUNNERS = {"crewai": llm_crewai}


# --------------------------------------------------------------------------- the run

def available(name: str) -> str | None:
    """None if the contender's library imports, else why not."""
    if name == "crewai":
        if not CREWAI_PYTHON.exists():
            return ("needs its own venv: python3 -m venv .venv-crewai && "
                    ".venv-crewai/bin/pip install crewai")
        return None
    module = {"langgraph": "langgraph", "ray": "ray", "dask": "distributed"}.get(name)
    if module is None:
        return None
    try:
        __import__(module)
    except ImportError:
        return f"not installed: pip install -e '.[bench]' ({module})"
    return None


def run_overhead(rows: list[Row], contenders: Sequence[str], n: int, repeat: int) -> None:
    for shape in ("fan-out", "chain"):
        workload = f"{n:,}-task {shape}"
        for name in (c for c in contenders if c in OVERHEAD_RUNNERS):
            why = available(name)
            if why:
                rows.append(Row(workload, name, "µs/task", None, why))
                continue
            fn = OVERHEAD_RUNNERS[name](shape, n)
            took, cpu = best_of(fn, repeat)
            cpu_note = (f"cpu {cpu / n * 1e6:,.1f} µs/task (driver only)" if name == "ray"
                        else f"cpu {cpu / n * 1e6:,.1f} µs/task")
            rows.append(Row(workload, name, "µs/task", took / n * 1e6,
                            f"best of {repeat}; {cpu_note}"))
            print(f"  {workload:<20} {LABEL[name]:<24} {took / n * 1e6:>9.1f} µs/task",
                  flush=True)


def run_makespan(rows: list[Row], contenders: Sequence[str], dags: int, scale: float,
                 seed: int) -> None:
    rng = random.Random(seed)
    specs = [random_dag(rng, scale, i) for i in range(dags)]
    rest = restaurant(scale)
    dag_contenders = [c for c in contenders if c in DAG_RUNNERS]
    for name in dag_contenders:
        why = available(name)
        if why:
            rows.append(Row("restaurant plan", name, "makespan/bound", None, why))
            rows.append(Row(f"{dags} random DAGs", name, "makespan/bound", None, why))
            continue
        wall_r, _ = asyncio.run(DAG_RUNNERS[name](rest))
        bound = rest.bound()
        rows.append(Row("restaurant plan", name, "makespan/bound", wall_r / bound,
                        f"{wall_r:.3f}s vs bound {bound:.3f}s"))
        ratios = []
        for spec in specs:
            wall, finish = asyncio.run(DAG_RUNNERS[name](spec))
            assert len(finish) == len(spec.tasks)
            ratios.append(wall / spec.bound())
        print(f"  makespan             {LABEL[name]:<24} restaurant {wall_r / bound:.2f}"
              + (f", random mean {statistics.fmean(ratios):.2f}" if ratios else ""), flush=True)
        if ratios:
            rows.append(Row(f"{dags} random DAGs", name, "makespan/bound",
                            statistics.fmean(ratios), f"mean; max {max(ratios):.2f}"))

    spec = fast_branch(scale)
    for name in dag_contenders:
        why = available(name)
        if why:
            rows.append(Row("fast branch", name, "a2 done at (s)", None, why))
            continue
        wall, finish = asyncio.run(DAG_RUNNERS[name](spec))
        ideal = 20 * scale
        rows.append(Row("fast branch", name, "a2 done at (s)", finish["a2"],
                        f"ideal {ideal:.2f}s (a+a2); b ends {finish['b']:.2f}s"))
        print(f"  fast branch          {LABEL[name]:<24} a2 done at {finish['a2']:.3f}s "
              f"(ideal {ideal:.2f}s, b {finish['b']:.3f}s)", flush=True)


def run_llm(rows: list[Row], contenders: Sequence[str], n: int, limits: Sequence[int],
            period: float) -> None:
    names = [c for c in contenders if c in LLM_RUNNERS or c in LLM_SUBPROCESS_RUNNERS]
    try:
        import parallel_agents.providers.openai_compat  # noqa: F401
        from tests.fakes.openai_server import FakeLLMServer, Reply
    except ImportError as exc:
        for limit in limits:
            for name in names:
                rows.append(Row(f"{n} LLM calls, {limit}/{period:g}s", name, "goodput", None,
                                f"needs the provider layer and tests/fakes ({exc.name})"))
        return
    with FakeLLMServer() as server:
        for limit in limits:
            workload = f"{n} LLM calls, {limit}/{period:g}s"
            for name in names:
                why = available(name)
                if why:
                    rows.append(Row(workload, name, "goodput", None, why))
                    continue
                server.reset()
                server.limit_requests(limit, period)
                server.latency = 0.05
                # Every contender gets the same answer; it is a final answer in the ReAct text
                # CrewAI's agents parse, and plain text to the others.
                server.default = Reply.text("Thought: I can answer.\nFinal Answer: ok")
                if name in LLM_SUBPROCESS_RUNNERS:
                    try:
                        ok, failed, took = LLM_SUBPROCESS_RUNNERS[name](
                            server.openai_base_url, n, limit, period)
                    except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
                        rows.append(Row(workload, name, "goodput", None, str(exc)[:300]))
                        continue
                else:
                    t0 = time.perf_counter()
                    ok, failed = asyncio.run(
                        LLM_RUNNERS[name](server.openai_base_url, n, limit, period))
                    took = time.perf_counter() - t0
                goodput = (ok / took) / (limit / period)
                rejected = server.count(status=429)
                rows.append(Row(workload, name, "goodput", goodput,
                                f"{ok} ok, {failed} failed, {rejected} 429s, {took:.2f}s",
                                failed=failed, total=n))
                print(f"  {workload:<20} {LABEL[name]:<24} goodput {goodput:.2f} of the limit, "
                      f"{ok} ok, {failed} failed, {rejected} 429s, {took:.2f}s", flush=True)


def judge(rows: list[Row]) -> None:
    """Fill `ratio` (value / ours, same workload) and a verdict from our side."""
    ours = {r.workload: r.value for r in rows if r.contender == OURS and r.value}
    ours_failed = {r.workload: r.failed for r in rows if r.contender == OURS}
    for r in rows:
        base = ours.get(r.workload)
        if r.value is None or not base or r.contender == OURS:
            continue
        r.ratio = r.value / base
        if r.failed != ours_failed.get(r.workload, 0):
            # Goodput counts successes per second, so giving up early can look fast: calls
            # lost outright decide the verdict first.
            lost_more = r.failed > ours_failed.get(r.workload, 0)
            r.verdict = (f"we {'win' if lost_more else 'lose'}: {r.failed}/{r.total} calls "
                         f"failed vs our {ours_failed.get(r.workload, 0)}")
            continue
        lower = LOWER_IS_BETTER[r.metric]
        we_win = r.ratio > 1 if lower else r.ratio < 1
        factor = max(r.ratio, 1 / r.ratio) if r.ratio else float("inf")
        if r.value == 0:
            r.verdict = "we win (it finished none)" if not lower else "we lose"
        elif abs(factor - 1) < 0.05:
            r.verdict = "tie (within 5%)"
        else:
            r.verdict = f"we {'win' if we_win else 'lose'} by {factor:.2f}x"


WHY_WE_LOSE = {
    ("asyncio", "µs/task"): "bare asyncio keeps no state; per task we make a scheduler decision "
        "(pools, priorities, dependency counts), keep an attempt record and a result, build a "
        "TaskContext with the task's inputs, run the attempt in its own asyncio task (timeouts, "
        "retries, cancellation) and compute the run's metrics at the end; in a chain each step "
        "also waits one event-loop turn for the scheduler to be pumped",
    ("seeds-waves", "µs/task"): "with no dependencies the seeds' loop is one wave, i.e. one "
        "asyncio.gather and a dict per task: no records, pools, retries, timeouts or events",
    ("asyncio", "makespan/bound"): "hand-written asyncio tasks awaiting their dependencies "
        "have no scheduler at all; the gap is our per-task overhead",
    ("asyncio", "a2 done at (s)"): "the gap is our per-task overhead",
    ("asyncio", "goodput"): "bare calls with SDK retries pay for it in 429s",
}


def losses(rows: list[Row]) -> list[str]:
    """One line per row we lose: by how much, and why."""
    ours = {r.workload: r.value for r in rows if r.contender == OURS and r.value}
    out = []
    for r in rows:
        if not r.verdict.startswith("we lose") or r.value is None:
            continue
        gap = ""
        if r.metric == "µs/task":
            gap = f" = {ours[r.workload] - r.value:,.1f} µs per task"
        why = WHY_WE_LOSE.get((r.contender, r.metric), "see BENCHMARKS.md")
        out.append(f"{r.workload}, {label(r)}: {r.verdict}{gap}: {why}")
    return out


def label(row: Row) -> str:
    """The asyncio contender is a different program per workload: say which."""
    if row.contender == "asyncio":
        if row.metric == "goodput":
            return "asyncio.gather + openai SDK"
        if row.metric != "µs/task":
            return "asyncio tasks by hand"
    return LABEL[row.contender]


def fmt(v: float | None, metric: str) -> str:
    if v is None:
        return "n/a"
    return f"{v:,.1f}" if metric == "µs/task" else f"{v:.2f}" if metric != "a2 done at (s)" \
        else f"{v:.3f}"


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("parallel-agents", "langgraph", "langchain-core", "ray", "dask", "distributed",
                 "openai"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    if CREWAI_PYTHON.exists():  # its own venv
        proc = subprocess.run([str(CREWAI_PYTHON), "-c", ("import importlib.metadata as m; "
                               "print(m.version('crewai'), m.version('openai'))")],
                              check=False, capture_output=True, text=True, timeout=60)
        if proc.returncode == 0:
            crewai, its_openai = proc.stdout.split()
            out["crewai"] = f"{crewai} (own venv, openai {its_openai})"
    return out


def environment() -> list[str]:
    v = versions()
    return [
        f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        (f"machine: {os.cpu_count()} CPUs, {platform.platform()}, load average "
        f"{os.getloadavg()[0]:.1f} at start"),
        "versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
    ]


def table(rows: list[Row], markdown: bool) -> str:
    head = ["workload", "contender", "metric", "value", "x ours", "verdict", "notes"]
    body = [[r.workload, label(r), r.metric, fmt(r.value, r.metric),
             "-" if r.contender == OURS else (f"{r.ratio:.2f}" if r.ratio else "n/a"),
             "(reference)" if r.contender == OURS else r.verdict, r.note] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(b) + " |" for b in body]
        return "\n".join(lines)
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths, strict=True)) for b in body]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    global CREWAI_PYTHON
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="small sizes: finishes in under a minute on 2 cores")
    parser.add_argument("--contenders", default=",".join(CONTENDERS),
                        help=f"comma-separated subset of: {', '.join(CONTENDERS)}")
    parser.add_argument("--workloads", default="overhead,makespan,llm",
                        help="comma-separated subset of: overhead, makespan, llm")
    parser.add_argument("--n", type=int, help="tasks for the overhead rows (default 1000)")
    parser.add_argument("--dags", type=int, help="random DAGs (default 10; --quick 3)")
    parser.add_argument("--scale", type=float, default=None,
                        help="seconds of sleep per second of the plans' agent latency "
                             "(default 0.01; --quick 0.005)")
    parser.add_argument("--llm-calls", type=int, default=60)
    parser.add_argument("--llm-limits", default=None,
                        help="the server's requests per period, comma-separated: one LLM row "
                             "per limit (default 20,10; --quick 20)")
    parser.add_argument("--llm-period", type=float, default=1.0,
                        help="the server's rate-limit window in seconds (a scaled minute)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--crewai-python", type=Path, default=CREWAI_PYTHON,
                        help="the python of the venv crewai is installed in")
    parser.add_argument("--markdown", type=Path, help="also write the table as markdown here")
    args = parser.parse_args(argv)
    CREWAI_PYTHON = args.crewai_python

    contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    unknown = sorted(set(contenders) - set(CONTENDERS))
    if unknown:
        parser.error(f"unknown contender(s) {', '.join(unknown)}: use {', '.join(CONTENDERS)}")
    if OURS not in contenders:
        parser.error(f"'{OURS}' must be among the contenders: every ratio is against it")
    workloads = {w.strip() for w in args.workloads.split(",") if w.strip()}
    if workloads - {"overhead", "makespan", "llm"}:
        parser.error("--workloads takes overhead, makespan and/or llm")
    try:
        llm_limits = [int(x) for x in (args.llm_limits or ("20" if args.quick else "20,10"))
                      .split(",")]
    except ValueError:
        parser.error(f"--llm-limits takes whole numbers, e.g. 20,10 (got {args.llm_limits!r})")
    n = args.n or (300 if args.quick else 1000)
    repeat = 2 if args.quick else 3
    dags = args.dags if args.dags is not None else (3 if args.quick else 10)
    if args.scale is None:
        args.scale = 0.005 if args.quick else 0.01
    if args.scale <= 0:
        parser.error(f"--scale must be above 0 (got {args.scale:g})")
    if n < 1 or dags < 0 or args.llm_calls < 1 or args.llm_period <= 0 or min(llm_limits) < 1:
        parser.error("--n, --llm-calls and --llm-limits take numbers of at least 1, --dags 0 or "
                     "more, --llm-period a number of seconds above 0")

    env = environment()
    print("\n".join(env), flush=True)
    started = time.perf_counter()
    rows: list[Row] = []
    if "overhead" in workloads:
        run_overhead(rows, contenders, n, repeat)
    if "makespan" in workloads:
        run_makespan(rows, contenders, dags, args.scale, args.seed)
    if "llm" in workloads:
        run_llm(rows, contenders, args.llm_calls, llm_limits, args.llm_period)
    judge(rows)
    order = {w: i for i, w in enumerate(dict.fromkeys(r.workload for r in rows))}
    rows.sort(key=lambda r: order[r.workload])  # stable: contenders keep their order
    took = time.perf_counter() - started
    lost = losses(rows)
    print(f"\n{table(rows, markdown=False)}\n\nmeasured in {took:.0f}s. x ours = value / "
          "parallel-agents' value in the same workload (µs/task, makespan/bound, a2 done at: "
          "lower is better; goodput: higher is better)")
    if lost:
        print("\nwhere we lose:\n" + "\n".join(f"- {line}" for line in lost))
    if args.markdown:
        args.markdown.write_text(
            "\n".join(f"- {line}" for line in env)
            + f"\n- sizes: {n} overhead tasks (best of {repeat}), {dags} random DAGs, scale "
              f"x{args.scale:g}, {args.llm_calls} LLM calls at "
              f"{'/'.join(map(str, llm_limits))} per {args.llm_period:g}s; "
              f"run took {took:.0f}s\n\n"
            + table(rows, markdown=True) + "\n"
            + ("\nWhere we lose:\n\n" + "\n".join(f"- {line}" for line in lost) + "\n"
               if lost else ""), encoding="utf-8")
        print(f"markdown table written to {args.markdown}")
    if _dask_client is not None:
        _dask_client.close()
    if _ray_ready:
        import ray

        ray.shutdown()  # the local cluster this run started
    return 0


if __name__ == "__main__":
    sys.exit(main())
