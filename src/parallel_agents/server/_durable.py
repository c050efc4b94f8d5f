"""The gateway over the durable run store: executions that survive a server restart.

With a store, every execution is a durable run (`Executor(store=...)`), so
`parallel-agents status/list/resume` see server runs, and the store keeps their events. What
the gateway adds per execution (owner, session, project, the tasks as clients see them, the
estimate, and the final result with the coordinator's answer) lives in the store's
`gateway_executions` table.

Running executions are also kept in memory (`MemoryExecutionStore`): live SSE streams read
from there, never waiting on a disk write. Past executions are read back from SQLite.

Secrets: the store is wrapped by `RedactingRunStore`, which masks every known secret in every
row *before* it is queued for writing, so neither the plan (task `env` values), nor events,
outputs, errors or results reach the file unmasked.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
from collections.abc import Iterable
from typing import Any

from ..store import RunStore, StoreError
from ..store.sqlite import RunBatch
from ._manager import _jsonable
from ._redact import Redactor
from ._store import ExecutionRecord, MemoryExecutionStore

__all__ = ["DurableExecutionStore", "RedactingRunStore"]


class RedactingRunStore(RunStore):
    """A `RunStore` that masks secrets in everything before it is written.

    One redactor for the whole file: the server's own secrets plus every plan's secret `env`
    values (added by the gateway as executions start). Masking one execution's secret in
    another's data is harmless; missing one is not. JSON-escaped forms of each secret are
    masked too, for rows that arrive already serialised.
    """

    def __init__(self, path: Any, *, redactor: Redactor, **options: Any) -> None:
        super().__init__(path, **options)
        self.redactor = redactor

    def add_secrets(self, secrets: Iterable[str]) -> None:
        values = [s for s in secrets if s]
        self.redactor.add([*values, *(json.dumps(s)[1:-1] for s in values)])

    def _clean(self, value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):  # an Event
            return dataclasses.replace(value, message=self.redactor(value.message),  # type: ignore[arg-type]
                                       data=self.redactor(_jsonable(value.data)))
        if isinstance(value, tuple):
            return tuple(self._clean(v) for v in value)
        if isinstance(value, (str, dict, list)):
            return self.redactor(_jsonable(value))
        if value is None or isinstance(value, (int, float, bool)):
            return value
        if hasattr(value, "checkpoint_now"):  # a Workspace riding with a checkpoint row
            return value
        return self.redactor(_jsonable(value))

    def submit(self, kind: str, row: tuple) -> None:
        super().submit(kind, self._clean(row))

    def commit(self, kind: str, row: Any) -> Any:
        if kind == "success":
            row = {k: v if k == "checkpoint" else self._clean(v) for k, v in row.items()}
        else:
            row = self._clean(row)
        return super().commit(kind, row)

    # Batches (the executor's fast path) are masked here too, row by row, before the writer
    # thread (and the workspace files it feeds) ever sees them.
    takes_batches = True  # type: ignore[assignment]

    def submit_batch(self, batch: RunBatch) -> None:
        clean = self._clean
        for chunk in batch.chunks:
            chunk[1] = [clean(row) for row in chunk[1]]
        for name in ("attempt_start", "attempt_end", "success", "cache_put"):
            rows = getattr(batch, name)
            if rows:
                setattr(batch, name, [clean(row) for row in rows])
        batch.others = [(kind, clean(row)) for kind, row in batch.others]
        batch.groups = [clean(group) for group in batch.groups]
        super().submit_batch(batch)

    def create_run(self, run_id: str, *, plan_name: str, plan_json: dict[str, Any],
                   options: dict[str, Any], has_callables: bool, workspace: str | None,
                   tasks: Iterable[tuple[str, str]] | None = None) -> None:
        super().create_run(run_id, plan_name=self.redactor(plan_name),
                           plan_json=self.redactor(plan_json),
                           options=self.redactor(options), has_callables=has_callables,
                           workspace=workspace, tasks=tasks)


_COLUMNS = ("id, owner, session_key, project, plan_name, tasks_json, created_at, "
            "estimated_duration, status, finished_at, result_json")


class DurableExecutionStore:
    """`ExecutionStore` over a `RunStore` file (see the module docstring)."""

    def __init__(self, store: RunStore, *, max_finished_in_memory: int = 1000) -> None:
        self.store = store
        self.memory = MemoryExecutionStore(max_finished=max_finished_in_memory)
        self._conn = sqlite3.connect(store.path, timeout=30.0, check_same_thread=False,
                                     isolation_level=None)
        self._conn.execute("PRAGMA busy_timeout=30000")
        # As durable as the store's own writes (WAL; `normal` survives a crash of the process).
        self._conn.execute(f"PRAGMA synchronous={store.durability.upper()}")
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _execute(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._conn.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"the gateway cannot use the store {self.store.path}: "
                                 f"{exc}") from None

    # -- writes (already redacted by the manager) ----------------------------------------
    def create(self, record: ExecutionRecord) -> None:
        self.memory.create(record)
        self._execute(
            f"INSERT INTO gateway_executions ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (record.execution_id, record.owner, record.session_key, record.project,
             record.plan_name, json.dumps(record.tasks), record.created_at,
             record.estimated_duration, record.status, None, None))

    def append_events(self, execution_id: str, events: Iterable[dict[str, Any]]) -> None:
        # The executor's durable run writes the events to the store itself.
        self.memory.append_events(execution_id, events)

    def finish(self, execution_id: str, status: str, finished_at: float,
               result: dict[str, Any]) -> None:
        self._execute("UPDATE gateway_executions SET status = ?, finished_at = ?, "
                      "result_json = ? WHERE id = ?",
                      (status, finished_at, json.dumps(result, default=repr), execution_id))
        self.memory.finish(execution_id, status, finished_at, result)

    # -- reads ---------------------------------------------------------------------------
    def get(self, execution_id: str) -> ExecutionRecord | None:
        record = self.memory.get(execution_id)
        if record is not None:
            return record
        rows = self._execute(f"SELECT {_COLUMNS} FROM gateway_executions WHERE id = ?",
                             (execution_id,))
        if not rows:
            return None
        record = self._record(rows[0])
        record.events = self.store.events(execution_id)
        return record

    def _record(self, row: tuple) -> ExecutionRecord:
        (eid, owner, session_key, project, plan_name, tasks, created, estimate, status,
         finished, result) = row
        stored_result = json.loads(result) if result else None
        if status == "running" and self.memory.get(eid) is None:
            # Started by a server that stopped before the run ended. The run's own row says
            # more: `interrupted` (resume it with `parallel-agents resume ID`), or the end of
            # such a resumed run.
            status, finished, stored_result = self._run_state(eid)
        elif status != "succeeded" and self._run_moved_on(eid, finished):
            # Ended here (cancelled by a shutdown, failed), then resumed from the CLI: the
            # run's own row has the newer state.
            status, finished, stored_result = self._run_state(eid)
        return ExecutionRecord(
            execution_id=eid, owner=owner, session_key=session_key, project=project,
            plan_name=plan_name, tasks=json.loads(tasks), created_at=created,
            estimated_duration=estimate, status=status, finished_at=finished,
            result=stored_result)

    def _run_moved_on(self, execution_id: str, finished: float | None) -> bool:
        """Whether the run changed after the gateway recorded its end (one indexed read): the
        run's own end is written before the gateway's, so a later change is a resume."""
        rows = self._execute("SELECT updated_at FROM runs WHERE id = ?", (execution_id,))
        return bool(rows) and finished is not None and (rows[0][0] or 0) > finished

    def _run_state(self, execution_id: str
                   ) -> tuple[str, float | None, dict[str, Any] | None]:
        try:
            run = self.store.load_run(execution_id)
        except StoreError:
            return "interrupted", None, None  # the server stopped before the run began
        status = run.display_status()
        if status in ("running", "interrupted"):
            # Not finished (resumed right now by another process, or waiting for a resume):
            # no result yet, but the tasks as the store has them.
            return status, None, {"tasks": run.task_states()}
        return status, run.finished_at, run.result

    def events_after(self, execution_id: str, seq: int, limit: int = 1000
                     ) -> list[dict[str, Any]]:
        if self.memory.get(execution_id) is not None:
            return self.memory.events_after(execution_id, seq, limit)
        return self.store.events_after(execution_id, seq, limit)

    def list(self, *, owner: str | None, all_owners: bool, session_key: str | None,
             offset: int, limit: int) -> tuple[list[ExecutionRecord], int]:
        where, args = [], []
        if not all_owners:
            where.append("owner IS ?")
            args.append(owner)
        if session_key is not None:
            where.append("session_key = ?")
            args.append(session_key)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        total = self._execute(f"SELECT COUNT(*) FROM gateway_executions{clause}",
                              tuple(args))[0][0]
        rows = self._execute(
            f"SELECT {_COLUMNS} FROM gateway_executions{clause} "
            f"ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?", (*args, limit, offset))
        out = []
        for row in rows:
            live = self.memory.get(row[0])
            out.append(live if live is not None else self._record(row))
        return out, total
