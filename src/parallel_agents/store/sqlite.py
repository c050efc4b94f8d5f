"""The run store: one SQLite file in WAL mode holding runs, tasks, attempts, events, outputs
and the result cache.

Writes go through one dedicated writer thread fed by a queue. Why a thread rather than
`asyncio.to_thread` per write or writing on the loop: a task's success must wait for its output
to be committed, and many tasks finish at nearly the same moment. The writer drains everything
queued since its last commit into ONE transaction (group commit), so a hundred concurrent
successes cost one commit, and the asyncio loop only ever pays for a `queue.put`. Events,
attempt starts and status changes ride along in the same batches without anyone waiting.

A run's own rows come as `RunBatch`es (built by `DurableRun` with list appends, handed over
with one `queue.put`, acknowledged through one shared `CommitFuture`, one commit in flight per
run). Events of one kind and time (a scheduling pass's queued or started tasks, one commit's
successes) are stored as one `event_groups` row, the others of a batch as one `event_chunks`
row; the `events` view shows them one row per event. Rows go in with multi-row INSERTs (see
`_insert_rows` for why not `executemany`). The writer also feeds the run workspace's
coordination files from each committed batch, so the loop never touches them per event.

Durability: WAL with `synchronous=NORMAL` survives the process dying at any instant (SIGKILL,
OOM, a crash): a committed transaction is in the WAL file, which the next open replays. Only
an OS crash or power loss may lose the last few commits; `durability="full"` fsyncs every
commit for that case, at a price measured by `benchmarks/durability.py`.

Reads (resume, `status`, `list`, cache look-ups) use a second connection; WAL lets them run
while the writer writes.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import queue
import socket
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._exceptions import RunLockedError, StoreError

__all__ = ["RunStore", "RunBatch", "CommitFuture", "StoredRun", "StoredAttempt", "SCHEMA_VERSION", "APPLICATION_ID",
           "LEASE_STALE_SECONDS"]

#: `PRAGMA application_id` of our files ("PAGS"): how we tell our store from another app's.
APPLICATION_ID = 0x50414753
_SQLITE_MAGIC = b"SQLite format 3\x00"
#: A lease whose heartbeat is older than this is abandoned, even if its pid looks alive.
LEASE_STALE_SECONDS = 30.0
_HEARTBEAT_SECONDS = 2.0
# WAL checkpoints: SQLite's automatic one runs inside the commit that crosses 1,000 pages,
# ~15 ms on the path of whoever waits for that commit (often a run's very last one). The
# writer checkpoints when it has been idle for _IDLE_SECONDS instead; the automatic one
# stays as a backstop, at a size (about 40 MB) a store that is never idle still bounds.
_IDLE_SECONDS = 0.1
_WAL_BACKSTOP_PAGES = 10_000
_BATCH_LIMIT = 20_000

# Each entry migrates the schema from version i to i+1. Never edit a released entry: append.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE runs (
        id            TEXT PRIMARY KEY,
        plan_name     TEXT NOT NULL,
        plan_json     TEXT NOT NULL,
        options_json  TEXT NOT NULL,
        has_callables INTEGER NOT NULL DEFAULT 0,
        status        TEXT NOT NULL,
        created_at    REAL NOT NULL,
        updated_at    REAL NOT NULL,
        finished_at   REAL,
        result_json   TEXT,
        workspace     TEXT,
        owner_pid     INTEGER,
        owner_host    TEXT,
        heartbeat_at  REAL
    );
    CREATE TABLE tasks (
        run_id     TEXT NOT NULL,
        task_id    TEXT NOT NULL,
        position   INTEGER NOT NULL,
        pool       TEXT NOT NULL,
        status     TEXT NOT NULL,
        error      TEXT,
        cached     INTEGER NOT NULL DEFAULT 0,
        updated_at REAL,
        PRIMARY KEY (run_id, task_id)
    ) WITHOUT ROWID;
    CREATE TABLE attempts (
        run_id      TEXT NOT NULL,
        task_id     TEXT NOT NULL,
        attempt     INTEGER NOT NULL,
        started_at  REAL NOT NULL,
        finished_at REAL,
        outcome     TEXT NOT NULL,
        error       TEXT,
        PRIMARY KEY (run_id, task_id, attempt)
    ) WITHOUT ROWID;
    CREATE TABLE events (
        run_id    TEXT NOT NULL,
        seq       INTEGER NOT NULL,
        kind      TEXT NOT NULL,
        task_id   TEXT,
        attempt   INTEGER,
        time      REAL NOT NULL,
        message   TEXT,
        data_json TEXT,
        PRIMARY KEY (run_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE outputs (
        run_id       TEXT NOT NULL,
        task_id      TEXT NOT NULL,
        attempt      INTEGER NOT NULL,
        output_json  TEXT NOT NULL,
        usage_json   TEXT NOT NULL,
        cost_usd     REAL NOT NULL,
        files_json   TEXT NOT NULL,
        cache_key    TEXT,
        cached       INTEGER NOT NULL DEFAULT 0,
        committed_at REAL NOT NULL,
        PRIMARY KEY (run_id, task_id)
    ) WITHOUT ROWID;
    CREATE TABLE cache (
        key          TEXT PRIMARY KEY,
        run_id       TEXT NOT NULL,
        task_id      TEXT NOT NULL,
        output_json  TEXT NOT NULL,
        usage_json   TEXT NOT NULL,
        cost_usd     REAL NOT NULL,
        files_json   TEXT NOT NULL,
        seconds      REAL NOT NULL,
        created_at   REAL NOT NULL,
        hits         INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX runs_by_created ON runs (created_at);
    """,
    # 2: the HTTP gateway's view of its executions (parallel_agents.server._durable): who
    # owns each, its session and project, the tasks as clients see them, and the final result
    # with the coordinator's answer. Values are redacted before they are written.
    """
    CREATE TABLE gateway_executions (
        id                 TEXT PRIMARY KEY,
        owner              TEXT,
        session_key        TEXT,
        project            TEXT,
        plan_name          TEXT NOT NULL,
        tasks_json         TEXT NOT NULL,
        created_at         REAL NOT NULL,
        estimated_duration REAL NOT NULL,
        status             TEXT NOT NULL,
        finished_at        REAL,
        result_json        TEXT
    );
    CREATE INDEX gateway_executions_by_created ON gateway_executions (created_at);
    """,
    # 3: events are written in chunks, one row per group commit of a run (a JSON array of
    # [kind, task_id, attempt, time, message, data] per event; seq = first_seq + index):
    # one insert and one JSON encoding per batch instead of one of each per event. Rows
    # written one by one (older stores, stores that redact each row) stay in `event_rows`;
    # the `events` view shows both, one row per event, as the old table did.
    """
    ALTER TABLE events RENAME TO event_rows;
    CREATE TABLE event_chunks (
        run_id    TEXT NOT NULL,
        first_seq INTEGER NOT NULL,
        last_seq  INTEGER NOT NULL,
        body      TEXT NOT NULL,
        PRIMARY KEY (run_id, first_seq)
    ) WITHOUT ROWID;
    CREATE VIEW events (run_id, seq, kind, task_id, attempt, time, message, data_json) AS
        SELECT run_id, seq, kind, task_id, attempt, time, message, data_json FROM event_rows
        UNION ALL
        SELECT c.run_id, c.first_seq + j.key, json_extract(j.value, '$[0]'),
               json_extract(j.value, '$[1]'), json_extract(j.value, '$[2]'),
               json_extract(j.value, '$[3]'), json_extract(j.value, '$[4]'),
               json_extract(j.value, '$[5]')
        FROM event_chunks c, json_each(c.body) j;
    """,
    # 4: events that come in runs of one kind (a pump pass queuing or starting tasks, a group
    # commit acknowledging successes) are stored as one `event_groups` row: one time, the task
    # ids, and per task an attempt and data only where they differ from the group's. A body
    # item is a task id (attempt = the row's `attempt`, no data) or [task_id, attempt, data].
    # The writer derives the started attempts' rows from the same group, so a task's three
    # lifecycle events cost the event loop three list appends. The view shows them too.
    """
    CREATE TABLE event_groups (
        run_id    TEXT NOT NULL,
        first_seq INTEGER NOT NULL,
        last_seq  INTEGER NOT NULL,
        kind      TEXT NOT NULL,
        time      REAL NOT NULL,
        attempt   INTEGER,
        body      TEXT NOT NULL,
        PRIMARY KEY (run_id, first_seq)
    ) WITHOUT ROWID;
    DROP VIEW events;
    CREATE VIEW events (run_id, seq, kind, task_id, attempt, time, message, data_json) AS
        SELECT run_id, seq, kind, task_id, attempt, time, message, data_json FROM event_rows
        UNION ALL
        SELECT c.run_id, c.first_seq + j.key, json_extract(j.value, '$[0]'),
               json_extract(j.value, '$[1]'), json_extract(j.value, '$[2]'),
               json_extract(j.value, '$[3]'), json_extract(j.value, '$[4]'),
               json_extract(j.value, '$[5]')
        FROM event_chunks c, json_each(c.body) j
        UNION ALL
        SELECT g.run_id, g.first_seq + j.key, g.kind,
               CASE j.type WHEN 'text' THEN j.value ELSE json_extract(j.value, '$[0]') END,
               CASE j.type WHEN 'text' THEN g.attempt ELSE json_extract(j.value, '$[1]') END,
               g.time, NULL,
               CASE j.type WHEN 'text' THEN NULL ELSE json_extract(j.value, '$[2]') END
        FROM event_groups g, json_each(g.body) j;
    """,
    # 5: seconds an attempt waited for a shared resource rather than working (an LLM call
    # queued for a model that serves one call at a time): the run's serial time, speedup and
    # critical path leave it out, also after a resume. NULL (rows written before): none.
    """
    ALTER TABLE attempts ADD COLUMN waited REAL;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)

# The writer applies a batch table by table in this order. An attempt's end (INSERT OR
# REPLACE) goes before its start (INSERT OR IGNORE): a start in the same batch as its end
# then writes nothing, one in an earlier batch is replaced.
_SQL: dict[str, str] = {
    # A resumed run starts again (first: its end, `run_update` below, may be in the batch).
    "resumed": "UPDATE runs SET status = 'running', updated_at = ? WHERE id = ?",
    # A streamed plan grew (before its new tasks' rows, below, which read it).
    "plan_update": "UPDATE runs SET plan_json = ?, has_callables = ? WHERE id = ?",
    # A run's task rows, from its stored plan (INSERT OR IGNORE: also repairs a run whose
    # process died before they were written; resume queues it again).
    "plan_tasks": "INSERT OR IGNORE INTO tasks (run_id, task_id, position, pool, status) "
                  "SELECT r.id, json_extract(j.value, '$.id'), j.key, "
                  "COALESCE(json_extract(j.value, '$.pool'), 'default'), 'pending' "
                  "FROM runs r, json_each(r.plan_json, '$.tasks') j WHERE r.id = ?",
    "event": "INSERT OR IGNORE INTO event_rows (run_id, seq, kind, task_id, attempt, time, message, "
             "data_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    "event_chunk": "INSERT OR IGNORE INTO event_chunks (run_id, first_seq, last_seq, body) "
                   "VALUES (?, ?, ?, ?)",
    "event_group": "INSERT OR IGNORE INTO event_groups (run_id, first_seq, last_seq, kind, time, "
                   "attempt, body) VALUES (?, ?, ?, ?, ?, ?, ?)",
    "attempt_end": "INSERT OR REPLACE INTO attempts (run_id, task_id, attempt, started_at, "
                   "finished_at, outcome, error, waited) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    # A success: its attempt's end, then its output (see RunBatch); two statements.
    "success": "",
    # After the ends: a start whose attempt ended in the same batch is then ignored.
    "attempt_start": "INSERT OR IGNORE INTO attempts (run_id, task_id, attempt, started_at, "
                     "outcome) VALUES (?, ?, ?, ?, 'running')",
    "output": "INSERT OR REPLACE INTO outputs (run_id, task_id, attempt, output_json, usage_json, "
              "cost_usd, files_json, cache_key, cached, committed_at) "
              "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "cache_put": "INSERT OR REPLACE INTO cache (key, run_id, task_id, output_json, usage_json, "
                 "cost_usd, files_json, seconds, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "cache_hit": "UPDATE cache SET hits = hits + 1 WHERE key = ?",
    "task_status": "UPDATE tasks SET status = ?, error = ?, cached = ?, updated_at = ? "
                   "WHERE run_id = ? AND task_id = ?",
    "run_update": "UPDATE runs SET status = ?, updated_at = ?, finished_at = ?, result_json = ? "
                  "WHERE id = ?",
    # Keys a caller adds to a finished run's result: merged in Python (see _apply), not with
    # SQLite's json_patch, which would drop keys whose value is null.
    "result_extras": "UPDATE runs SET result_json = ? WHERE id = ?",
    "heartbeat": "UPDATE runs SET heartbeat_at = ? WHERE id = ? AND owner_pid = ?",
    "release": "UPDATE runs SET owner_pid = NULL, owner_host = NULL, heartbeat_at = NULL "
               "WHERE id = ? AND owner_pid = ?",
}
_ORDER = list(_SQL)


# Many rows are inserted with multi-row statements, INSERT ... VALUES (...), (...), ...,
# not with `executemany`. Why: `executemany` releases the GIL around each row's step and
# must win it back for the next row, and while the event loop runs Python it gets it back
# only when the loop is forced to give it up (sys.getswitchinterval(), 5 ms): a 10,000-row
# batch then crawls exactly while the run is busiest. A multi-row statement binds its values
# in C and then runs without the GIL, on the other core: one wait for the GIL per statement.
# Statement sizes are powers of two (a few texts, kept by the statement cache); an INSERT
# OR IGNORE / OR REPLACE pads its last statement by repeating its last row, which changes
# nothing, so a batch usually takes one statement per table.
_MAX_ROWS_PER_STATEMENT = 2048
_MAX_VARIABLES = 32_766  # SQLite's default since 3.32 (999 before); see _insert_rows


def _values_sql(sql: str, rows: int) -> str:
    head, _, row = sql.partition(" VALUES ")
    return f"{head} VALUES {','.join([row] * rows)}"


def _insert_rows(conn: sqlite3.Connection, sql: str, rows: Iterable[tuple]) -> None:
    """`conn.executemany(sql, rows)` for an `INSERT ... VALUES (row)` statement, as
    multi-row statements. `rows` may be a generator: at most one statement's rows are
    alive at a time (10^4 tuples alive at once cost the caller garbage collections)."""
    it = iter(rows)
    first = next(it, None)
    if first is None:
        return
    limit = _MAX_ROWS_PER_STATEMENT
    while limit * max(1, len(first)) > _variable_limit(conn):
        limit //= 2
    it = itertools.chain((first,), it)
    pad = sql.startswith(("INSERT OR IGNORE", "INSERT OR REPLACE"))
    chain = itertools.chain.from_iterable
    while part := list(itertools.islice(it, limit)):
        n, i = len(part), 0
        while i < n:
            left = n - i
            size = limit if left >= limit else 1 << (left - 1).bit_length()
            if size > left and not pad:
                size = 1 << (left.bit_length() - 1)  # the largest power of two that fits
            rows_now = part[i:i + size]
            if len(rows_now) < size:
                rows_now += [rows_now[-1]] * (size - len(rows_now))
            conn.execute(_values_sql(sql, size), list(chain(rows_now)))
            i += size


_variables: list[int] = []  # the SQLite library's limit, read once


def _variable_limit(conn: sqlite3.Connection) -> int:
    if not _variables:
        try:
            got = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        except (AttributeError, sqlite3.Error):
            got = 999
        _variables.append(min(got, _MAX_VARIABLES))
    return _variables[0]


_SUCCESS_ATTEMPT = ("INSERT OR REPLACE INTO attempts (run_id, task_id, attempt, started_at, "
                    "finished_at, outcome, error, waited) "
                    "VALUES (?, ?, ?, ?, ?, 'succeeded', NULL, ?)")
#: Inserted with `_insert_rows`.
_MULTI_ROW = frozenset({"event", "event_chunk", "event_group", "attempt_start", "attempt_end",
                        "output", "cache_put"})
#: Key of a stored result whose succeeded tasks are null: rebuilt from the tables on load.
TASKS_FROM_TABLES = "_tasks_from_tables"


def _damage(exc: BaseException) -> bool:
    """Whether SQLite says the file itself is damaged (SQLITE_CORRUPT, SQLITE_NOTADB)."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (11, 26)
    return "malformed" in str(exc) or "not a database" in str(exc)


def _first_seq(entry: Any) -> int:
    return entry[0]


def _dumps(value: Any) -> str:
    return _ENCODE(value)


def _dump_value(value: Any) -> str:
    """`_dumps`, with the common trivial values (None, {}, [], a string) done without the
    encoder's per-call set-up: three of these per committed output."""
    if value is None:
        return "null"
    kind = type(value)
    if kind is str:
        return _encode_str(value)
    if (kind is dict or kind is list) and not value:
        return "{}" if kind is dict else "[]"
    return _ENCODE(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, (set, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    return repr(value)


_ENCODE = json.JSONEncoder(default=_json_default, separators=(",", ":")).encode
_encode_str = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK) and os.access(path.resolve().parent, os.W_OK)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A killed runner stays a zombie until its parent reaps it (a shell, a test harness):
    # it runs nothing, and its run may be resumed at once.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rpartition(")")[2].split()[:1] != ["Z"]
    except OSError:
        return True  # no /proc (not Linux): signal 0 is all we know


@dataclass(slots=True)
class StoredAttempt:
    attempt: int
    started_at: float
    finished_at: float | None
    outcome: str
    error: str | None
    waited: float = 0.0


@dataclass(slots=True)
class StoredRun:
    """Everything resume needs to continue a run, as the store has it."""

    id: str
    plan_name: str
    plan: dict[str, Any]
    options: dict[str, Any]
    has_callables: bool
    status: str
    created_at: float
    updated_at: float
    finished_at: float | None
    workspace: str | None
    owner_pid: int | None
    owner_host: str | None
    heartbeat_at: float | None
    result: dict[str, Any] | None
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    attempts: dict[str, list[StoredAttempt]] = field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_seq: int = 0
    #: When the process that ran it before was last seen alive (its last heartbeat), if it
    #: died holding the run: attempts it left running are taken to have ended then.
    last_alive: float | None = None

    def owner_state(self) -> str:
        """`none`, `alive` (a live process holds the lease) or `dead` (crashed holder)."""
        if self.owner_pid is None:
            return "none"
        stale = self.heartbeat_at is None or time.time() - self.heartbeat_at > LEASE_STALE_SECONDS
        if self.owner_host == socket.gethostname() and not pid_alive(self.owner_pid):
            return "dead"
        return "dead" if stale else "alive"

    def task_states(self) -> dict[str, dict[str, Any]]:
        """Each task as the store has it, in plan order: `succeeded` once its output is
        committed; a task whose last attempt was left running is `running` while its owner
        is alive, else `interrupted`. Succeeded tasks carry their `output`."""
        alive = self.owner_state() == "alive"
        states: dict[str, dict[str, Any]] = {}
        for tid, info in self.tasks.items():
            attempts = self.attempts.get(tid, [])
            out = self.outputs.get(tid)
            status = "succeeded" if out is not None else info["status"]
            if status == "pending" and attempts and attempts[-1].outcome == "running":
                status = "running" if alive else "interrupted"
            state: dict[str, Any] = {
                "status": status, "pool": info["pool"], "attempts": len(attempts),
                "cached": bool(info["cached"] or (out or {}).get("cached")),
                "error": info["error"],
                "started_at": attempts[0].started_at if attempts else None,
                "finished_at": attempts[-1].finished_at if attempts else None}
            if out is not None:
                state["output"] = out["output"]
            states[tid] = state
        return states

    def display_status(self) -> str:
        if self.status == "running" and self.owner_state() != "alive":
            return "interrupted"
        return self.status


class _Batch:
    __slots__ = ("rows", "futures", "hooks", "applied")

    def __init__(self) -> None:
        self.rows: dict[str, list[tuple]] = {}
        self.futures: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self.hooks: dict[Any, list[str]] = {}
        # workspace -> its runs' event entries: fed to the coordination files once committed.
        self.applied: dict[Any, list[Any]] = {}


class CommitFuture(asyncio.Future):  # type: ignore[type-arg]
    """A future several waiters share (one per group commit, not one per task).

    Cancelling one waiter must not cancel the commit the others wait for, so `cancel()`
    refuses: a task cancelled while it awaits this future gets its CancelledError once the
    commit has happened (asyncio's rule for a future that cannot be cancelled).
    """

    def cancel(self, msg: Any = None) -> bool:
        return False


class RunBatch:
    """Everything one run queued during one turn of its event loop, handed over as one item.

    Built by `DurableRun` on the loop thread (plain list appends, no lock, no per-row queue
    traffic) and written by the writer thread in the next group commit. `chunks` holds
    [first_seq, rows] runs of consecutive events, each row (kind, task_id, attempt, time,
    message, data or None): each becomes one `event_chunks` row. `groups` holds runs of
    events of one kind and time, (first_seq, kind, time, task_ids, attempts, datas) with
    attempts and datas lists (or None), each becomes one `event_groups` row; a
    `task_started` group also inserts its attempts' rows. Rows are tuples of plain
    values, which the garbage collector stops tracking at its first pass (Event objects
    kept until the writer's turn would be promoted and make full collections more frequent).
    `success` rows are an `output` row plus the attempt's started_at, finished_at and waited: the
    writer takes the output and the attempt's end from one row. The other lists hold rows
    shaped like the `_SQL` entry of the same name. An output's or cache entry's empty
    usage/files may be None; `others` holds (kind, row).
    """

    __slots__ = ("run_id", "chunks", "groups", "attempt_start", "attempt_end", "success",
                 "cache_put", "others", "workspace", "labels", "loop", "future")

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.chunks: list[list[Any]] = []
        self.groups: list[tuple[Any, ...]] = []
        self.attempt_start: list[tuple] = []
        self.attempt_end: list[tuple] = []
        self.success: list[tuple] = []
        self.cache_put: list[tuple] = []
        self.others: list[tuple[str, tuple]] = []
        self.workspace: Any = None
        self.labels: list[str] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.future: asyncio.Future[None] | None = None


class RunStore:
    """A parallel-agents store file. Open it with `RunStore(path)`; close it with `close()`.

    Opening validates the file first: a text file, another application's SQLite database or a
    store written by a newer version raises `StoreError` and the file is left untouched.
    """

    def __init__(self, path: str | os.PathLike[str], *, durability: str = "normal") -> None:
        if durability not in ("normal", "full"):
            raise StoreError(f"durability must be 'normal' or 'full', got {durability!r}")
        self.path = Path(path)
        self.durability = durability
        self._read = self._open_validated()
        self._read_lock = threading.RLock()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._writer_error: BaseException | None = None
        # Set once a write finds the file damaged: nothing more is written to it.
        self._damaged: StoreError | None = None
        self._writer_lock = threading.Lock()
        self._leases: set[str] = set()
        self._closed = False

    # -- opening -------------------------------------------------------------------------
    @property
    def runs_dir(self) -> Path:
        """Run workspaces live in `runs/` next to the store file."""
        return self.path.parent / "runs"

    def _open_validated(self) -> sqlite3.Connection:
        path = self.path
        hint = "choose another store with --store PATH (or PARALLEL_AGENTS_STORE)"
        if path.exists():
            if path.is_dir():
                raise StoreError(f"store path {path} is a directory, not a file; {hint}")
            try:
                with path.open("rb") as fh:
                    head = fh.read(len(_SQLITE_MAGIC))
            except OSError as exc:
                raise StoreError(f"cannot read the store {path}: {exc}") from None
            if head and head != _SQLITE_MAGIC:
                raise StoreError(
                    f"{path} is not a parallel-agents store (not an SQLite database); it was "
                    f"left untouched. Move it away or {hint}"
                )
            uri = f"{path.resolve().as_uri()}?mode=rw"
        else:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the store directory {path.parent}: {exc}") from None
            uri = f"{path.resolve().as_uri()}?mode=rwc"
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=30.0, check_same_thread=False,
                                   isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the store {path}: {exc}; {hint}") from None
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = [r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'view', 'index')")]
        except sqlite3.DatabaseError as exc:
            conn.close()
            if "unable to open" in str(exc) or not _writable(path):
                # Not damage: SQLite writes next to the file (its WAL and shared memory),
                # even to read it, and cannot here.
                raise StoreError(
                    f"cannot open the store {path} for writing ({exc}): it, or its directory "
                    f"{path.resolve().parent}, is read-only for this user (a read-only mount, "
                    f"permissions). Copy it somewhere writable, or {hint}") from None
            raise StoreError(
                f"the store {path} is corrupted or not a database ({exc}); it was left "
                f"untouched. Restore it from a backup, move it away, or {hint}"
            ) from None
        if app_id != APPLICATION_ID and (app_id != 0 or version != 0 or tables):
            conn.close()
            raise StoreError(
                f"{path} is an SQLite database of another application (application_id="
                f"{app_id:#x}, {len(tables)} table(s)), not a parallel-agents store; it was left "
                f"untouched. {hint[0].upper()}{hint[1:]}"
            )
        if version > SCHEMA_VERSION:
            conn.close()
            raise StoreError(
                f"the store {path} has schema version {version}, newer than this parallel-agents "
                f"understands ({SCHEMA_VERSION}); upgrade parallel-agents or {hint}"
            )
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA wal_autocheckpoint={_WAL_BACKSTOP_PAGES}")
            conn.execute(f"PRAGMA synchronous={self.durability.upper()}")
            conn.execute("PRAGMA busy_timeout=30000")
            self._migrate(conn, version)
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(f"cannot prepare the store {path}: {exc}; {hint}") from None
        return conn

    @staticmethod
    def _migrate(conn: sqlite3.Connection, version: int) -> None:
        while version < SCHEMA_VERSION:
            conn.execute("BEGIN IMMEDIATE")
            try:
                # Re-read under the write lock: another process may have migrated meanwhile.
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version >= SCHEMA_VERSION:
                    conn.execute("COMMIT")
                    break
                for statement in MIGRATIONS[version].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version={version + 1}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            version += 1

    def close(self) -> None:
        """Write everything queued, stop the writer, release leases and close the file."""
        if self._closed:
            return
        self.flush()
        for run_id in list(self._leases):
            self.release(run_id)
        self.flush()
        self._closed = True
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join(timeout=30)
        with self._read_lock:
            self._read.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- the writer ----------------------------------------------------------------------
    def _ensure_writer(self) -> None:
        if self._writer is not None:
            return
        with self._writer_lock:
            if self._writer is None:
                ready = threading.Event()
                self._writer = threading.Thread(
                    target=self._write_loop, args=(ready,), name="parallel-agents-store",
                    daemon=True)
                self._writer.start()
                ready.wait()

    def submit(self, kind: str, row: tuple) -> None:
        """Queue one write; it is committed with the next batch. Never blocks."""
        if self._writer is None:
            self._ensure_writer()
        self._queue.put((kind, row))

    def commit(self, kind: str, row: tuple) -> asyncio.Future[None]:
        """Queue one write and return a future resolved once it (and all before it) is committed."""
        if self._writer is None:
            self._ensure_writer()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._queue.put((kind, row, loop, fut))
        return fut

    @property
    def takes_batches(self) -> bool:
        """Whether `DurableRun` may hand this store whole `RunBatch`es. A subclass that
        overrides `submit`/`commit` to see every row must also handle `submit_batch` (and
        then say True) or it gets rows one by one."""
        cls = type(self)
        return cls.submit is RunStore.submit and cls.commit is RunStore.commit

    def submit_batch(self, batch: RunBatch) -> None:
        """Queue a run's batch (see `RunBatch`); its future, if any, resolves once committed."""
        if self._writer is None:
            self._ensure_writer()
        self._queue.put(batch)

    async def wait_committed(self) -> None:
        """Return once everything queued so far is committed."""
        await self.commit("noop", ())

    def flush(self, timeout: float = 60.0) -> None:
        """Block until everything queued so far is committed (for use outside an event loop)."""
        if self._writer is None:
            return
        done = threading.Event()
        self._queue.put(("sync", done))
        if not done.wait(timeout):
            raise StoreError(f"the store {self.path} did not finish writing within {timeout:g}s")
        if self._writer_error is not None:
            raise StoreError(f"writing to the store {self.path} failed: {self._writer_error}")

    def _write_loop(self, ready: threading.Event) -> None:
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        conn.execute(f"PRAGMA synchronous={self.durability.upper()}")
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute(f"PRAGMA wal_autocheckpoint={_WAL_BACKSTOP_PAGES}")
        ready.set()
        get = self._queue.get
        get_nowait = self._queue.get_nowait
        last_beat = time.monotonic()
        stop = False
        wrote = False  # since the last checkpoint
        # Workspaces whose coordination files have rows held back by their rate limits:
        # written once the queue goes quiet (see Workspace.flush_pending).
        held: set[Any] = set()
        while not stop:
            try:
                item = get(timeout=_IDLE_SECONDS if wrote or held else _HEARTBEAT_SECONDS)
            except queue.Empty:
                if held:
                    for workspace in held:
                        workspace.flush_pending()
                    held.clear()
                    continue
                if wrote:
                    # Copy the WAL back into the database while nobody waits for a commit.
                    wrote = False
                    try:
                        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    except sqlite3.Error:
                        pass  # busy or failing: the next idle moment (or the backstop) retries
                    continue
                item = ("noop", ())
            batch = _Batch()
            rows = batch.rows
            syncs: list[threading.Event] = []
            n = 0
            while True:
                if item is None:
                    stop = True
                elif type(item) is RunBatch:
                    n += (len(item.success) + sum(len(c[1]) for c in item.chunks)
                          + sum(len(g[3]) for g in item.groups))
                    self._add_run_batch(batch, item)
                elif item[0] == "sync":
                    syncs.append(item[1])
                else:
                    if item[0] == "success":
                        for kind, row in item[1].items():
                            if kind == "checkpoint":
                                target, labels = row
                                batch.hooks.setdefault(target, []).extend(labels)
                            else:
                                rows.setdefault(kind, []).append(row)
                    else:
                        rows.setdefault(item[0], []).append(item[1])
                    if len(item) == 4:
                        batch.futures.append((item[2], item[3]))
                n += 1
                if n >= _BATCH_LIMIT:
                    break
                try:
                    item = get_nowait()
                except queue.Empty:
                    break
            if time.monotonic() - last_beat >= _HEARTBEAT_SECONDS and self._leases:
                now = time.time()
                pid = os.getpid()
                for run_id in list(self._leases):
                    rows.setdefault("heartbeat", []).append((now, run_id, pid))
                last_beat = time.monotonic()
            error = self._apply(conn, batch)
            wrote = wrote or bool(batch.rows)
            if error is None:
                # The coordination files follow what is committed (off the event loop).
                for workspace, entries in batch.applied.items():
                    workspace.apply_batch(entries)
                    if workspace.pending():
                        held.add(workspace)
            if held:
                # Other runs' rows held back, written when due even if this store never
                # goes quiet (a server running many executions).
                for workspace in list(held):
                    if workspace not in batch.applied:
                        workspace.flush_pending(force=False)
                    if not workspace.pending():
                        held.discard(workspace)
            if batch.futures:
                self._resolve(batch.futures, error)
            for ev in syncs:
                ev.set()
        conn.close()

    @staticmethod
    def _add_run_batch(batch: _Batch, item: RunBatch) -> None:
        rows = batch.rows
        run_id = item.run_id
        for first, events in item.chunks:
            rows.setdefault("event_chunk", []).append(
                (run_id, first, first + len(events) - 1, _dumps(events)))
        for first, kind, at, tids, attempts, datas in item.groups:
            n = len(tids)
            common = None
            if datas is not None:
                body = _dumps(list(zip(tids, attempts or itertools.repeat(None), datas)))
            elif attempts is None:
                body = _dumps(tids)
            elif attempts.count(attempts[0]) == n:
                common, body = attempts[0], _dumps(tids)
            else:
                body = _dumps(list(zip(tids, attempts, itertools.repeat(None))))
            rows.setdefault("event_group", []).append(
                (run_id, first, first + n - 1, kind, at, common, body))
            if kind == "task_started" and attempts is not None:
                rows.setdefault("attempt_start", []).extend(
                    zip(itertools.repeat(run_id), tids, attempts, itertools.repeat(at)))
        for kind in ("attempt_start", "attempt_end", "success", "cache_put"):
            got = getattr(item, kind)
            if got:
                have = rows.get(kind)
                if have is None:
                    rows[kind] = got
                else:
                    have.extend(got)
        for kind, row in item.others:
            rows.setdefault(kind, []).append(row)
        if item.workspace is not None:
            # The checkpoint after each succeeded task, plus any stage boundary.
            labels = [f"after:{row[1]}" for row in item.success]
            labels += item.labels
            if labels:
                batch.hooks.setdefault(item.workspace, []).extend(labels)
            # Chunks (lists of rows) and groups (tuples), in the order of their events.
            feed: list[Any] = [*item.chunks, *item.groups]
            if len(feed) > 1:
                feed.sort(key=_first_seq)
            batch.applied.setdefault(item.workspace, []).extend(
                [e[1] if type(e) is list else e for e in feed])
        if item.future is not None:
            batch.futures.append((item.loop, item.future))  # type: ignore[arg-type]

    def _apply(self, conn: sqlite3.Connection, batch: _Batch) -> BaseException | None:
        # Workspace checkpoints due with these successes ride in the same round trip: one
        # walk of each workspace per batch, done before the commit acknowledges them.
        for target, labels in batch.hooks.items():
            target.checkpoint_now(labels)
        rows = batch.rows
        rows.pop("noop", None)
        if not rows:
            return None
        if self._damaged is not None:
            return self._damaged
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for kind in _ORDER:
                    items = rows.get(kind)
                    if not items:
                        continue
                    if kind == "success":
                        self._apply_successes(conn, [_success_row(r) for r in items])
                        continue
                    if kind == "result_extras":
                        for extras, run_id in items:  # one by one: each reads the last
                            conn.execute(_SQL[kind], _merged_result(conn, extras, run_id))
                        continue
                    if kind == "event":
                        items = [_event_row(e) for e in items]
                    elif kind == "output":
                        items = [_output_row(r) for r in items]
                    elif kind == "cache_put":
                        items = [_cache_row(r) for r in items]
                    if kind in _MULTI_ROW:
                        _insert_rows(conn, _SQL[kind], items)
                    else:
                        conn.executemany(_SQL[kind], items)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except Exception as exc:  # noqa: BLE001 - reported to every waiter, and on flush
            if _damage(exc):
                # Damage inside the file (the open checks only its header and schema) shows
                # when a write reaches it. Writing on could damage it more: stop here.
                exc = self._damaged = StoreError(
                    f"the store {self.path} is corrupted ({exc}); nothing more was written to "
                    f"it. Restore it from a backup or move it away, and choose another store "
                    f"with --store PATH (or PARALLEL_AGENTS_STORE)")
            self._writer_error = exc
            return exc
        return None

    @staticmethod
    def _apply_successes(conn: sqlite3.Connection, items: list[tuple]) -> None:
        """Success rows (see RunBatch): each attempt's end, then its output."""
        _insert_rows(conn, _SUCCESS_ATTEMPT,
                     ((r[0], r[1], r[2], r[10], r[11], r[12]) for r in items))
        _insert_rows(conn, _SQL["output"], (r[:10] for r in items))

    @staticmethod
    def _resolve(futures: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]],
                 error: BaseException | None) -> None:
        """Settle a batch's futures with one wake-up per event loop, not one per future."""
        by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        for loop, fut in futures:
            by_loop.setdefault(loop, []).append(fut)

        def settle(futs: list[asyncio.Future[None]]) -> None:
            for fut in futs:
                if fut.done():
                    continue
                if error is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(StoreError(f"could not commit to the store: {error}"))

        for loop, futs in by_loop.items():
            try:
                loop.call_soon_threadsafe(settle, futs)
            except RuntimeError:
                pass  # the loop is closed: nobody is waiting any more

    # -- runs and leases -----------------------------------------------------------------
    def create_run(self, run_id: str, *, plan_name: str, plan_json: dict[str, Any] | str,
                   options: dict[str, Any], has_callables: bool, workspace: str | None,
                   tasks: Iterable[tuple[str, str]] | None = None) -> None:
        """Insert the run and its tasks, leased to this process, and commit before returning.

        `plan_json` is the plan as a dict, or already serialised to JSON text (pydantic's
        `model_dump_json`: several times faster than a dict then `json.dumps` for big plans).
        `tasks` is (id, pool) per task in plan order; None has the writer thread read them
        from the stored plan inside SQLite, with its next group commit.
        """
        now = time.time()
        plan_text = plan_json if isinstance(plan_json, str) else _dumps(plan_json)
        with self._read_lock:
            try:
                self._read.execute("BEGIN IMMEDIATE")
                try:
                    self._read.execute(
                        "INSERT INTO runs (id, plan_name, plan_json, options_json, has_callables, "
                        "status, created_at, updated_at, workspace, owner_pid, owner_host, "
                        "heartbeat_at) VALUES (?, ?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, ?)",
                        (run_id, plan_name, plan_text, _dumps(options),
                         int(has_callables), now, now, workspace, os.getpid(),
                         socket.gethostname(), now),
                    )
                    if tasks is not None:
                        _insert_rows(self._read, "INSERT INTO tasks (run_id, task_id, position, "
                                     "pool, status) VALUES (?, ?, ?, ?, 'pending')",
                                     ((run_id, tid, i, pool)
                                      for i, (tid, pool) in enumerate(tasks)))
                    self._read.execute("COMMIT")
                except BaseException:
                    self._read.execute("ROLLBACK")
                    raise
            except sqlite3.IntegrityError:
                raise StoreError(f"a run with id {run_id!r} already exists in {self.path}; "
                                 "resume it with `parallel-agents resume` or pick another id") from None
            except sqlite3.Error as exc:
                raise StoreError(f"cannot record the run in {self.path}: {exc}") from None
        self._leases.add(run_id)
        self._ensure_writer()
        if tasks is None:
            self.submit("plan_tasks", (run_id,))

    def acquire(self, run_id: str) -> float | None:
        """Take the run's lease, or raise RunLockedError if a live process holds it.

        Returns the previous owner's last heartbeat (None if the run had no owner): when a
        crashed process was last seen alive, within the heartbeat period."""
        now = time.time()
        with self._read_lock:
            try:
                self._read.execute("BEGIN IMMEDIATE")
                try:
                    row = self._read.execute(
                        "SELECT owner_pid, owner_host, heartbeat_at FROM runs WHERE id = ?",
                        (run_id,)).fetchone()
                    if row is None:
                        raise StoreError(self._no_run(run_id))
                    probe = StoredRun(run_id, "", {}, {}, False, "", 0, 0, None, None,
                                      row[0], row[1], row[2], None)
                    if probe.owner_state() == "alive" and row[0] != os.getpid():
                        raise RunLockedError(
                            f"run {run_id} is being run by another process (pid {row[0]} on "
                            f"{row[1]}, last heartbeat {now - (row[2] or now):.0f}s ago); wait "
                            f"for it to finish, or stop that process and resume again"
                        )
                    self._read.execute(
                        # The status stays until the run really starts again
                        # (`resumed`): a resume that fails its checks changes nothing.
                        "UPDATE runs SET owner_pid = ?, owner_host = ?, heartbeat_at = ?, "
                        "updated_at = ? WHERE id = ?",
                        (os.getpid(), socket.gethostname(), now, now, run_id))
                    self._read.execute("COMMIT")
                except BaseException:
                    self._read.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise StoreError(f"cannot lease run {run_id} in {self.path}: {exc}") from None
        self._leases.add(run_id)
        self._ensure_writer()
        return row[2] if row[0] is not None else None

    def add_to_result(self, run_id: str, extras: dict[str, Any]) -> None:
        """Add `extras` (JSON values) to a finished run's stored result, e.g. the coordinator's
        final response, so every reader of the run (`status --json`, the HTTP gateway) has
        them. Written with the next commit; `close()` or `flush()` waits for it."""
        # The dict itself: a store that masks secrets masks its values, and the writer
        # encodes it (masking JSON text could break it).
        self.submit("result_extras", (dict(extras), run_id))

    def release(self, run_id: str) -> None:
        if run_id in self._leases:
            self._leases.discard(run_id)
            self.submit("release", (run_id, os.getpid()))

    def _no_run(self, run_id: str) -> str:
        return (f"no run {run_id!r} in the store {self.path}; "
                f"`parallel-agents list --store {self.path}` shows the stored runs")

    # -- reads ---------------------------------------------------------------------------
    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._read_lock:
            try:
                return self._read.execute(sql, args).fetchall()
            except sqlite3.DatabaseError as exc:
                raise StoreError(f"cannot read the store {self.path}: {exc}") from None

    def load_run(self, run_id: str) -> StoredRun:
        with self._read_lock:
            rows = self._query(
                "SELECT id, plan_name, plan_json, options_json, has_callables, status, created_at,"
                " updated_at, finished_at, workspace, owner_pid, owner_host, heartbeat_at, "
                "result_json FROM runs WHERE id = ?", (run_id,))
            if not rows:
                raise StoreError(self._no_run(run_id))
            r = rows[0]
            run = StoredRun(r[0], r[1], json.loads(r[2]), json.loads(r[3]), bool(r[4]), r[5],
                            r[6], r[7], r[8], r[9], r[10], r[11], r[12],
                            json.loads(r[13]) if r[13] else None)
            for tid, pool, status, error, cached in self._query(
                    "SELECT task_id, pool, status, error, cached FROM tasks WHERE run_id = ? "
                    "ORDER BY position", (run_id,)):
                run.tasks[tid] = {"pool": pool, "status": status, "error": error,
                                  "cached": bool(cached)}
            for tid, attempt, s, f, outcome, error, waited in self._query(
                    "SELECT task_id, attempt, started_at, finished_at, outcome, error, waited "
                    "FROM attempts WHERE run_id = ? ORDER BY task_id, attempt", (run_id,)):
                run.attempts.setdefault(tid, []).append(
                    StoredAttempt(attempt, s, f, outcome, error, waited or 0.0))
            for tid, attempt, out, usage, cost, files, cached in self._query(
                    "SELECT task_id, attempt, output_json, usage_json, cost_usd, files_json, cached "
                    "FROM outputs WHERE run_id = ?", (run_id,)):
                run.outputs[tid] = {"attempt": attempt, "output": json.loads(out),
                                    "usage": json.loads(usage), "cost_usd": cost,
                                    "files": json.loads(files), "cached": bool(cached)}
            run.last_seq = self._last_seq(run_id)
        if run.result is not None and run.result.pop(TASKS_FROM_TABLES, False):
            _fill_tasks(run)
        return run

    def list_runs(self, limit: int = 50) -> list[dict[str, Any]]:
        rows = self._query(
            "SELECT r.id, r.plan_name, r.status, r.created_at, r.finished_at, r.owner_pid, "
            "r.owner_host, r.heartbeat_at, "
            "(SELECT COUNT(*) FROM tasks t WHERE t.run_id = r.id), "
            "(SELECT COUNT(*) FROM outputs o WHERE o.run_id = r.id) "
            "FROM runs r ORDER BY r.created_at DESC LIMIT ?", (limit,))
        out = []
        for rid, name, status, created, finished, pid, host, beat, n, ok in rows:
            probe = StoredRun(rid, name, {}, {}, False, status, created, created, finished, None,
                              pid, host, beat, None)
            out.append({"run_id": rid, "plan": name, "status": probe.display_status(),
                        "created_at": created, "finished_at": finished, "tasks": n,
                        "succeeded": ok})
        return out

    def events(self, run_id: str) -> list[dict[str, Any]]:
        """The run's events in order, as `Event.to_dict()` gave them."""
        return self._events(run_id, 0, None)

    def events_after(self, run_id: str, seq: int, limit: int = 1000) -> list[dict[str, Any]]:
        """Up to `limit` events with a seq above `seq`, in order (the gateway's SSE replay:
        one indexed range read per page, not the whole run)."""
        return self._events(run_id, seq, limit)

    def _events(self, run_id: str, after: int, limit: int | None) -> list[dict[str, Any]]:
        out = self._events_in(run_id, after, limit, bounded=limit is not None)
        if not out and limit is not None:
            # The bounded read assumes gap-free numbering; never let a gap end a replay early.
            out = self._events_in(run_id, after, limit, bounded=False)
        return out

    def _events_in(self, run_id: str, after: int, limit: int | None,
                   bounded: bool) -> list[dict[str, Any]]:
        """Events with a seq above `after` from the three places they are kept: one row each
        (`event_rows`), a chunk of rows (`event_chunks`) or a group of one kind (`event_groups`).
        `bounded`: read only chunks and groups starting within `limit` seqs of `after`."""
        out: list[tuple[int, dict[str, Any]]] = []
        lim = -1 if limit is None else limit
        top = after + lim if bounded else 1 << 62
        sources = 0
        with self._read_lock:
            for seq, kind, task_id, attempt, at, message, data in self._query(
                    "SELECT seq, kind, task_id, attempt, time, message, data_json FROM "
                    "event_rows WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                    (run_id, after, lim)):
                out.append((seq, _event_dict(run_id, seq, kind, task_id, attempt, at, message,
                                             None if data is None else json.loads(data))))
            sources += bool(out)
            # From the last chunk (group) starting at or before `after + 1`: an indexed jump.
            chunks = self._query(
                "SELECT first_seq, body FROM event_chunks WHERE run_id = ? AND first_seq >= "
                "COALESCE((SELECT MAX(first_seq) FROM event_chunks WHERE run_id = ? AND "
                "first_seq <= ?), 0) AND first_seq <= ? ORDER BY first_seq",
                (run_id, run_id, after + 1, top))
            sources += bool(chunks)
            for first, body in chunks:
                for i, (kind, task_id, attempt, at, message, data) in enumerate(json.loads(body)):
                    seq = first + i
                    if seq > after:
                        out.append((seq, _event_dict(run_id, seq, kind, task_id, attempt, at,
                                                     message, data)))
            groups = self._query(
                "SELECT first_seq, kind, time, attempt, body FROM event_groups WHERE run_id = ? "
                "AND first_seq >= COALESCE((SELECT MAX(first_seq) FROM event_groups WHERE "
                "run_id = ? AND first_seq <= ?), 0) AND first_seq <= ? ORDER BY first_seq",
                (run_id, run_id, after + 1, top))
            sources += bool(groups)
        for first, kind, at, common, body in groups:
            for i, item in enumerate(json.loads(body)):
                seq = first + i
                if seq <= after:
                    continue
                if type(item) is str:
                    out.append((seq, _event_dict(run_id, seq, kind, item, common, at, None, None)))
                else:
                    out.append((seq, _event_dict(run_id, seq, kind, item[0], item[1], at, None,
                                                 item[2])))
        if sources > 1:
            out.sort(key=_first_seq)
        if limit is not None:
            del out[limit:]
        return [event for _, event in out]

    def _last_seq(self, run_id: str) -> int:
        return self._query(
            "SELECT MAX(COALESCE((SELECT MAX(seq) FROM event_rows WHERE run_id = ?), 0), "
            "COALESCE((SELECT MAX(last_seq) FROM event_chunks WHERE run_id = ?), 0), "
            "COALESCE((SELECT MAX(last_seq) FROM event_groups WHERE run_id = ?), 0))",
            (run_id, run_id, run_id))[0][0]

    def run_workspace(self, run_id: str) -> str | None:
        """The workspace directory a run used (None if the run or its workspace is unknown)."""
        rows = self._query("SELECT workspace FROM runs WHERE id = ?", (run_id,))
        return rows[0][0] if rows else None

    def cache_get(self, key: str) -> dict[str, Any] | None:
        rows = self._query("SELECT run_id, task_id, output_json, usage_json, cost_usd, files_json,"
                           " seconds FROM cache WHERE key = ?", (key,))
        if not rows:
            return None
        rid, tid, out, usage, cost, files, seconds = rows[0]
        return {"run_id": rid, "task_id": tid, "output": json.loads(out),
                "usage": json.loads(usage), "cost_usd": cost, "files": json.loads(files),
                "seconds": seconds}


def _merged_result(conn: sqlite3.Connection, extras: dict[str, Any], run_id: str
                   ) -> tuple[str, str]:
    """The `result_extras` row: the run's stored result with `extras`' keys set."""
    row = conn.execute("SELECT result_json FROM runs WHERE id = ?", (run_id,)).fetchone()
    result: dict[str, Any] = {}
    if row is not None and row[0]:
        try:
            loaded = json.loads(row[0])
        except ValueError:
            loaded = None
        if isinstance(loaded, dict):
            result = loaded
    result.update(extras)
    return _dumps(result), run_id


def _fill_tasks(run: StoredRun) -> None:
    """Put back the succeeded tasks a finished run stored by reference (see DurableRun):
    the same entries `TaskResult.to_dict()` gave, from the outputs and attempts rows."""
    tasks = run.result.get("tasks") if run.result else None
    if not isinstance(tasks, dict):
        return
    for tid, entry in tasks.items():
        if entry is not None:
            continue
        out = run.outputs.get(tid, {})
        history = [{"attempt": a.attempt, "started_at": a.started_at,
                    "finished_at": a.finished_at, "outcome": a.outcome, "error": a.error,
                    **({"waited_seconds": round(a.waited, 6)} if a.waited else {})}
                   for a in run.attempts.get(tid, [])]
        entry = {"status": "succeeded", "pool": run.tasks.get(tid, {}).get("pool"),
                 "attempts": len(history),
                 "started_at": history[0]["started_at"] if history else None,
                 "finished_at": history[-1]["finished_at"] if history else None,
                 "output": out.get("output"), "error": None, "history": history}
        if out.get("usage"):
            entry["usage"] = out["usage"]
        if out.get("cost_usd"):
            entry["cost_usd"] = out["cost_usd"]
        if out.get("files"):
            entry["files"] = out["files"]
        if out.get("cached"):
            entry["cached"] = True
        tasks[tid] = entry


def _event_dict(run_id: str, seq: int, kind: str, task_id: str | None, attempt: int | None,
                at: float, message: str | None, data: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"seq": seq, "kind": kind, "run_id": run_id, "time": at}
    if task_id is not None:
        event["task_id"] = task_id
    if attempt is not None:
        event["attempt"] = attempt
    if message is not None:
        event["message"] = message
    if data is not None:
        event["data"] = data
    return event


def _event_row(event: Any) -> tuple:
    data = event.data
    return (event.run_id, event.seq, event.kind, event.task_id, event.attempt, event.time,
            event.message, _dumps(data) if data else None)


def _output_row(r: tuple) -> tuple:
    run_id, task_id, attempt, output, usage, cost, files, key, cached, at = r
    return (run_id, task_id, attempt, _dump_value(output),
            "{}" if usage is None else _dump_value(usage), cost,
            "[]" if files is None else _dump_value(files), key, int(cached), at)


def _success_row(r: tuple) -> tuple:
    (run_id, task_id, attempt, output, usage, cost, files, key, cached, at, started, ended,
     waited) = r
    return (run_id, task_id, attempt, _dump_value(output),
            "{}" if usage is None else _dump_value(usage), cost,
            "[]" if files is None else _dump_value(files), key, int(cached), at, started, ended,
            waited or None)


def _cache_row(r: tuple) -> tuple:
    key, run_id, task_id, output, usage, cost, files, seconds, at = r
    return (key, run_id, task_id, _dump_value(output),
            "{}" if usage is None else _dump_value(usage), cost,
            "[]" if files is None else _dump_value(files), seconds, at)
