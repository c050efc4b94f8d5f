"""The Ray backend: agent calls run in Ray worker processes, on one machine or a cluster.

Ray is only the execution substrate. Scheduling, priorities, retries, timeouts, events and the
store stay on the driver (the process running the executor): Ray has no task priorities and
its head node keeps no durable state, so the engine keeps owning both.

Each pool gets its own Ray async actors (`_PoolWorker`). Their `max_concurrency` adds up to the
pool's `max_concurrent`, split over ceil(slots / `slots_per_actor`) actors so a large pool can
spread over several nodes (`SPREAD` placement). An unbounded pool gets `unbounded_pool_slots`.
The driver hands each attempt to the least busy actor of its pool; our scheduler already keeps
a pool's running attempts within its limit, so an attempt never waits in a Ray queue.

One attempt is one call of the actor's streaming generator `run`: it yields progress reports as
the agent makes them (they become `task_progress` events on the driver right away), then the
outcome. An agent's exception travels back pickled and is re-raised on the driver unchanged,
so `TaskError(retryable=False)`, timeouts and retry-after behave exactly as on the local backend.

Failures of Ray itself are mapped where they enter (httpx-style): a dead worker process or node
(`RayActorError`, `WorkerCrashedError`, ...) fails the attempt with a retryable
`TaskError("worker lost: ...")`; the actor is restarted by Ray (`max_restarts=-1`) and our retry
policy decides whether the task runs again. Cancelling an attempt (timeout, fail-fast, Ctrl-C)
calls `ray.cancel`, which raises CancelledError inside the worker's coroutine: a command's whole
process group is terminated there, as it is locally.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._exceptions import NonRetryableError, TaskError, UsageError
from ..agents import TaskContext
from ..providers.base import note_wait, waits_measured
from ..roles import default_model, run_default_model
from . import Backend

try:
    import ray
    import ray.exceptions as ray_errors
    from ray import cloudpickle
except ImportError:  # pragma: no cover - exercised by the no-Ray CLI test in a bare venv
    raise UsageError(
        "the ray backend needs Ray, which is not installed: "
        "pip install 'parallel-agents[ray]' (from a checkout: pip install -e '.[ray]')"
    ) from None

if TYPE_CHECKING:
    from ..agents import Agent
    from ..plan import Plan, Task

__all__ = ["RayBackend", "SLOTS_PER_ACTOR", "UNBOUNDED_POOL_SLOTS"]

#: Concurrent attempts one actor (one worker process) takes before a pool gets another actor.
SLOTS_PER_ACTOR = 8
#: Total concurrency given to a pool with `max_concurrent: null` (the engine sets no limit).
UNBOUNDED_POOL_SLOTS = 32
#: How long to wait for a pool's actors to come up before reporting the cluster as unusable.
ACTOR_START_TIMEOUT_SEC = 120.0

#: How long a cancelled attempt may take to stop on its worker before the driver moves on.
CANCEL_WAIT_SEC = 15.0

_ERROR_LIMIT = 400

# Ray failures that mean "the process or node running the attempt is gone": retryable.
_WORKER_LOST: tuple[type[BaseException], ...] = tuple(
    cls for cls in (
        getattr(ray_errors, name, None)
        for name in ("RayActorError", "WorkerCrashedError", "NodeDiedError", "LocalRayletDiedError",
                     "ObjectLostError", "OwnerDiedError", "ActorUnavailableError")
    ) if isinstance(cls, type)
)


class _PoolWorker:
    """Runs attempts of one pool inside a Ray worker process (an async actor).

    Agents arrive once per actor (through the object store) and are cached by key, so a
    stateful agent (an LLM client, a connection pool) is built once per worker, not per task.
    """

    def __init__(self) -> None:
        self._agents: dict[int, Any] = {}

    def pid(self) -> int:
        return os.getpid()

    async def run(self, agent_key: int, agent_box: list[Any], task_id: str, task_blob: bytes,
                  run_id: str, attempt: int, inputs: dict[str, Any], workspace: str | None,
                  model: str | None = None) -> AsyncIterator[tuple[Any, ...]]:
        try:
            task = cloudpickle.loads(task_blob)
            agent = self._agents.get(agent_key)
            if agent is None:
                # Boxed in a list so Ray passes the reference instead of resolving it per call.
                agent = self._agents[agent_key] = await agent_box[0]
        except Exception as exc:  # noqa: BLE001 - unpickling can raise anything
            cause = getattr(exc, "cause", None) or exc
            yield ("raised", NonRetryableError(
                f"the Ray worker cannot load task {task_id!r}: {type(cause).__name__}: "
                f"{_short(str(cause).splitlines()[0] if str(cause) else '')}. Its function "
                "(or agent) must be importable on every node: install its module there, or "
                "ship it with a runtime_env (py_modules / working_dir; see docs/ray.md)"))
            return
        loop = asyncio.get_running_loop()
        reports: asyncio.Queue[tuple[str, float | None]] = asyncio.Queue()

        def report(message: str, fraction: float | None) -> None:
            # Sync function tasks run in a thread: hand the report to the loop thread-safely.
            loop.call_soon_threadsafe(reports.put_nowait, (message, fraction))

        ctx = TaskContext(task=task, run_id=run_id, attempt=attempt, inputs=inputs,
                          workspace=Path(workspace) if workspace is not None else None,
                          _report=report)
        # The driver's run default model (`roles.default_model()` there): the worker's own
        # environment may name another one. The attempt's asyncio task copies it.
        # What it waits for (a model serving one call at a time) goes back to the driver.
        with run_default_model(model), waits_measured() as waits:
            work = asyncio.ensure_future(agent.run(task, ctx))
        getter: asyncio.Future[Any] | None = None
        try:
            while not work.done():
                getter = asyncio.ensure_future(reports.get())
                await asyncio.wait({work, getter}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield ("progress", *getter.result())
                else:
                    getter.cancel()
                getter = None
            while not reports.empty():
                yield ("progress", *reports.get_nowait())
            if waits[0]:
                yield ("waited", waits[0])
            exc = None if work.cancelled() else work.exception()
            if work.cancelled():
                yield ("raised", TaskError("the attempt was cancelled on the Ray worker"))
            elif exc is None:
                yield ("ok", work.result())
            else:
                yield ("raised", _portable(exc))
        except BaseException:
            # ray.cancel lands here as CancelledError: stop the agent (a command's process
            # group is terminated by the agent's own cancel path) before giving up.
            if getter is not None:
                getter.cancel()
            work.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait({work}, timeout=30)
            raise


def _portable(exc: BaseException) -> BaseException:
    """The exception itself if it survives pickling, else a TaskError with the same text."""
    try:
        cloudpickle.loads(cloudpickle.dumps(exc))  # what Ray will do with it, both ways
        return exc
    except Exception:  # noqa: BLE001 - any pickling failure means "send a plain copy"
        copy = TaskError(f"{type(exc).__name__}: {exc}")
        if isinstance(exc, TaskError):
            copy = TaskError(str(exc), retryable=exc.retryable)
        return copy


_remote_worker: Any = None  # ray.remote(_PoolWorker), made on first use


class _PoolActors:
    """The actors of one pool and how many attempts each is running (driver-side).

    After a worker is lost, Ray restarts its actor, but calls made while it restarts fail at
    once; so the next attempt sent to that actor first waits until it answers again, instead of
    burning the task's retries in milliseconds.
    """

    def __init__(self, handles: list[Any], capacity: list[int]) -> None:
        self.handles = handles
        self.capacity = capacity
        self.load = [0] * len(handles)
        self.reviving: list[asyncio.Task[None] | None] = [None] * len(handles)

    def lost(self, index: int) -> None:
        if self.reviving[index] is None:
            self.reviving[index] = asyncio.ensure_future(self._revive(index))

    async def _revive(self, index: int) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ACTOR_START_TIMEOUT_SEC
        while True:
            try:
                await self.handles[index].pid.remote()
                break
            except _WORKER_LOST:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.2)
        self.reviving[index] = None

    async def ready(self, index: int) -> None:
        reviving = self.reviving[index]
        if reviving is None:
            return
        try:
            await asyncio.shield(reviving)
        except _WORKER_LOST:
            self.reviving[index] = None  # try again from scratch next time
            raise TaskError(
                f"worker lost: Ray did not restart the pool's worker within "
                f"{ACTOR_START_TIMEOUT_SEC:g}s; check `ray status`", retryable=True) from None

    def acquire(self) -> int:
        best = min(range(len(self.handles)), key=lambda i: self.load[i] / self.capacity[i])
        self.load[best] += 1
        return best

    def release(self, index: int) -> None:
        self.load[index] -= 1


async def _wait_stopped(stream: Any) -> None:
    """Consume a cancelled attempt's stream until the worker reports it ended (bounded)."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CANCEL_WAIT_SEC):
            async for item_ref in stream:
                with contextlib.suppress(Exception):
                    await item_ref


def _check_reachable(address: str) -> None:
    """Fail fast on a wrong `host:port`: `ray.init` would retry for minutes before giving up."""
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if address == "auto" or not sep or not port.isdigit():
        return  # "auto" and other forms: let Ray resolve them
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        raise UsageError(
            f"cannot reach the Ray cluster at {address!r}: {exc.strerror or exc}. Check the "
            "address printed by `ray start --head` (host:port, 6379 by default) and that "
            "the head node is up; omit --ray-address to start a local Ray instead"
        ) from None


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _ERROR_LIMIT else text[: _ERROR_LIMIT - 1] + "…"


class RayBackend(Backend):
    """Runs attempts on Ray workers. See the module docstring for what runs where.

    **Parameters:**

    * **address** - a running cluster (`auto`, `ray://host:10001`, `host:6379`). None: reuse
      Ray if this process already initialised it, else start a private local instance
      (no dashboard, no usage reporting, bound to 127.0.0.1), shut down on `close()`.
    * **slots_per_actor** - concurrent attempts per actor before a pool gets another actor.
    * **unbounded_pool_slots** - total concurrency for a pool without `max_concurrent`.
    * **actor_options** - extra Ray actor options (e.g. `{"num_cpus": 1}` or custom resources
      to pin workers to certain nodes). By default actors reserve no CPU: attempts mostly
      wait on programs and APIs, and pool limits, not Ray resources, bound concurrency.
    * **init_options** - extra keyword arguments for `ray.init` (e.g. `runtime_env`).
    """

    name = "ray"

    def __init__(
        self,
        *,
        address: str | None = None,
        slots_per_actor: int = SLOTS_PER_ACTOR,
        unbounded_pool_slots: int = UNBOUNDED_POOL_SLOTS,
        actor_options: dict[str, Any] | None = None,
        init_options: dict[str, Any] | None = None,
    ) -> None:
        if slots_per_actor < 1 or unbounded_pool_slots < 1:
            raise UsageError("slots_per_actor and unbounded_pool_slots must be at least 1")
        self.address = address
        self.slots_per_actor = slots_per_actor
        self.unbounded_pool_slots = unbounded_pool_slots
        self.actor_options = dict(actor_options or {})
        self.init_options = dict(init_options or {})
        self._owns_ray = False
        self._started = False
        self._pools: dict[str, _PoolActors] = {}
        self._pool_keys: dict[tuple[str, int], _PoolActors] = {}
        self._agent_refs: dict[int, tuple[Agent, int, Any]] = {}
        self._task_blobs: dict[int, tuple[Task, bytes]] = {}

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        if self._started:
            return
        if self.address is None and ray.is_initialized():
            self._started = True  # someone else's Ray (a notebook, a test fixture): just use it
            return
        options: dict[str, Any] = {"include_dashboard": False, "configure_logging": False,
                                   "log_to_driver": False}
        if self.address is None:
            # A private instance: loopback only, and no usage report leaves the machine.
            # "local" rather than None: never join a cluster found via RAY_ADDRESS or
            # `ray start` by accident (pass address="auto" for that).
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            options["address"] = "local"
            options["_node_ip_address"] = "127.0.0.1"
        else:
            _check_reachable(self.address)
            options["address"] = self.address
        options.update(self.init_options)
        try:
            ray.init(**options)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"the Ray cluster at {self.address!r}" if self.address else "a local Ray instance"
            raise UsageError(
                f"cannot connect to {where}: {_short(str(exc))}. Start one with `ray start --head` "
                "and pass its address (--ray-address), or omit the address to start a local one. "
                "A cluster with token authentication needs RAY_AUTH_MODE=token and its token "
                "(~/.ray/auth_token or RAY_AUTH_TOKEN) on this machine too"
            ) from None
        self._owns_ray = True
        self._started = True

    async def prepare(self, plan: Plan) -> None:
        pending = []
        for name, pool in plan.all_pools().items():
            slots = pool.max_concurrent or self.unbounded_pool_slots
            group = self._pool_keys.get((name, slots))
            if group is None:
                group = self._spawn(name, slots)
                self._pool_keys[(name, slots)] = group
                pending += [h.pid.remote() for h in group.handles]
            self._pools[name] = group
        if pending:
            # Wait until the workers are up, so a run's first attempts don't pay process start.
            try:
                await asyncio.wait_for(asyncio.gather(*pending), ACTOR_START_TIMEOUT_SEC)
            except asyncio.TimeoutError:
                raise UsageError(
                    f"Ray did not start the worker actors within {ACTOR_START_TIMEOUT_SEC:g}s: "
                    "check `ray status` for free resources and your actor_options"
                ) from None

    def _spawn(self, pool: str, slots: int) -> _PoolActors:
        count = math.ceil(slots / self.slots_per_actor)
        capacity = [slots // count + (1 if i < slots % count else 0) for i in range(count)]
        global _remote_worker
        if _remote_worker is None:
            _remote_worker = ray.remote(_PoolWorker)
        options = {"num_cpus": 0, "max_restarts": -1, "max_task_retries": 0,
                   "scheduling_strategy": "SPREAD"}
        options.update(self.actor_options)
        handles = [
            # One slot more than the pool's share: the driver never runs more than `cap`
            # attempts here, and pid() pings (health, restart checks) always find room.
            _remote_worker.options(**options, max_concurrency=cap + 1).remote()
            for cap in capacity
        ]
        return _PoolActors(handles, capacity)

    async def close(self) -> None:
        for group in self._pool_keys.values():
            for reviving in group.reviving:
                if reviving is not None:
                    reviving.cancel()
            for handle in group.handles:
                with contextlib.suppress(Exception):
                    ray.kill(handle)
        self._pool_keys.clear()
        self._pools.clear()
        self._agent_refs.clear()
        self._task_blobs.clear()
        if self._owns_ray:
            ray.shutdown()
            self._owns_ray = False
        self._started = False

    async def worker_pids(self, pool: str = "default") -> list[int]:
        """Process ids of a pool's workers (after `prepare`): for diagnostics and tests."""
        return list(await asyncio.gather(*(h.pid.remote() for h in self._pools[pool].handles)))

    # -- one attempt ---------------------------------------------------------------------
    def _agent_ref(self, agent: Agent, task: Task) -> tuple[int, Any]:
        entry = self._agent_refs.get(id(agent))
        if entry is None:
            try:
                ref = ray.put(agent)
            except Exception as exc:  # noqa: BLE001 - cloudpickle raises many types
                raise NonRetryableError(
                    f"task {task.id!r}: its {task.kind!r} agent ({type(agent).__name__}) cannot be "
                    f"sent to a Ray worker: {_short(str(exc))}. Agents must be picklable: create "
                    "clients and connections lazily inside run()"
                ) from None
            # The agent is kept with its key so id() cannot be reused while the ref lives.
            entry = self._agent_refs[id(agent)] = (agent, len(self._agent_refs), ref)
        return entry[1], entry[2]

    def _task_blob(self, task: Task) -> bytes:
        # Pickled once per task, not per attempt, and by us: a task that cannot be pickled gets
        # a short error naming it, instead of Ray's multi-page serializability report.
        entry = self._task_blobs.get(id(task))
        if entry is None or entry[0] is not task:
            try:
                blob = cloudpickle.dumps(task)
            except Exception as exc:  # noqa: BLE001 - cloudpickle raises many types
                raise NonRetryableError(
                    f"task {task.id!r} cannot be sent to a Ray worker: {type(exc).__name__}: "
                    f"{_short(str(exc))}. A function task's callable and everything it refers "
                    "to must be picklable by cloudpickle: no locks, open files, sockets or live "
                    "clients (create those inside the function), and define it at module level "
                    "in a module the workers can import"
                ) from None
            if len(self._task_blobs) >= 100_000:
                self._task_blobs.clear()
            entry = self._task_blobs[id(task)] = (task, blob)
        return entry[1]

    async def run(self, agent: Agent, task: Task, ctx: TaskContext) -> Any:
        group = self._pools.get(task.pool)
        if group is None:
            raise UsageError(f"RayBackend.prepare() was not called for pool {task.pool!r}")
        key, ref = self._agent_ref(agent, task)
        blob = self._task_blob(task)
        index = group.acquire()
        try:
            await group.ready(index)
            try:
                stream = group.handles[index].run.options(num_returns="streaming").remote(
                    key, [ref], task.id, blob, ctx.run_id, ctx.attempt, ctx.inputs,
                    None if ctx.workspace is None else str(ctx.workspace), default_model(),
                )
            except Exception as exc:  # noqa: BLE001 - Ray raises TypeError and others
                raise NonRetryableError(
                    f"task {task.id!r}: its inputs cannot be sent to a Ray worker: "
                    f"{_short(str(exc).splitlines()[0])}"
                ) from None
            try:
                async for item_ref in stream:
                    item = await item_ref
                    if item[0] == "progress":
                        ctx.progress(item[1], item[2])
                    elif item[0] == "waited":
                        note_wait(item[1])
                    elif item[0] == "raised":
                        raise item[1]
                    else:
                        return item[1]
            except asyncio.CancelledError:
                # Like the local command agent, the attempt is over only once the worker has
                # stopped it (its process group killed): otherwise a retry could overlap it, or
                # close() could kill the actor first and orphan the group.
                ray.cancel(stream)
                await asyncio.shield(_wait_stopped(stream))
                raise
            except _WORKER_LOST as exc:
                group.lost(index)
                raise TaskError(
                    f"worker lost: the Ray worker running this attempt died "
                    f"({type(exc).__name__}: {_short(str(exc))})", retryable=True
                ) from None
            except ray_errors.TaskCancelledError:
                raise TaskError("worker lost: the attempt was cancelled on the Ray worker",
                                retryable=True) from None
            except ray_errors.RayTaskError as exc:
                # An error in the worker machinery, not in the agent (those come as "raised"):
                # e.g. an output that cannot be pickled back.
                cause = exc.cause if getattr(exc, "cause", None) is not None else exc
                raise TaskError(
                    f"the Ray worker failed: {type(cause).__name__}: "
                    f"{_short(str(cause).splitlines()[0] if str(cause) else '')}"
                ) from None
            except ray_errors.RayError as exc:
                raise TaskError(f"Ray error: {type(exc).__name__}: {_short(str(exc))}") from None
            raise TaskError("the Ray worker ended the attempt without a result")
        finally:
            group.release(index)
