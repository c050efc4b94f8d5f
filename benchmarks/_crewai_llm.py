"""CrewAI side of compare.py's LLM row; runs in its own venv (crewai pulls ~1 GB and its own
pins), started by compare.py as a subprocess against the same loopback fake server.

CrewAI as its docs show it: one `Agent` with an OpenAI-compatible `LLM(base_url=...)`, one
`Task`, a `Crew`, run once per input concurrently. The docs recommend the native-async
`akickoff()` for high concurrency (`kickoff_async()` is a thread per run); `akickoff_for_each`
copies the crew per input and gathers - done here by hand with `return_exceptions=True`, so one
failed run is counted instead of hiding the others. Telemetry, tracing and the version check
are switched off by environment (no network but loopback).
Prints one JSON line: {"ok": N, "failed": N, "seconds": S, "version": "..."}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time

os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
os.environ.setdefault("CREWAI_DISABLE_TRACKING", "true")
os.environ.setdefault("CREWAI_TRACING_ENABLED", "false")
os.environ.setdefault("CREWAI_DISABLE_VERSION_CHECK", "true")
os.environ.setdefault("OTEL_SDK_DISABLED", "true")
# CrewAI keeps memory/state files; keep them out of the user's home for a benchmark.
os.environ.setdefault("CREWAI_STORAGE_DIR", tempfile.mkdtemp(prefix="compare-crewai-"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument("--max-rpm", type=int, default=None)
    args = parser.parse_args()

    import crewai
    from crewai import LLM, Agent, Crew, Task

    llm = LLM(model="openai/fake", base_url=args.base_url, api_key="sk-bench-not-a-real-key")
    agent = Agent(role="worker", goal="answer the request", backstory="a benchmark agent",
                  llm=llm, max_iter=3, verbose=False)
    task = Task(description="request {i}", expected_output="a short answer", agent=agent)
    crew = Crew(agents=[agent], tasks=[task], verbose=False, max_rpm=args.max_rpm)

    async def go() -> tuple[int, int]:
        ok = failed = 0
        results = await asyncio.gather(
            *(crew.copy().akickoff(inputs={"i": i}) for i in range(args.n)),
            return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                failed += 1
            else:
                ok += 1
        return ok, failed

    t0 = time.perf_counter()
    ok, failed = asyncio.run(go())
    print(json.dumps({"ok": ok, "failed": failed, "seconds": time.perf_counter() - t0,
                      "version": crewai.__version__}))


if __name__ == "__main__":
    main()
