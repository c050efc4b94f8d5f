"""Where the HTTP gateway keeps executions: the seam the durable SQLite store plugs into.

The gateway only needs five operations on stored executions (create, append events, finish,
read, list), so it talks to this small protocol rather than to a database. The in-memory
implementation below is the default of `parallel-agents serve` until the durable store
implements the same protocol; then a restart of the server no longer forgets past runs.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["ExecutionRecord", "ExecutionStore", "MemoryExecutionStore"]

#: Statuses an execution goes through; the last four are final (as in `RunResult.status`).
EXECUTION_STATUSES = ("running", "succeeded", "partial", "failed", "cancelled")


@dataclass(slots=True)
class ExecutionRecord:
    """One execution as stored: who owns it, what it runs, its events and its final result.

    `tasks` is the plan's task list as shown to clients (secrets already removed); `result`
    is `RunResult.to_dict()` once the run has ended.
    """

    execution_id: str
    owner: str | None  # the session that created it; None = the operator token / no auth
    session_key: str | None
    project: str | None
    plan_name: str
    tasks: list[dict[str, Any]]
    created_at: float
    estimated_duration: float
    status: str = "running"
    finished_at: float | None = None
    result: dict[str, Any] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.status != "running"


class ExecutionStore(Protocol):
    """What the gateway needs from a store. Implementations must keep events in `seq` order."""

    def create(self, record: ExecutionRecord) -> None: ...

    def append_events(self, execution_id: str, events: Iterable[dict[str, Any]]) -> None: ...

    def finish(self, execution_id: str, status: str, finished_at: float,
               result: dict[str, Any]) -> None: ...

    def get(self, execution_id: str) -> ExecutionRecord | None: ...

    def events_after(self, execution_id: str, seq: int, limit: int = 1000
                     ) -> list[dict[str, Any]]: ...

    def list(self, *, owner: str | None, all_owners: bool, session_key: str | None,
             offset: int, limit: int) -> tuple[list[ExecutionRecord], int]: ...


class MemoryExecutionStore:
    """Keeps everything in this process. Fast, and forgotten when the server stops.

    At most `max_finished` finished executions are kept (oldest dropped first), so a server
    that runs for weeks does not grow without bound; running ones are never dropped.
    """

    def __init__(self, max_finished: int = 10_000) -> None:
        self.max_finished = max_finished
        self._finished: dict[str, None] = {}  # insertion-ordered: oldest first
        self._records: dict[str, ExecutionRecord] = {}
        # The gateway calls from its event loop only; the lock makes direct use from other
        # threads (tests, an embedding application) safe too.
        self._lock = threading.Lock()

    def create(self, record: ExecutionRecord) -> None:
        with self._lock:
            if record.execution_id in self._records:
                raise ValueError(f"execution {record.execution_id!r} already exists")
            self._records[record.execution_id] = record

    def append_events(self, execution_id: str, events: Iterable[dict[str, Any]]) -> None:
        with self._lock:
            self._records[execution_id].events.extend(events)

    def finish(self, execution_id: str, status: str, finished_at: float,
               result: dict[str, Any]) -> None:
        with self._lock:
            record = self._records[execution_id]
            record.status = status
            record.finished_at = finished_at
            record.result = result
            self._finished[execution_id] = None
            while len(self._finished) > self.max_finished:
                oldest = next(iter(self._finished))
                del self._finished[oldest]
                self._records.pop(oldest, None)

    def get(self, execution_id: str) -> ExecutionRecord | None:
        return self._records.get(execution_id)

    def events_after(self, execution_id: str, seq: int, limit: int = 1000
                     ) -> list[dict[str, Any]]:
        record = self._records.get(execution_id)
        if record is None:
            return []
        # Events are in seq order (a resumed run's seqs need not start at 1): bisect.
        start = bisect.bisect_right(record.events, seq, key=lambda e: e["seq"])
        return record.events[start:start + limit]

    def list(self, *, owner: str | None, all_owners: bool, session_key: str | None,
             offset: int, limit: int) -> tuple[list[ExecutionRecord], int]:
        with self._lock:
            rows = [r for r in self._records.values()
                    if (all_owners or r.owner == owner)
                    and (session_key is None or r.session_key == session_key)]
        rows.sort(key=lambda r: (r.created_at, r.execution_id), reverse=True)
        return rows[offset:offset + limit], len(rows)
