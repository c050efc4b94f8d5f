"""Agents do the work of one task attempt.

An agent implements one coroutine, `run(task, ctx)`, and returns the task's output: any
JSON-serialisable value, or a `TaskOutput` when it also has usage, cost or files to report.
Raise `TaskError` (or `NonRetryableError`) to fail the attempt with a clean message.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .._core._budget import Budget
    from ..plan import Plan, Task

__all__ = ["Agent", "TaskContext", "TaskOutput"]


@dataclass(slots=True)
class TaskOutput:
    """An agent's result when there is more to say than the output value itself."""

    output: Any
    usage: dict[str, int] = field(default_factory=dict)
    cost_usd: float = 0.0
    files: list[str] = field(default_factory=list)
    #: what the attempt wrote, as it wrote it: workspace-relative path -> the text of its last
    #: write there. Tasks share a workspace, so when the task ends another may already have
    #: overwritten a file; the coordinator compares these versions, not the files on disk.
    contents: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class TaskContext:
    """What an attempt knows about its run: inputs from dependencies, attempt number, progress."""

    task: Task
    run_id: str
    attempt: int
    inputs: dict[str, Any]
    workspace: Path | None = None
    #: the whole plan (LLM tasks read its roles, providers and prices)
    plan: Plan | None = None
    #: the run's spending limit, if any: paid calls reserve their worst case here first
    budget: Budget | None = None
    #: where command tasks run (None: this process's current directory). A resumed run
    #: runs them where it started, whatever directory `resume` is called from.
    cwd: Path | None = None
    _report: Callable[[str, float | None], None] | None = field(default=None, repr=False)

    def progress(self, message: str = "", fraction: float | None = None) -> None:
        """Report progress ("3/10 sources read", 0.3): becomes a `task_progress` event."""
        if fraction is not None and not 0.0 <= fraction <= 1.0:
            raise ValueError(f"progress fraction must be between 0 and 1, got {fraction}")
        if self._report is not None:
            self._report(message, fraction)


class Agent(ABC):
    """Runs one attempt of a task. Implementations live one per module in this package."""

    @abstractmethod
    async def run(self, task: Task, ctx: TaskContext) -> Any:
        """Do the work; return the output (or a TaskOutput); raise to fail the attempt."""

    def close(self) -> None:  # noqa: B027 - optional: most agents hold nothing
        """Release what the agent holds between runs (threads, clients); the executor calls
        it from `aclose()`."""
