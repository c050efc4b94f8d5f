"""Backends run agent calls somewhere: in this process, or on a Ray cluster.

The executor keeps the scheduler, priorities, retries, timeouts and the store; a backend only
decides *where* one attempt's `agent.run(task, ctx)` executes and brings its outcome back. An
attempt's exceptions reach the executor unchanged, so retry policy does not depend on where
the work ran. A lost worker surfaces as a retryable `TaskError("worker lost: ...")`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from .._exceptions import UsageError

if TYPE_CHECKING:
    from ..agents import Agent, TaskContext
    from ..plan import Plan, Task

__all__ = ["Backend", "BACKENDS", "resolve_backend"]

BACKENDS: tuple[str, ...] = ("local", "ray")


class Backend(ABC):
    """Where attempts run. One backend serves every run of one `Executor`.

    Lifecycle: `start()` once before the first run (connect, spawn workers), `prepare(plan)`
    before each run (size per-pool capacity), `run(...)` per attempt, `close()` at the end.
    """

    name: str = "backend"

    async def start(self) -> None:
        """Connect to or start the execution substrate. Called once, before the first run."""

    async def prepare(self, plan: Plan) -> None:
        """Get ready for `plan`'s pools. Called before each run; must be cheap when repeated."""

    async def close(self) -> None:
        """Release workers and connections. Safe to call more than once."""

    @abstractmethod
    def run(self, agent: Agent, task: Task, ctx: TaskContext) -> Awaitable[Any]:
        """Run one attempt: the agent's output, or the agent's exception raised unchanged.

        Cancelling the awaitable must stop the attempt wherever it runs.
        """


def resolve_backend(backend: str | Backend, *, ray_address: str | None = None) -> Backend:
    """A Backend from its name (`local`, `ray`) or the instance itself."""
    if isinstance(backend, Backend):
        if ray_address is not None:
            raise UsageError("ray_address applies only to backend='ray', not to a Backend instance")
        return backend
    if backend == "local":
        if ray_address is not None:
            raise UsageError("--ray-address needs --backend ray (the local backend runs in-process)")
        from .local import LocalBackend

        return LocalBackend()
    if backend == "ray":
        from .ray import RayBackend  # raises UsageError with the install command if Ray is missing

        return RayBackend(address=ray_address)
    raise UsageError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")
