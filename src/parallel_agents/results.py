"""What a run returns: per-task results with every attempt, and the run's metrics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["AttemptRecord", "TaskResult", "RunResult", "TaskStatus", "RunStatus", "Prepaid"]

TaskStatus = Literal["pending", "queued", "running", "retrying", "succeeded", "failed",
                     "skipped", "cancelled"]
RunStatus = Literal["succeeded", "partial", "failed", "cancelled"]


@dataclass(slots=True)
class AttemptRecord:
    attempt: int
    started_at: float  # unix seconds
    finished_at: float | None = None
    outcome: str = "running"  # succeeded | failed | timeout | cancelled | interrupted
    error: str | None = None
    #: Seconds of it spent waiting for a shared resource (see `TaskOutput.waited_seconds`).
    waited: float = 0.0

    @property
    def duration(self) -> float:
        return 0.0 if self.finished_at is None else max(0.0, self.finished_at - self.started_at)

    @property
    def busy(self) -> float:
        """The attempt's duration without its waits: what it cost a worker."""
        return max(0.0, self.duration - self.waited)

    def to_dict(self) -> dict[str, Any]:
        out = {"attempt": self.attempt, "started_at": self.started_at,
               "finished_at": self.finished_at, "outcome": self.outcome, "error": self.error}
        if self.waited:
            out["waited_seconds"] = round(self.waited, 6)
        return out


@dataclass(slots=True)
class TaskResult:
    id: str
    pool: str
    status: TaskStatus = "pending"
    output: Any = None
    error: str | None = None
    history: list[AttemptRecord] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)
    cost_usd: float = 0.0
    #: files the task wrote (workspace-relative). An empty tuple by default: a list per task
    #: would be one more object per task for the garbage collector on 10^5-task runs.
    files: Sequence[str] = ()
    #: the output was reused from the result cache instead of running the task
    cached: bool = False

    @property
    def attempts(self) -> int:
        return len(self.history)

    @property
    def started_at(self) -> float | None:
        return self.history[0].started_at if self.history else None

    @property
    def finished_at(self) -> float | None:
        if not self.history:
            return None
        return self.history[-1].finished_at

    @property
    def busy_seconds(self) -> float:
        """Time its attempts worked (their waits for shared resources left out)."""
        return sum(a.busy for a in self.history)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": self.status,
            "pool": self.pool,
            "attempts": self.attempts,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "output": self.output,
            "error": self.error,
            "history": [a.to_dict() for a in self.history],
        }
        if self.usage:
            out["usage"] = self.usage
        if self.cost_usd:
            out["cost_usd"] = self.cost_usd
        if self.files:
            out["files"] = list(self.files)
        if self.cached:
            out["cached"] = True
        return out


@dataclass(frozen=True, slots=True)
class Prepaid:
    """LLM spending on a run's account before its tasks started: the coordinator's planning
    call. It counts like a task's calls: in the run's cost and tokens (and `cost_by_agent`
    under `label`), and against its budget, also after a resume."""

    cost_usd: float = 0.0
    usage: dict[str, int] = field(default_factory=dict)
    label: str = "planner"

    def to_dict(self) -> dict[str, Any]:
        return {"cost_usd": self.cost_usd, "usage": dict(self.usage), "label": self.label}

    @classmethod
    def from_dict(cls, data: Any) -> Prepaid | None:
        """The inverse of `to_dict`; None for anything else (a run stored without one)."""
        if not isinstance(data, dict):
            return None
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        return cls(cost_usd=float(data.get("cost_usd") or 0.0),
                   usage={str(k): int(v or 0) for k, v in usage.items()},
                   label=str(data.get("label") or "planner"))


@dataclass(slots=True, repr=False)
class RunResult:
    run_id: str
    status: RunStatus
    tasks: dict[str, TaskResult]
    strategy: str
    started_at: float
    finished_at: float
    makespan_seconds: float
    serial_seconds: float
    critical_path_seconds: float
    critical_path: list[str]
    lower_bound_seconds: float
    speedup: float
    efficiency: float
    max_parallel: int
    pool_utilization: dict[str, float]
    reason: str | None = None
    #: LLM spend: total USD and tokens, and USD per pool and per agent role
    cost_usd: float = 0.0
    usage: dict[str, int] = field(default_factory=dict)
    cost_by_pool: dict[str, float] = field(default_factory=dict)
    cost_by_agent: dict[str, float] = field(default_factory=dict)
    budget_usd: float | None = None
    #: the run's workspace directory (durable runs)
    workspace: str | None = None
    #: what --rollback-on-failure restored: {"checkpoint", "removed", "restored"}
    rollback: dict[str, Any] | None = None
    #: spending before the tasks (the coordinator's planning call), included in the totals
    prepaid: Prepaid | None = None

    def __repr__(self) -> str:
        # A summary: the generated repr printed every task and attempt, which for a big run is
        # megabytes (and asyncio formats it when a finished task holding it is shown).
        counts = ", ".join(f"{s}={n}" for s in ("succeeded", "failed", "skipped", "cancelled")
                           if (n := self.count(s)))
        return (f"RunResult(run_id={self.run_id!r}, status={self.status!r}, "
                f"tasks={len(self.tasks)} ({counts or 'none'}), "
                f"makespan_seconds={self.makespan_seconds:.3f}, speedup={self.speedup:.2f})")

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    def count(self, status: str) -> int:
        return sum(1 for t in self.tasks.values() if t.status == status)

    def to_dict(self, *, include_tasks: bool = True) -> dict[str, Any]:
        """The `--json` summary (the CLI contract); `include_tasks=False` leaves out `tasks`."""
        out: dict[str, Any] = {
            "run_id": self.run_id,
            "status": self.status,
            "strategy": self.strategy,
            "reason": self.reason,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "makespan_seconds": round(self.makespan_seconds, 6),
            "serial_seconds": round(self.serial_seconds, 6),
            "critical_path_seconds": round(self.critical_path_seconds, 6),
            "critical_path": self.critical_path,
            "lower_bound_seconds": round(self.lower_bound_seconds, 6),
            "speedup": round(self.speedup, 4),
            "efficiency": round(self.efficiency, 4),
            "max_parallel": self.max_parallel,
            "pool_utilization": {k: round(v, 4) for k, v in self.pool_utilization.items()},
            "counts": {s: self.count(s) for s in ("succeeded", "failed", "skipped", "cancelled")},
            "cost_usd": round(self.cost_usd, 8),
            "usage": self.usage,
            "cost_by_pool": {k: round(v, 8) for k, v in self.cost_by_pool.items()},
            "cost_by_agent": {k: round(v, 8) for k, v in self.cost_by_agent.items()},
            "budget_usd": self.budget_usd,
        }
        if include_tasks:
            out["tasks"] = {tid: t.to_dict() for tid, t in self.tasks.items()}
        # Durable runs only (see store/): absent keys keep the in-memory summary unchanged.
        cached = sum(1 for t in self.tasks.values() if t.cached)
        if cached:
            out["cached"] = cached
        if self.workspace is not None:
            out["workspace"] = self.workspace
        if self.rollback is not None:
            out["rollback"] = self.rollback
        if self.prepaid is not None:
            out["prepaid"] = self.prepaid.to_dict()
        return out
