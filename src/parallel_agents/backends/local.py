"""The default backend: agent calls run on the executor's own event loop, as they always did."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from . import Backend

if TYPE_CHECKING:
    from ..agents import Agent, TaskContext
    from ..plan import Task

__all__ = ["LocalBackend"]


class LocalBackend(Backend):
    """In-process execution. Adds nothing to an attempt's cost."""

    name = "local"

    # A plain def returning the agent's coroutine, not an `async def` wrapping it: the executor
    # awaits the agent directly, with no extra coroutine frame per task (benchmarks/overhead.py).
    def run(self, agent: Agent, task: Task, ctx: TaskContext) -> Awaitable[Any]:
        return agent.run(task, ctx)
