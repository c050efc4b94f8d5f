"""Rate limits under a burst: our shared limiter vs bare `asyncio.gather` over the official SDK.

Same loopback fake server, same run: the server enforces LIMIT requests per PERIOD seconds (a
scaled-down "minute") and answers 429 + Retry-After + x-ratelimit-* beyond it. Each contender
sends N chat requests at once:

* baseline  - `asyncio.gather` of N `AsyncOpenAI.chat.completions.create` calls, the SDK's
              default retries (2, honouring Retry-After);
* ours      - N tasks through the real Executor, each calling `OpenAIProvider` (SDK retries
              off) with the process-wide limiter seeded with the right RPM; engine retries;
* ours, rpm unknown - the same, but the limiter is given no RPM: it must learn it from the
              headers and the 429s (AIMD + breaker), as with a misconfigured plan.

Prints successes, failures, 429s seen by the server, wall time, and goodput as a share of the
limit (successes per second / (LIMIT / PERIOD)); the initial burst the server allows makes a
share slightly above 1.0 possible on short runs.

    .venv/bin/python benchmarks/ratelimit.py [--n 120] [--limit 20] [--period 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.fakes

import openai

from parallel_agents import Executor
from parallel_agents.plan import Plan, Pool, Task
from parallel_agents.providers.base import ChatRequest, Message
from parallel_agents.providers.limits import RateLimiter
from parallel_agents.providers.openai_compat import OpenAIProvider
from tests.fakes.openai_server import FakeLLMServer

KEY = "sk-bench-not-a-real-key"


async def baseline(server: FakeLLMServer, n: int) -> tuple[int, int]:
    client = openai.AsyncOpenAI(api_key=KEY, base_url=server.openai_base_url)  # default retries

    async def one(i: int) -> bool:
        try:
            await client.chat.completions.create(
                model="fake", messages=[{"role": "user", "content": f"request {i}"}])
            return True
        except openai.OpenAIError:
            return False

    try:
        results = await asyncio.gather(*(one(i) for i in range(n)))
    finally:
        await client.close()
    return sum(results), n - sum(results)


async def ours(server: FakeLLMServer, n: int, limiter: RateLimiter) -> tuple[int, int]:
    provider = OpenAIProvider(api_key=KEY, base_url=server.openai_base_url, limiter=limiter)

    def task(i: int) -> Task:
        async def run() -> str:
            request = ChatRequest("fake", [Message("user", f"request {i}")])
            return (await provider.complete(request)).text
        return Task(id=f"r{i}", run=run, max_retries=10, retry_backoff_sec=0.1)

    try:
        plan = Plan(pools={"default": Pool(max_concurrent=None)},  # a true burst: all at once
                    tasks=tuple(task(i) for i in range(n)))
        result = await Executor(seed=1).execute(plan)
    finally:
        await provider.aclose()
    ok = sum(1 for t in result.tasks.values() if t.status == "succeeded")
    return ok, n - ok


def measure(name: str, server: FakeLLMServer, coro_factory, limit: int, period: float,
            n: int) -> dict[str, float]:
    server.reset()
    server.limit_requests(limit, period)
    server.latency = 0.05
    started = time.perf_counter()
    ok, failed = asyncio.run(coro_factory())
    elapsed = time.perf_counter() - started
    row = {"ok": ok, "failed": failed, "429s": server.count(status=429),
           "requests": server.count(), "seconds": elapsed,
           "share": (ok / elapsed) / (limit / period),
           "peak": server.max_in_window(period, status=200)}
    print(f"{name:<22} {ok:>4} {failed:>6} {ok / n:>5.0%} {row['429s']:>6} "
          f"{row['requests']:>8} {elapsed:>8.2f} {row['share']:>8.2f} {row['peak']:>5}")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=120)
    parser.add_argument("--limit", type=int, default=20, help="requests per period")
    parser.add_argument("--period", type=float, default=1.0, help="seconds (a scaled minute)")
    args = parser.parse_args()
    n, limit, period = args.n, args.limit, args.period
    print(f"{n} requests at once; server limit {limit} per {period:g}s, 50 ms latency")
    print(f"{'contender':<22} {'ok':>4} {'failed':>6} {'done':>5} {'429s':>6} {'requests':>8} "
          f"{'seconds':>8} {'goodput':>8} {'peak':>5}")
    with FakeLLMServer() as server:
        base = measure("gather + SDK retries", server, lambda: baseline(server, n),
                       limit, period, n)
        mine = measure("ours (rpm configured)", server,
                       lambda: ours(server, n, RateLimiter(rpm=limit, period=period)),
                       limit, period, n)
        learn = measure("ours (rpm unknown)", server,
                        lambda: ours(server, n, RateLimiter(period=period, breaker_base=0.25)),
                        limit, period, n)
    print("goodput = successful requests per second of the run, as a share of the limit "
          "(a run that gives up early on failed requests looks fast: read it with 'done'); "
          "peak = most accepted requests in any window")
    print(f"ratio goodput ours/baseline: {mine['share'] / max(base['share'], 1e-9):.2f}x "
          f"(rpm configured), {learn['share'] / max(base['share'], 1e-9):.2f}x (rpm learned); "
          f"429s: {base['429s']} vs {mine['429s']} vs {learn['429s']}; failed requests: "
          f"{base['failed']} vs {mine['failed']} vs {learn['failed']}")


if __name__ == "__main__":
    main()
