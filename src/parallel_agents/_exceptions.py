"""Exceptions raised by parallel-agents.

The tree::

    ParallelAgentsError
    ├── PlanError            a plan failed validation; .problems lists every problem found
    │   └── CycleError       the dependency graph has a cycle; .cycle is the path a -> b -> a
    ├── UsageError           the caller misused the API or the CLI (bad option, bad state)
    ├── StoreError           the run store cannot be used (not ours, corrupted, newer schema)
    │   └── RunLockedError   another live process owns the run (resume it once, not twice)
    └── TaskError            raised *inside* an agent to fail one attempt
        ├── TaskTimeout      the attempt ran past its timeout_sec
        └── NonRetryableError  retrying will not help (bad request, missing program, ...)

A `PlanError` is a developer mistake found before anything runs; a `TaskError` is a run-time
failure of one attempt, recorded on the task and never propagated out of the executor.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ParallelAgentsError",
    "PlanError",
    "PlanProblem",
    "CycleError",
    "UsageError",
    "StoreError",
    "RunLockedError",
    "TaskError",
    "TaskTimeout",
    "NonRetryableError",
]


class ParallelAgentsError(Exception):
    """Base class of every error this package raises on purpose."""


@dataclass(frozen=True, slots=True)
class PlanProblem:
    """One validation problem: where it is (`tasks[2].depends_on`) and what is wrong."""

    location: str
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}" if self.location else self.message


class PlanError(ParallelAgentsError):
    """The plan is invalid. `problems` holds every problem found, not just the first."""

    def __init__(self, problems: list[PlanProblem], source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        where = f" in {source}" if source else ""
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        lines = [f"invalid plan{where}: {count} {noun}"]
        lines += [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))


class CycleError(PlanError):
    """The dependency graph has a cycle. `cycle` is the path, first node repeated at the end."""

    def __init__(self, cycle: list[str], source: str | None = None) -> None:
        self.cycle = cycle
        problem = PlanProblem(
            "tasks",
            f"dependency cycle: {' -> '.join(cycle)} (each task depends on the next; "
            "remove one of these depends_on entries)",
        )
        super().__init__([problem], source)


class UsageError(ParallelAgentsError):
    """The API or CLI was used wrongly; the message says how to use it instead."""


class StoreError(ParallelAgentsError):
    """The run store cannot be opened or used; the message names the file and what to do.

    A file that is not a parallel-agents store is never modified: the error asks the user to
    choose another path rather than risk someone else's data.
    """


class RunLockedError(StoreError):
    """Another live process holds the run's lease (it is running or resuming it)."""


class TaskError(ParallelAgentsError):
    """Raise from an agent to fail the current attempt with a clean message.

    Any other exception fails the attempt too; this one just skips the traceback in the
    recorded error. Retries follow the task's `max_retries` unless `retryable` is False.
    """

    retryable: bool = True

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable


class TaskTimeout(TaskError):
    """The attempt ran longer than the task's `timeout_sec` and was stopped."""


class NonRetryableError(TaskError):
    """Retrying cannot help (a missing program, a bad request): fail the task at once."""

    retryable = False
