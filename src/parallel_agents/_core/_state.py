"""Task states and the one table of legal transitions between them.

All state logic lives here (h11's "rule 1"): the scheduler asks `check_transition` before it
changes a task's state, so an impossible event fails loudly, naming task, state and event,
instead of silently corrupting a run.
"""

from __future__ import annotations

import enum

from .._exceptions import ParallelAgentsError

__all__ = ["TaskState", "TRANSITIONS", "TERMINAL", "IllegalTransition", "check_transition"]


class TaskState(str, enum.Enum):
    PENDING = "pending"  # waiting for dependencies (or for its wave/stage)
    READY = "queued"  # dependencies met, waiting for a pool slot
    RUNNING = "running"
    # Its work succeeded; the output is being committed to the store. Holds no slot, and its
    # dependents wait: a task counts as succeeded only once its output is durable.
    COMMITTING = "committing"
    RETRY_WAIT = "retrying"  # failed an attempt, waiting for its backoff: holds no slot
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"  # a dependency failed, or fail-fast stopped the run
    CANCELLED = "cancelled"


TERMINAL = frozenset(
    {TaskState.SUCCEEDED, TaskState.FAILED, TaskState.SKIPPED, TaskState.CANCELLED}
)

#: state -> states it may move to. Terminal states move nowhere.
TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    TaskState.PENDING: frozenset(
        {TaskState.READY, TaskState.SKIPPED, TaskState.CANCELLED, TaskState.FAILED}
    ),
    TaskState.READY: frozenset(
        {TaskState.RUNNING, TaskState.SKIPPED, TaskState.CANCELLED, TaskState.FAILED}
    ),
    TaskState.RUNNING: frozenset(
        {TaskState.SUCCEEDED, TaskState.FAILED, TaskState.RETRY_WAIT, TaskState.CANCELLED,
         TaskState.COMMITTING}
    ),
    # A commit either lands (succeeded) or fails like an attempt does; it is never cancelled.
    TaskState.COMMITTING: frozenset(
        {TaskState.SUCCEEDED, TaskState.FAILED, TaskState.RETRY_WAIT}
    ),
    TaskState.RETRY_WAIT: frozenset(
        {TaskState.READY, TaskState.SKIPPED, TaskState.CANCELLED, TaskState.FAILED}
    ),
    TaskState.SUCCEEDED: frozenset(),
    TaskState.FAILED: frozenset(),
    TaskState.SKIPPED: frozenset(),
    TaskState.CANCELLED: frozenset(),
}


class IllegalTransition(ParallelAgentsError):
    """A scheduler event arrived that the task's current state does not allow."""


def check_transition(task_id: str, current: TaskState, new: TaskState, event: str) -> None:
    if new not in TRANSITIONS[current]:
        raise IllegalTransition(
            f"task {task_id!r}: event {event} cannot move it from {current.value} to "
            f"{new.value} (allowed: {', '.join(s.value for s in TRANSITIONS[current]) or 'none'})"
        )
