"""Prometheus metrics of the gateway: runs, tasks, queue depth, pools, latencies, tokens, cost.

Counters and histograms are fed by the manager's event hooks as things happen; the gauges
(running executions, tasks by status, queue depth, pool utilization) are computed from the
live executions at scrape time, so they can never drift from the truth. Each app gets its own
registry, so several apps in one process (tests) do not collide.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ._manager import ExecutionManager
from ._store import ExecutionRecord

__all__ = ["GatewayMetrics"]

_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
_HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class _LiveCollector(Collector):
    def __init__(self, manager: ExecutionManager) -> None:
        self.manager = manager

    def collect(self) -> Iterator[GaugeMetricFamily]:
        by_status, pools = self.manager.live_counts()
        active = GaugeMetricFamily("parallel_agents_executions_running",
                                   "Executions running now.")
        active.add_metric([], len(self.manager.live))
        yield active
        tasks = GaugeMetricFamily("parallel_agents_tasks", "Tasks of running executions, "
                                  "by status.", labels=["status"])
        for status in ("pending", "queued", "running", "retrying", "succeeded", "failed",
                       "skipped", "cancelled"):
            tasks.add_metric([status], by_status.get(status, 0))
        yield tasks
        queue = GaugeMetricFamily("parallel_agents_queue_depth",
                                  "Tasks waiting for a slot or a dependency (pending, queued "
                                  "or waiting to retry) in running executions.")
        queue.add_metric([], sum(by_status.get(s, 0) for s in ("pending", "queued", "retrying")))
        yield queue
        running = GaugeMetricFamily("parallel_agents_pool_running", "Running tasks per pool.",
                                    labels=["pool"])
        slots = GaugeMetricFamily("parallel_agents_pool_slots",
                                  "Slots per pool, summed over running executions "
                                  "(absent when unlimited).", labels=["pool"])
        util = GaugeMetricFamily("parallel_agents_pool_utilization",
                                 "Running tasks / slots per pool (0-1).", labels=["pool"])
        for name, (busy, limit) in sorted(pools.items()):
            running.add_metric([name], busy)
            if limit:
                slots.add_metric([name], limit)
                util.add_metric([name], busy / limit)
        yield running
        yield slots
        yield util


class GatewayMetrics:
    def __init__(self, manager: ExecutionManager) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.runs = Counter("parallel_agents_runs", "Executions finished, by status.",
                            ["status"], registry=r)
        self.runs_started = Counter("parallel_agents_runs_started",
                                    "Executions started.", registry=r)
        self.task_outcomes = Counter("parallel_agents_task_outcomes",
                                     "Tasks that reached a final status, by status.",
                                     ["status"], registry=r)
        self.attempts = Counter("parallel_agents_task_attempts", "Task attempts started.",
                                ["pool"], registry=r)
        self.task_seconds = Histogram("parallel_agents_task_duration_seconds",
                                      "Duration of successful task attempts.", ["pool"],
                                      buckets=_DURATION_BUCKETS, registry=r)
        self.makespan = Histogram("parallel_agents_run_makespan_seconds",
                                  "Makespan of finished executions.",
                                  buckets=_DURATION_BUCKETS, registry=r)
        self.http_seconds = Histogram("parallel_agents_http_request_duration_seconds",
                                      "API latency by route (time to the response headers).",
                                      ["method", "route", "status"], buckets=_HTTP_BUCKETS,
                                      registry=r)
        self.tokens = Counter("parallel_agents_tokens", "Model tokens used, by kind.",
                              ["kind"], registry=r)
        self.cost = Counter("parallel_agents_cost_usd", "Spend in US dollars.", registry=r)
        r.register(_LiveCollector(manager))
        manager.on_event(self._on_event)
        manager.on_finish(self._on_finish)

    def _on_event(self, pool: str | None, event: dict[str, Any]) -> None:
        kind = event["kind"]
        if kind == "run_started":
            self.runs_started.inc()
        elif kind == "task_started":
            self.attempts.labels(pool or "default").inc()
        elif kind == "task_succeeded":
            duration = (event.get("data") or {}).get("duration")
            if isinstance(duration, (int, float)):
                self.task_seconds.labels(pool or "default").observe(duration)
        if kind in ("task_succeeded", "task_failed", "task_skipped", "task_cancelled"):
            self.task_outcomes.labels(kind.removeprefix("task_")).inc()

    def _on_finish(self, record: ExecutionRecord) -> None:
        self.runs.labels(record.status).inc()
        result = record.result or {}
        makespan = result.get("makespan_seconds")
        if isinstance(makespan, (int, float)):
            self.makespan.observe(makespan)
        cost = result.get("cost_usd")
        if isinstance(cost, (int, float)) and cost > 0:
            self.cost.inc(cost)
        for kind, n in (result.get("tokens") or {}).items():
            if isinstance(n, int) and n > 0:
                self.tokens.labels(str(kind)).inc(n)
