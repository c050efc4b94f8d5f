"""The executor's side of durability: one `DurableRun` per run, called at a few hooks.

It keeps the executor free of SQL and file I/O. The rule it enforces is the design's: a task
is succeeded only once its output is committed, so `commit_success` is awaited *before* the
executor emits `task_succeeded` and tells the scheduler; resume then trusts the store alone.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._exceptions import StoreError, UsageError
from ..agents import TaskOutput
from ..agents.tools import Workspace as FileArea
from ..agents.tools import WorkspaceError
from ..events import Event
from ..plan import Plan
from ..results import AttemptRecord, RunResult, TaskResult
from .cache import Uncacheable, cache_key
from .sqlite import TASKS_FROM_TABLES, CommitFuture, RunBatch, RunStore, StoredRun, _dumps
from .workspace import Workspace, blobs_after, relative_in

__all__ = ["DurableRun", "RunOptions", "plan_from_store"]

#: The longest rows nobody waits for (events, attempt starts) stay on the loop before going
#: to the writer. A crash loses at most these (as it could lose a queued row before).
_HOLD_SECONDS = 0.05
_ENDED = {"task_failed": "failed", "task_skipped": "skipped", "task_cancelled": "cancelled"}


@dataclass(slots=True)
class RunOptions:
    """The options a run was started with; resume continues with the same ones."""

    strategy: str
    max_workers: int | None
    fail_fast: bool
    cache: bool
    rollback_on_failure: bool
    seed: int | None
    #: The budget given to the executor (`--budget`); None: the plan's `budget_usd`, if any.
    budget_usd: float | None = None
    #: The model of LLM tasks that name none (`roles.default_model()` when the run started):
    #: a resume in another shell, with another PARALLEL_AGENTS_MODEL or config, keeps it.
    default_model: str | None = None
    #: What the caller stored with the run (`Executor.execute(metadata=...)`), JSON values;
    #: the coordinator keeps its decomposition here to answer once a resumed run ends.
    metadata: dict[str, Any] | None = None
    #: Where its LLM answers were recorded to / replayed from (absolute folders), and where
    #: its tasks ran (`local` / `ray` and the Ray address): `parallel-agents resume` builds
    #: its executor with the same ones, so a replayed run does not go on calling real models.
    record_dir: str | None = None
    replay_dir: str | None = None
    backend: str | None = None
    ray_address: str | None = None
    #: The directory the run started in: command tasks' relative paths (`python build.py`)
    #: mean files there, so a resume from another directory runs them there too.
    cwd: str | None = None
    #: `Prepaid.to_dict()`: what the run paid before its tasks (the coordinator's planning
    #: call); a resumed run's budget and totals count it again.
    prepaid: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "max_workers": self.max_workers,
                "fail_fast": self.fail_fast, "cache": self.cache,
                "rollback_on_failure": self.rollback_on_failure, "seed": self.seed,
                "budget_usd": self.budget_usd, "default_model": self.default_model,
                "metadata": self.metadata, "record_dir": self.record_dir,
                "replay_dir": self.replay_dir, "backend": self.backend,
                "ray_address": self.ray_address, "cwd": self.cwd, "prepaid": self.prepaid}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunOptions:
        return cls(strategy=data.get("strategy") or "dependency",
                   max_workers=data.get("max_workers"), fail_fast=bool(data.get("fail_fast")),
                   cache=bool(data.get("cache")),
                   rollback_on_failure=bool(data.get("rollback_on_failure")),
                   seed=data.get("seed"), budget_usd=data.get("budget_usd"),
                   default_model=data.get("default_model") or None,
                   metadata=data.get("metadata") if isinstance(data.get("metadata"), dict)
                   else None,
                   record_dir=data.get("record_dir"), replay_dir=data.get("replay_dir"),
                   backend=data.get("backend"), ray_address=data.get("ray_address"),
                   cwd=data.get("cwd"),
                   prepaid=data.get("prepaid") if isinstance(data.get("prepaid"), dict)
                   else None)


def plan_from_store(saved: StoredRun, plan: Plan | None) -> Plan:
    """The plan to resume: the caller's if given, else the stored one (not for callables)."""
    if plan is not None:
        stored_ids = [t["id"] for t in saved.plan.get("tasks", [])]
        if [t.id for t in plan.tasks] != stored_ids:
            raise UsageError(
                f"the plan given to resume run {saved.id} does not match the stored plan "
                f"(task ids differ); pass the same plan the run was started with"
            )
        return plan
    if saved.has_callables:
        raise UsageError(
            f"run {saved.id} has Python function tasks, which cannot be reloaded from the store; "
            f"resume it from Python with Executor(store=...).resume({saved.id!r}, plan=plan), "
            f"passing the same plan"
        )
    data = {k: v for k, v in saved.plan.items()}
    # A streamed run is stored before its planner has emitted a task.
    return Plan.from_dict(data, source=f"stored plan of run {saved.id}", allow_empty=True)


def _with_undone(rollback: dict[str, Any] | None, undone: dict[str, Any] | None
                 ) -> dict[str, Any] | None:
    """The run's rollback report with what its resume undid first (see `begin`)."""
    if not undone or not (undone["removed"] or undone["restored"]):
        return rollback
    if rollback is None:
        return undone
    return {**rollback, **{key: sorted(set(rollback[key]) | set(undone[key]))
                           for key in ("removed", "restored")}}


class DurableRun:
    """Store + workspace + cache hooks for one run. Created and driven by the executor."""

    def __init__(self, store: RunStore, run_id: str, plan: Plan, options: RunOptions, *,
                 workspace: Path | None, resumed: StoredRun | None) -> None:
        self.store = store
        self.run_id = run_id
        self.plan = plan
        self.options = options
        self.resumed = resumed
        root = workspace if workspace is not None else store.runs_dir / run_id
        if resumed is not None and resumed.workspace and workspace is None:
            root = Path(resumed.workspace)
        self.workspace_path = root
        self.workspace: Workspace | None = None
        # Pipeline stages: tasks not yet ended per stage, for the between-stages checkpoints.
        self._stage_left: dict[str, int] = {}
        # On resume, the attempts that ended before it (see `restore`), for the activity log.
        self._history: dict[str, list[AttemptRecord]] = {}
        self._events: list[dict[str, Any]] | None = None  # the stored ones, read once
        self._died: float | None = None  # on resume: when the crashed runner was last alive
        # On resume with rollback_on_failure: what undoing the interrupted attempts removed
        # and restored (part of the run's `rollback` report).
        self._undone: dict[str, Any] | None = None
        # The fast path: rows gathered during one turn of the event loop go to the store as
        # one `RunBatch` (one queue item, one shared commit future). A store that overrides
        # submit/commit to see every row gets them one by one, unless it says it handles
        # batches too (`takes_batches`, as the gateway's redacting store does).
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self._batched = self._loop is not None and store.takes_batches
        self._batch: RunBatch | None = None
        self._next_seq = -1
        self._timer_armed = False
        # Commits handed to the store and not yet done. While one is in flight, successes
        # gather in the next batch, which goes when it is done (group commit: a batch per
        # commit round trip, not per loop turn, whatever the pool sizes).
        self._in_flight = 0
        if options.strategy == "pipeline":
            for t in plan.tasks:
                if t.stage is not None:
                    self._stage_left[t.stage] = self._stage_left.get(t.stage, 0) + 1

    # -- lifecycle -----------------------------------------------------------------------
    def begin(self) -> None:
        """Record (or lease) the run before any task starts, and checkpoint the workspace."""
        if self.resumed is None:
            self.store.create_run(
                self.run_id, plan_name=self.plan.name,
                plan_json=self.plan.model_dump_json(exclude_none=True),
                options=self.options.to_dict(),
                has_callables=any(t.run is not None for t in self.plan.tasks),
                workspace=str(self.workspace_path.resolve()),
                # Written now, with the run: the writer thread is idle at this point and the
                # run's first commits should not queue behind 10^4 task rows.
                tasks=((t.id, t.pool) for t in self.plan.tasks),
            )
        else:
            self.store.acquire(self.run_id)
            # The task rows, if the first process died before writing them (a no-op if not).
            self.store.submit("plan_tasks", (self.run_id,))
        try:
            self.workspace = Workspace(self.workspace_path, run_id=self.run_id, plan=self.plan,
                                       strategy=self.options.strategy)
            if self.resumed is not None and self.options.rollback_on_failure:
                # What the attempts the crash cut off wrote is not a success's: undo it now,
                # or the resume's checkpoints would keep it and a final rollback could not.
                self._undone = self.workspace.rollback()
            if self.resumed is not None:
                self.workspace.restore_state(
                    {tid: "succeeded" for tid in self.resumed.outputs},
                    {tid: len(a) for tid, a in self.resumed.attempts.items()})
                self.workspace.log_history(
                    self._history, {tid for tid, out in self.resumed.outputs.items()
                                    if out["cached"]})
            self.workspace.start("resume" if self.resumed is not None else "start")
            if self.resumed is not None:
                # Only now: a resume that could not prepare its workspace changes nothing.
                self.store.submit("resumed", (time.time(), self.run_id))
        except OSError as exc:
            self.store.release(self.run_id)
            raise StoreError(f"cannot prepare the workspace {self.workspace_path}: {exc}") from None

    def extend(self, plan: Plan) -> None:
        """Streaming planning added tasks to the run: store the grown plan and the new tasks'
        rows, and show them in the coordination files, before any of them starts (the
        writer applies the queue in order, so their first rows come after these)."""
        self.plan = plan
        self.store.submit("plan_update", (plan.model_dump_json(exclude_none=True),
                                          int(any(t.run is not None for t in plan.tasks)),
                                          self.run_id))
        self.store.submit("plan_tasks", (self.run_id,))  # INSERT OR IGNORE: only the new ones
        if self.workspace is not None:
            self.workspace.extend(plan)

    def restore(self, results: dict[str, TaskResult], now: float
                ) -> tuple[set[str], dict[str, int], dict[str, int]]:
        """On resume: fill results from the store; mark crashed attempts interrupted.

        Returns (already_succeeded, prior_attempts, free_attempts) for the scheduler: an
        attempt the run's own cancel stopped (Ctrl-C, a server shutdown, fail-fast) is not
        the task's doing and does not count against its retries; one a crash cut off does
        (the task may be what crashed the runner).
        """
        saved = self.resumed
        assert saved is not None
        # An attempt the crash cut off ended when its process was last seen alive, not now:
        # the time the run lay dead is not work (it would skew durations and the speedup).
        # Seen alive: its last heartbeat (every 2 s), or anything it recorded after that.
        died = now
        if saved.last_alive is not None:
            died = min(now, max(saved.last_alive, self._last_activity()))
        self._died = died if saved.last_alive is not None else None
        for tid, attempts in saved.attempts.items():
            if tid not in results:
                continue
            result = results[tid]
            for a in attempts:
                record = AttemptRecord(attempt=a.attempt, started_at=a.started_at,
                                       finished_at=a.finished_at, outcome=a.outcome,
                                       error=a.error, waited=a.waited)
                if a.outcome == "running" and tid not in saved.outputs:
                    record.outcome = "interrupted"
                    record.finished_at = max(died, a.started_at)
                    record.error = "interrupted: the process running the attempt died"
                    self.attempt_finished(tid, record)
                result.history.append(record)
            result.error = result.history[-1].error if result.history else None
        for tid, out in saved.outputs.items():
            if tid not in results:
                continue
            result = results[tid]
            result.status = "succeeded"
            result.output = out["output"]
            result.usage = out["usage"]
            result.cost_usd = out["cost_usd"]
            result.files = out["files"]
            result.cached = out["cached"]
            result.error = None
            for record in result.history:
                if record.attempt == out["attempt"] and record.outcome == "running":
                    # Committed, but the process died before recording the attempt's end.
                    record.outcome = "succeeded"
                    record.finished_at = record.finished_at or now
                    self.attempt_finished(tid, record)
        # What tasks that did not succeed paid (LLM calls of failed attempts), as the run's
        # stored result has it if the run got as far as finishing before this resume.
        stored_tasks = (saved.result or {}).get("tasks") or {}
        for tid, entry in stored_tasks.items():
            if tid in results and tid not in saved.outputs and isinstance(entry, dict):
                results[tid].cost_usd = float(entry.get("cost_usd") or 0.0)
                results[tid].usage = dict(entry.get("usage") or {})
        self._history = {tid: results[tid].history for tid in saved.attempts if tid in results}
        prior = {tid: len(results[tid].history) for tid in saved.attempts if tid in results}
        free = {tid: n for tid in prior
                if (n := sum(1 for a in results[tid].history if a.outcome == "cancelled"))}
        done = set(saved.outputs) & set(results)
        for tid in done:
            self._ended(tid)
        return done, prior, free

    def _ended(self, task_id: str) -> str | None:
        """Count a task as ended; return "stage:NAME" if that closes its pipeline stage."""
        if not self._stage_left:
            return None
        stage = self.plan.task(task_id).stage
        if stage is None or stage not in self._stage_left:
            return None
        self._stage_left[stage] -= 1
        return f"stage:{stage}" if self._stage_left[stage] == 0 else None

    def _stored_events(self) -> list[dict[str, Any]]:
        if self._events is None:
            self._events = self.store.events(self.run_id) if self.resumed is not None else []
        return self._events

    def missing_success_events(self) -> list[str]:
        """Tasks committed as succeeded whose `task_succeeded` event the crash lost."""
        saved = self.resumed
        if saved is None:
            return []
        have = {e.get("task_id") for e in self._stored_events()
                if e.get("kind") == "task_succeeded"}
        return [tid for tid in saved.outputs if tid not in have]

    def _last_activity(self) -> float:
        """The time of the last thing the run recorded: an event, an attempt's start or end."""
        saved = self.resumed
        assert saved is not None
        latest = 0.0
        for attempts in saved.attempts.values():
            for a in attempts:
                latest = max(latest, a.started_at, a.finished_at or 0.0)
        events = self._stored_events()
        if events:
            latest = max(latest, max(float(e.get("time") or 0.0) for e in events[-1000:]))
        return latest

    def idle_periods(self, now: float) -> tuple[list[tuple[float, float]], list[float] | None]:
        """On resume: the periods the run was not running, earlier resumes' (from their
        `run_started` events' `idle`) and this one's gap, from when the run was last alive
        (see `restore`) or ended (a finished or cancelled run) until `now`. Returns (all of
        them, this gap as [since, until] or None)."""
        saved = self.resumed
        assert saved is not None
        periods = []
        for e in self._stored_events():
            gap = (e.get("data") or {}).get("idle") if e.get("kind") == "run_started" else None
            if isinstance(gap, list) and len(gap) == 2:
                periods.append((float(gap[0]), float(gap[1])))
        since = self._died if self._died is not None else saved.finished_at
        if since is None or since >= now:
            return periods, None
        periods.append((since, now))
        return periods, [round(since, 6), round(now, 6)]

    async def finish(self, status: str, result: RunResult) -> dict[str, Any] | None:
        """Record the result, roll back if asked, release the lease; wait for every write."""
        rollback = None
        if self._batched:
            self._flush()
        result_json = self._result_json(result)  # while the writer thread commits the rest
        if self._batched:
            # The coordination files are fed by the commits: let them catch up first.
            await self.store.wait_committed()
        if self.workspace is not None:
            rollback = await asyncio.to_thread(
                self.workspace.close, status, rollback=self.options.rollback_on_failure)
            rollback = _with_undone(rollback, self._undone)
        now = time.time()
        self.store.submit("run_update", (status, now, now, result_json, self.run_id))
        self.store.release(self.run_id)
        await self.store.wait_committed()
        return rollback

    def _result_json(self, result: RunResult) -> str:
        """The result as stored: a succeeded task is stored as null (every success of a
        durable run, this process's or a crashed one's, has its output row and attempts
        rows, and `RunStore.load_run` puts them back), so a big run dumps no second copy."""
        slim = result.to_dict(include_tasks=False)
        slim["tasks"] = {tid: None if t.status == "succeeded" else t.to_dict()
                         for tid, t in result.tasks.items()}
        slim[TASKS_FROM_TABLES] = True
        return _dumps(slim)

    # -- the batch of this loop turn ---------------------------------------------------------
    def _open_batch(self) -> RunBatch:
        """A new batch. Rows nobody waits for (events, attempt starts, failures) ride with
        the next commit a task waits for, or go after at most _HOLD_SECONDS: one
        transaction per wave of successes rather than one per loop turn."""
        batch = RunBatch(self.run_id)
        batch.loop = self._loop
        self._batch = batch
        if not self._timer_armed:
            self._timer_armed = True
            self._loop.call_later(_HOLD_SECONDS, self._timer)  # type: ignore[union-attr]
        return batch

    def _timer(self) -> None:
        self._timer_armed = False
        self._flush()

    def _flush(self) -> None:
        batch = self._batch
        if batch is None:
            return
        self._batch = None
        batch.workspace = self.workspace
        if batch.future is not None:
            self._in_flight += 1
            batch.future.add_done_callback(self._commit_done)
        self.store.submit_batch(batch)

    def _commit_done(self, _commit: asyncio.Future[None]) -> None:
        self._in_flight -= 1
        batch = self._batch
        if not self._in_flight and batch is not None and batch.future is not None:
            self._flush()

    # -- events and attempts -------------------------------------------------------------
    def record_event(self, seq: int, kind: str, task_id: str | None, attempt: int | None,
                     at: float, message: str | None, data: dict[str, Any] | None) -> None:
        """Record one event from its fields: the executor calls this for every event of the
        run, without building an `Event` object when nobody else listens."""
        if self._batched:
            batch = self._batch or self._open_batch()
            row = (kind, task_id, attempt, at, message, data or None)
            if seq == self._next_seq and batch.chunks:
                batch.chunks[-1][1].append(row)
            else:
                batch.chunks.append([seq, [row]])
            self._next_seq = seq + 1
            if kind in _ENDED:
                batch.others.append(
                    ("task_status", (_ENDED[kind], message, 0, at, self.run_id, task_id)))
                stage = self._ended(task_id)  # type: ignore[arg-type]
                if stage is not None and self.workspace is not None:
                    self.workspace.checkpoint_now([stage])
            return
        event = Event(kind, self.run_id, at, task_id, attempt, message, data,  # type: ignore[arg-type]
                      seq)
        self.store.submit("event", event)
        kind = event.kind
        if self.workspace is not None and kind not in ("task_queued", "task_progress"):
            self.workspace.on_event(event)
        if kind in ("task_failed", "task_skipped", "task_cancelled"):
            status = kind[len("task_"):]
            self.store.submit("task_status", (status, event.message, 0, event.time,
                                              self.run_id, event.task_id))
            stage = self._ended(event.task_id)
            if stage is not None and self.workspace is not None:
                # Rare (once per stage) and must precede the next stage's tasks: take it now.
                self.workspace.checkpoint_now([stage])

    def record_group(self, first_seq: int, kind: str, at: float, task_ids: list[str],
                     attempts: list[int] | None, datas: list[Any] | None) -> None:
        """Record a run of events of one kind and time, numbered from `first_seq`: the
        executor's task_queued/task_started of a pump pass and task_succeeded of a group
        commit. A `task_started` group also records its attempts' starts (at `at`)."""
        if self._batched:
            batch = self._batch or self._open_batch()
            batch.groups.append((first_seq, kind, at, task_ids, attempts, datas))
            self._next_seq = -1  # the next single event opens a new chunk
            return
        for i, task_id in enumerate(task_ids):
            attempt = attempts[i] if attempts is not None else None
            self.record_event(first_seq + i, kind, task_id, attempt, at, None,
                              datas[i] if datas is not None else None)
            if kind == "task_started":
                self.store.submit("attempt_start", (self.run_id, task_id, attempt, at))

    def starts_committed(self) -> asyncio.Future[None]:
        """A future resolved once the attempt starts recorded so far are committed.

        Rows nobody waits for may sit up to _HOLD_SECONDS before they are written. An
        attempt whose work can take the process down with it (a command, an LLM call, any
        agent outside this interpreter's own functions) awaits this first: otherwise a task
        that kills its runner at once would never be counted, and every resume would start
        it again. The starts of one scheduling pass share one commit.
        """
        if self._batched and self._batch is not None:
            return self._awaited(self._batch)  # the starts are in the batch being gathered
        # Already handed to the store: wait for everything queued so far.
        return self.store.commit("noop", ())

    def _awaited(self, batch: RunBatch) -> asyncio.Future[None]:
        """The batch's commit future: someone waits now, so the batch goes at the end of this
        loop turn, or once the commit in flight is done (`_commit_done`)."""
        fut = batch.future
        if fut is None:
            fut = batch.future = CommitFuture(loop=self._loop)
            if not self._in_flight:
                self._loop.call_soon(self._flush)  # type: ignore[union-attr]
        return fut

    def attempt_finished(self, task_id: str, record: AttemptRecord) -> None:
        if record.outcome == "succeeded":
            return  # written in the same transaction as the output, by commit_success
        if self._batched:
            (self._batch or self._open_batch()).attempt_end.append(
                (self.run_id, task_id, record.attempt, record.started_at, record.finished_at,
                 record.outcome, record.error, record.waited or None))
            return
        self.store.submit("attempt_end", (self.run_id, task_id, record.attempt, record.started_at,
                                          record.finished_at, record.outcome, record.error,
                                          record.waited or None))

    # -- the cache -----------------------------------------------------------------------
    def caches(self, task: Any) -> bool:
        return self.options.cache or bool(getattr(task, "cache", False))

    def cache_lookup(self, task: Any, inputs: dict[str, Any], extra: Any = None
                     ) -> tuple[str | None, TaskOutput | None, float]:
        """(key, stored output or None, seconds the original run took). `extra`: what the
        task's agent says its answer depends on (see `cache_key`)."""
        try:
            key = cache_key(task, inputs, extra)
        except (Uncacheable, RecursionError):
            return None, None, 0.0  # run it; its answer is not kept for others either
        hit = self.store.cache_get(key)
        if hit is None:
            return key, None, 0.0
        self.store.submit("cache_hit", (key,))
        return key, TaskOutput(output=hit["output"], usage=hit["usage"], cost_usd=0.0,
                               files=self._restore_files(hit)), float(hit["seconds"])

    def _restore_files(self, hit: dict[str, Any]) -> list[str]:
        """Put the files the cached task wrote back into this run's workspace, as the
        checkpoint taken after it ran holds them: served from the cache, the task leaves
        what a run of it would have left. Returns its file list as it reads in this run;
        a file that cannot be restored (outside its workspace, or not in a checkpoint any
        more) keeps its old name."""
        files = [str(name) for name in hit.get("files") or []]
        source = self.store.run_workspace(hit["run_id"]) if files else None
        if source is None:
            return files
        src = Path(source)
        rels = {name: rel for name in files if (rel := relative_in(src, name)) is not None}
        blobs = blobs_after(src, hit["task_id"], list(rels.values()), hit["run_id"])
        # Written as an LLM's write_file would: nothing outside the workspace, symlinks
        # included, and a file is replaced whole or not at all.
        workspace = FileArea(self.workspace_path)
        restored = []
        for name in files:
            rel = rels.get(name)
            if rel is None or rel not in blobs:
                restored.append(name)
                continue
            try:
                target = workspace.resolve(rel)
                target.parent.mkdir(parents=True, exist_ok=True)
                target = workspace.resolve(rel)  # again: a symlinked parent made meanwhile
                tmp = target.with_name(f".{target.name}.{os.getpid()}.restore")
                tmp.write_bytes(blobs[rel])
                os.replace(tmp, target)
            except (OSError, WorkspaceError):
                restored.append(name)
                continue
            restored.append(str(target) if Path(name).is_absolute() else rel)
        return restored

    def commit_success(self, task_id: str, record: AttemptRecord, result: TaskResult,
                       key: str | None, cached: bool, original_cost: float) -> asyncio.Future[None]:
        """Queue the output, the cache entry and the checkpoint after the task, as one unit.

        The returned future resolves once all of it is committed: only then may the executor
        acknowledge the success (and the task's dependents start).
        """
        now = time.time()
        if self._batched:
            batch = self._batch or self._open_batch()
            # Empty usage/files travel as None: the row is then plain values (see RunBatch).
            # One row gives the output and the attempt's end; the writer labels the
            # checkpoint after the task ("after:ID") from it too.
            usage, files = result.usage or None, result.files or None
            batch.success.append((self.run_id, task_id, record.attempt, result.output, usage,
                                  result.cost_usd, files, key, cached, now, record.started_at,
                                  record.finished_at, record.waited))
            if key is not None and not cached:
                batch.cache_put.append((key, self.run_id, task_id, result.output, usage,
                                        original_cost, files, record.duration, now))
            if self._stage_left:
                stage = self._ended(task_id)
                if stage is not None:
                    batch.labels.append(stage)
            return self._awaited(batch)
        rows: dict[str, tuple] = {
            "attempt_end": (self.run_id, task_id, record.attempt, record.started_at,
                            record.finished_at, "succeeded", None, record.waited or None),
            # No `tasks` status row for a success: the output row is the proof of success
            # (one statement less per task; readers derive "succeeded" from `outputs`).
            "output": (self.run_id, task_id, record.attempt, result.output, result.usage,
                       result.cost_usd, result.files, key, cached, now),
        }
        if key is not None and not cached:
            rows["cache_put"] = (key, self.run_id, task_id, result.output, result.usage,
                                 original_cost, result.files, record.duration, now)
        if self.workspace is not None:
            labels = [f"after:{task_id}"]
            stage = self._ended(task_id)
            if stage is not None:
                labels.append(stage)
            rows["checkpoint"] = (self.workspace, labels)
        # One queue item, so the writer commits all of it in one transaction or none of it.
        return self.store.commit("success", rows)  # type: ignore[arg-type]
