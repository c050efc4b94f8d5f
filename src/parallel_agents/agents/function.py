"""`function` tasks: a Python callable given as `Task(run=...)`.

Coroutine functions run on the executor's loop. Plain functions run in a worker thread so a
blocking call cannot stall every other task; note that a thread cannot be interrupted, so on
timeout the attempt is failed and its thread is abandoned to finish on its own.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..plan import accepts_context
from . import Agent, TaskContext

__all__ = ["FunctionAgent", "function_shape"]


@functools.lru_cache(maxsize=4096)
def _shape(fn: Any) -> tuple[bool, bool]:
    return inspect.iscoroutinefunction(fn), accepts_context(fn)


def function_shape(fn: Any) -> tuple[bool, bool]:
    """(is a coroutine function, takes a TaskContext): looked up once per callable."""
    try:
        return _shape(fn)
    except TypeError:  # unhashable callable
        return inspect.iscoroutinefunction(fn), accepts_context(fn)


class FunctionAgent(Agent):
    """Calls `task.run`. The executor awaits a coroutine function's coroutine itself when this
    agent runs on the local backend (one frame less per task); this `run` covers the rest.

    Plain functions run in this agent's own threads, not the loop's default executor: a
    thread abandoned on timeout then does not hold up `asyncio.run` (which waits for the
    default executor's threads) once the run is over; `close()` lets them go. The
    interpreter still waits for such a thread when the process exits: a thread cannot be
    stopped from outside.
    """

    def __init__(self) -> None:
        self._threads: ThreadPoolExecutor | None = None

    def close(self) -> None:
        """Stop handing out threads; an abandoned one finishes on its own (the run does not
        wait for it; the process, at exit, does)."""
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)
            self._threads = None

    async def run(self, task: Any, ctx: TaskContext) -> Any:
        fn = task.run
        is_async, takes_ctx = function_shape(fn)
        if is_async:
            return await (fn(ctx) if takes_ctx else fn())
        loop = asyncio.get_running_loop()
        # In the caller's context (as asyncio.to_thread does): the run's default model, and
        # any context variable the caller set, are the same in the thread.
        call = contextvars.copy_context().run
        if self._threads is None:
            self._threads = ThreadPoolExecutor(thread_name_prefix="parallel-agents-function")
        result = await loop.run_in_executor(self._threads, call,
                                            *((fn, ctx) if takes_ctx else (fn,)))
        if inspect.isawaitable(result):
            result = await result
        return result
