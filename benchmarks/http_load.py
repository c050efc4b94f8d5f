"""HTTP load: many concurrent executions submitted over HTTP, every event accounted for.

    python benchmarks/http_load.py [--executions 100] [--tasks 20] [--task-seconds 0.2]

The server runs as `parallel-agents serve` in its own process (as in production), so the
client's work does not share its interpreter. For each execution the client POSTs the plan,
follows its SSE stream to the end and then GETs its final state. Meanwhile a poller measures
API latency under load. Checks and figures:

* every execution finishes and succeeds;
* no event is lost: each stream's seqs are exactly 1..N, N equals the server's stored count,
  and N equals what the plan must produce (run_started + 3 per task + run_finished);
* API latency p50/p95/p99 under load, against the same requests on the idle server measured
  first in the same run (the baseline), and the wall time against the same plans run by an
  in-process `Executor` with no HTTP at all.

The seeds ask for 10+ concurrent executions and 100+ queued tasks; the defaults are ten times
that (100 executions, 2000 tasks).
"""

from __future__ import annotations

import argparse
import tempfile
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import httpx

from parallel_agents import Executor, Plan

TOKEN = "bench-token-0123456789"


def plan_for(n_tasks: int, seconds: float, index: int) -> dict[str, Any]:
    """Four independent chains woven into layers: task i depends on task i-4."""
    tasks = []
    for i in range(n_tasks):
        task: dict[str, Any] = {"id": f"t{i:02d}", "command": ["sleep", f"{seconds:g}"]}
        if i >= 4:
            task["depends_on"] = [f"t{i - 4:02d}"]
        tasks.append(task)
    return {"name": f"load-{index}", "tasks": tasks}


def expected_events(n_tasks: int) -> int:
    return 2 + 3 * n_tasks  # run_started, queued/started/succeeded per task, run_finished


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def start_server(port: int, store: str | None) -> subprocess.Popen[str]:
    env = {**os.environ, "PARALLEL_AGENTS_TOKEN": TOKEN}
    where = ["--store", store] if store else ["--no-store"]
    return subprocess.Popen(
        [sys.executable, "-m", "parallel_agents", "serve", "--port", str(port),
         "--log-level", "warning", *where],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


async def wait_up(base: str, proc: subprocess.Popen[str]) -> None:
    async with httpx.AsyncClient(base_url=base) as c:
        for _ in range(300):
            if proc.poll() is not None:
                raise SystemExit(f"server exited: {proc.stderr.read() if proc.stderr else ''}")
            try:
                if (await c.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit("server did not start")


async def timed(latencies: list[float], coro: Any) -> httpx.Response:
    t = time.perf_counter()
    r = await coro
    latencies.append(time.perf_counter() - t)
    return r


async def one_execution(client: httpx.AsyncClient, plan: dict[str, Any],
                        latencies: list[float]) -> dict[str, Any]:
    r = await timed(latencies, client.post("/api/execute-parallel", json={"plan": plan}))
    r.raise_for_status()
    eid = r.json()["execution_id"]
    seqs: list[int] = []
    kinds: dict[str, int] = {}
    last = 0
    while True:  # follow the stream; resume with Last-Event-ID should it drop
        try:
            async with client.stream("GET", f"/api/execution/{eid}/events",
                                     headers={"Last-Event-ID": str(last)}) as stream:
                async for line in stream.aiter_lines():
                    if line.startswith("data:"):
                        event = json.loads(line[5:])
                        seqs.append(event["seq"])
                        kinds[event["kind"]] = kinds.get(event["kind"], 0) + 1
                        last = event["seq"]
            break
        except httpx.TransportError:
            continue
    final = (await timed(latencies, client.get(f"/api/execution/{eid}"))).json()
    return {"id": eid, "status": final["status"], "stored": final["events"], "seqs": seqs,
            "kinds": kinds}


def poll_latency(base: str, ids: list[str], stop: threading.Event,
                 latencies: list[float]) -> None:
    """A user's view while the load runs: list + one execution, from its own thread and
    connection, so the load generator's busy event loop does not inflate the figures."""
    with httpx.Client(base_url=base, timeout=300,
                      headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        while not stop.is_set():
            t = time.perf_counter()
            client.get("/api/executions", params={"limit": 20}).raise_for_status()
            latencies.append(time.perf_counter() - t)
            if ids:
                t = time.perf_counter()
                client.get(f"/api/execution/{ids[-1]}").raise_for_status()
                latencies.append(time.perf_counter() - t)
            time.sleep(0.02)


def server_side_p99(metrics: str, route: str) -> str:
    """p99 upper bound from the server's own latency histogram (time to response headers)."""
    buckets: list[tuple[float, float]] = []
    for line in metrics.splitlines():
        if (line.startswith("parallel_agents_http_request_duration_seconds_bucket")
                and f'route="{route}"' in line and 'status="2' in line):
            le = line.split('le="')[1].split('"')[0]
            buckets.append((float("inf") if le == "+Inf" else float(le),
                            float(line.rsplit(" ", 1)[1])))
    if not buckets:
        return "n/a"
    buckets.sort()
    total = buckets[-1][1]
    for le, count in buckets:
        if count >= 0.99 * total:
            return f"<= {le * 1000:.0f} ms" if le != float("inf") else "> 10 s"
    return "n/a"


async def idle_baseline(client: httpx.AsyncClient, n: int = 200) -> tuple[list[float], str]:
    latencies: list[float] = []
    r = await client.post("/api/execute-parallel", json={"plan": plan_for(1, 0.01, -1)})
    eid = r.json()["execution_id"]
    for _ in range(n):
        await timed(latencies, client.get("/api/executions", params={"limit": 20}))
        await timed(latencies, client.get(f"/api/execution/{eid}"))
    return latencies, eid


async def in_process_baseline(plans: list[dict[str, Any]]) -> float:
    t = time.perf_counter()
    executor = Executor()
    results = await asyncio.gather(*(executor.execute(Plan.from_dict(p)) for p in plans))
    assert all(r.status == "succeeded" for r in results)
    return time.perf_counter() - t


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--executions", type=int, default=100)
    ap.add_argument("--tasks", type=int, default=20)
    ap.add_argument("--task-seconds", type=float, default=0.2)
    ap.add_argument("--no-store", action="store_true",
                    help="serve --no-store (in memory) instead of a durable store in a "
                         "temporary directory")
    args = ap.parse_args()
    scratch = tempfile.TemporaryDirectory(prefix="http_load-")
    store = None if args.no_store else os.path.join(scratch.name, "runs.db")
    print(f"store: {store or 'in memory (--no-store)'}")
    plans = [plan_for(args.tasks, args.task_seconds, i) for i in range(args.executions)]

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    proc = start_server(port, store)
    try:
        await wait_up(base, proc)
        limits = httpx.Limits(max_connections=args.executions * 2 + 20,
                              max_keepalive_connections=args.executions * 2 + 20)
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=300,
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            idle, idle_id = await idle_baseline(client)
            api: list[float] = []
            polled: list[float] = []
            stop = threading.Event()
            ids: list[str] = [idle_id]
            poller = threading.Thread(target=poll_latency, args=(base, ids, stop, polled))
            poller.start()
            t0 = time.perf_counter()
            runs = await asyncio.gather(*(one_execution(client, p, api) for p in plans))
            wall = time.perf_counter() - t0
            ids.extend(r["id"] for r in runs)
            stop.set()
            poller.join()
            metrics = (await client.get("/metrics")).text
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    direct = await in_process_baseline(plans)

    want = expected_events(args.tasks)
    finished = sum(r["status"] == "succeeded" for r in runs)
    lost = [r["id"] for r in runs
            if r["seqs"] != list(range(1, want + 1)) or r["stored"] != want
            or r["kinds"].get("task_succeeded") != args.tasks]
    total_events = sum(len(r["seqs"]) for r in runs)
    print(f"executions: {args.executions} x {args.tasks} command tasks "
          f"({args.executions * args.tasks} tasks), each task `sleep {args.task_seconds:g}`")
    print(f"finished and succeeded: {finished}/{args.executions}")
    print(f"events received over SSE: {total_events} (expected {want * args.executions}); "
          f"executions with a lost, duplicated or extra event: {len(lost)}")
    print(f"wall time over HTTP: {wall:.2f} s; same plans in-process, no HTTP: {direct:.2f} s "
          f"(ratio {wall / direct:.2f})")
    print(f"API latency idle (baseline, {len(idle)} GETs): p50 {pct(idle, 50) * 1000:.1f} ms, "
          f"p99 {pct(idle, 99) * 1000:.1f} ms")
    print(f"API latency under load, GETs from a separate client ({len(polled)} requests): "
          f"p50 {pct(polled, 50) * 1000:.1f} ms, p95 {pct(polled, 95) * 1000:.1f} ms, "
          f"p99 {pct(polled, 99) * 1000:.1f} ms (p99 ratio to idle "
          f"{pct(polled, 99) / pct(idle, 99):.1f}x)")
    posts = api[0::2]
    print(f"POST /api/execute-parallel, {args.executions} at once, client-side: "
          f"p50 {pct(posts, 50) * 1000:.1f} ms, p99 {pct(posts, 99) * 1000:.1f} ms; "
          f"server-side p99 {server_side_p99(metrics, '/api/execute-parallel')}")
    runs_line = [ln for ln in metrics.splitlines() if ln.startswith("parallel_agents_runs_total")]
    print("server /metrics: " + "; ".join(runs_line))
    ok = finished == args.executions and not lost
    print("RESULT: " + ("ok" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
