"""Tokens per second of the embedded local model (SmolLM2-135M-Instruct via llama.cpp).

Prints the load time, the first-call time (llama.cpp warms up its buffers on the first
decode), and steady-state generation speed for free text and for grammar-constrained JSON.

    .venv/bin/python benchmarks/local_model.py [--tokens 128] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from parallel_agents.providers.base import ChatRequest, Message
from parallel_agents.providers.local import LocalProvider


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    provider = LocalProvider(n_threads=args.threads, max_tokens_cap=args.tokens)
    print(f"cpus={os.cpu_count()} n_threads={provider.n_threads} load avg={os.getloadavg()[0]:.1f}")

    def timed(request: ChatRequest) -> tuple[float, int]:
        started = time.perf_counter()
        response = asyncio.run(provider.complete(request))
        return time.perf_counter() - started, response.usage.output_tokens

    text = ChatRequest("smollm2", [Message("user", "Tell me a long story about a dragon.")],
                       max_tokens=args.tokens, temperature=0.0)
    first, _ = timed(text)
    print(f"model load {provider.model.load_seconds:.2f}s, first call {first:.2f}s")
    schema = {"type": "object", "properties": {
        "title": {"type": "string", "maxLength": 40},
        "steps": {"type": "array", "maxItems": 3, "items": {"type": "string", "maxLength": 60}}},
        "required": ["title", "steps"]}
    as_json = ChatRequest("smollm2", [Message("user", "Plan a picnic as JSON.")],
                          max_tokens=max(args.tokens, 200), temperature=0.0,
                          json_schema=schema)
    timed(as_json)  # the first use of a grammar costs extra; measure steady state
    for name, request in (("free text", text), ("JSON grammar", as_json)):
        rates = []
        for _ in range(args.runs):
            seconds, tokens = timed(request)
            rates.append(tokens / seconds)
        rates.sort()
        print(f"{name:<13} {rates[len(rates) // 2]:6.1f} tokens/s (median of {args.runs}; "
              f"min {rates[0]:.1f}, max {rates[-1]:.1f})")


if __name__ == "__main__":
    main()
