"""The store's batched write path: event chunks, the `events` view, the migration from a
store whose events were one row each, and finished results stored by reference."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import parallel_agents as pa
from parallel_agents import TaskOutput
from parallel_agents.store import RunStore
from parallel_agents.store.sqlite import MIGRATIONS


def _mixed_plan() -> pa.Plan:
    tries: dict[str, int] = {}

    async def flaky(ctx):  # noqa: ANN001, ANN202 - fails its first attempt, pays for both
        tries["flaky"] = tries.get("flaky", 0) + 1
        if tries["flaky"] == 1:
            raise RuntimeError("first attempt fails")
        return TaskOutput(output={"ok": [1, 2.5, "x"]}, usage={"input_tokens": 7},
                          cost_usd=0.25, files=["out.txt"])

    async def broken(ctx):  # noqa: ANN001, ANN202
        raise RuntimeError("always fails")

    async def plain(ctx):  # noqa: ANN001, ANN202
        return f"done {ctx.task.id}"

    tasks = [pa.Task(id=f"p{i}", run=plain) for i in range(20)]
    tasks += [pa.Task(id="flaky", run=flaky, max_retries=2, retry_backoff_sec=0),
              pa.Task(id="broken", run=broken, max_retries=0),
              pa.Task(id="after-broken", run=plain, depends_on=["broken"]),
              pa.Task(id="after-flaky", run=plain, depends_on=["flaky"])]
    return pa.Plan(name="mixed", pools={"default": pa.Pool(max_concurrent=3)}, tasks=tasks)


def _run_mixed_plan(store: RunStore) -> tuple[pa.RunResult, Any, list[dict[str, Any]]]:
    """Run `_mixed_plan()` on `store`, then close it: (result, stored run, stored events)."""
    try:
        result = asyncio.run(pa.Executor(store=store).execute(_mixed_plan()))
        return result, store.load_run(result.run_id), store.events(result.run_id)
    finally:
        store.close()


def _store_at_version(db: Path, version: int, run_id: str) -> sqlite3.Connection:
    """A store file as an older release left it (schema `version`), with one finished run."""
    conn = sqlite3.connect(db, isolation_level=None)
    for done, migration in enumerate(MIGRATIONS[:version]):
        for statement in migration.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version={done + 1}")
    conn.execute("PRAGMA application_id=0x50414753")
    conn.execute("INSERT INTO runs (id, plan_name, plan_json, options_json, status, created_at,"
                 " updated_at) VALUES (?, 'p', '{}', '{}', 'succeeded', 1, 1)", (run_id,))
    return conn


def test_a_finished_run_loads_back_the_result_it_returned(tmp_path: Path) -> None:
    result, saved, every = _run_mixed_plan(RunStore(tmp_path / "runs.db"))
    assert result.status == "partial"
    # Succeeded tasks are stored by reference and rebuilt from the tables: same JSON.
    assert saved.result == json.loads(json.dumps(result.to_dict()))
    assert [e["seq"] for e in every] == list(range(1, len(every) + 1))
    assert [e["kind"] for e in every].count("task_succeeded") == 22
    conn = sqlite3.connect(tmp_path / "runs.db")
    try:
        raw = conn.execute("SELECT result_json FROM runs").fetchone()[0]
        view = conn.execute("SELECT seq, kind, task_id, attempt, time, message, data_json "
                            "FROM events WHERE run_id = ? ORDER BY seq",
                            (result.run_id,)).fetchall()
    finally:
        conn.close()
    assert json.loads(raw)["tasks"]["p0"] is None  # not a second copy of the output
    assert json.loads(raw)["tasks"]["broken"]["status"] == "failed"
    # The SQL view shows the same events, one row each, as the old table did.
    assert [(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]) if r[6] else None)
            for r in view] == [
        (e["seq"], e["kind"], e.get("task_id"), e.get("attempt"), e["time"],
         e.get("message"), e.get("data")) for e in every]


def test_events_after_pages_across_chunk_boundaries(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    try:
        result = asyncio.run(pa.Executor(store=store).execute(_mixed_plan()))
        every = store.events(result.run_id)
        chunks = store._query("SELECT COUNT(*) FROM event_chunks")[0][0]
        assert chunks > 1
        for after in range(len(every) + 1):
            for limit in (1, 3, 1000):
                assert store.events_after(result.run_id, after, limit) == \
                    every[after:after + limit], (after, limit)
        assert store.load_run(result.run_id).last_seq == len(every)
    finally:
        store.close()


def test_a_store_with_one_row_per_event_migrates_and_keeps_its_events(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    conn = _store_at_version(db, 2, "old")
    conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [
        ("old", 1, "run_started", None, None, 1.5, None, '{"plan":"p"}'),
        ("old", 2, "task_started", "a", 1, 2.5, None, None),
        ("old", 3, "run_finished", None, None, 3.5, "succeeded", None)])
    conn.close()
    store = RunStore(db)
    try:
        assert store.events("old") == [
            {"seq": 1, "kind": "run_started", "run_id": "old", "time": 1.5,
             "data": {"plan": "p"}},
            {"seq": 2, "kind": "task_started", "run_id": "old", "time": 2.5, "task_id": "a",
             "attempt": 1},
            {"seq": 3, "kind": "run_finished", "run_id": "old", "time": 3.5,
             "message": "succeeded"}]
        assert store.events_after("old", 1, 1)[0]["seq"] == 2
        assert store.load_run("old").last_seq == 3
        result = asyncio.run(pa.Executor(store=store).execute(_mixed_plan()))
        assert store.events(result.run_id)[-1]["kind"] == "run_finished"
        rows = store._query("SELECT run_id, COUNT(*) FROM events GROUP BY run_id ORDER BY 1")
        assert dict(rows)["old"] == 3
    finally:
        store.close()


def test_a_store_with_event_chunks_migrates_and_new_runs_store_event_groups(
        tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    conn = _store_at_version(db, 3, "v3")
    conn.execute("INSERT INTO event_chunks VALUES ('v3', 1, 3, ?)", (json.dumps([
        ["run_started", None, None, 1.5, None, {"plan": "p"}],
        ["task_started", "a", 1, 2.5, None, None],
        ["run_finished", None, None, 3.5, "succeeded", None]]),))
    conn.close()
    store = RunStore(db)
    try:
        assert [(e["seq"], e["kind"]) for e in store.events("v3")] == [
            (1, "run_started"), (2, "task_started"), (3, "run_finished")]
        result = asyncio.run(pa.Executor(store=store).execute(_mixed_plan()))
        every = store.events(result.run_id)
        assert [e["seq"] for e in every] == list(range(1, len(every) + 1))
        # The queued/started/succeeded notices of many tasks are stored as groups.
        groups = store._query("SELECT kind, last_seq - first_seq + 1 FROM event_groups "
                              "WHERE run_id = ?", (result.run_id,))
        assert {kind for kind, _ in groups} == {"task_queued", "task_started",
                                                "task_succeeded"}
        assert sum(n for _, n in groups) == sum(
            1 for e in every if e["kind"] in ("task_queued", "task_started", "task_succeeded")
            and not (e.get("data") or {}).get("recovered"))
        rows = dict(store._query("SELECT run_id, COUNT(*) FROM events GROUP BY run_id"))
        assert rows == {"v3": 3, result.run_id: len(every)}
        # Every attempt has its row: 20 plain tasks, flaky twice, broken once, after-flaky.
        attempts = store._query("SELECT task_id, attempt, outcome FROM attempts WHERE "
                                "run_id = ? ORDER BY task_id, attempt", (result.run_id,))
        assert ("flaky", 1, "failed") in attempts and ("flaky", 2, "succeeded") in attempts
        assert ("broken", 1, "failed") in attempts and len(attempts) == 24
    finally:
        store.close()


class _RowByRowStore(RunStore):
    """A store that watches every row (as a redacting subclass would) without taking
    batches: the executor's event groups reach it one event at a time."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.kinds: list[str] = []

    def submit(self, kind: str, row: tuple) -> None:
        self.kinds.append(kind)
        super().submit(kind, row)


def test_a_store_that_takes_rows_one_by_one_records_the_same_run(tmp_path: Path) -> None:
    store = _RowByRowStore(tmp_path / "runs.db")
    assert not store.takes_batches
    result, saved, every = _run_mixed_plan(store)
    assert result.status == "partial"
    assert [e["seq"] for e in every] == list(range(1, len(every) + 1))
    kinds = [e["kind"] for e in every]
    assert kinds.count("task_started") == 24 and kinds.count("task_succeeded") == 22
    assert store.kinds.count("attempt_start") == 24 and store.kinds.count("event") == len(every)
    assert sorted(saved.outputs) == sorted(t for t, r in result.tasks.items()
                                           if r.status == "succeeded")
    assert [a.outcome for a in saved.attempts["flaky"]] == ["failed", "succeeded"]


def test_multi_row_inserts_pad_only_where_a_repeated_row_changes_nothing() -> None:
    from parallel_agents.store.sqlite import _insert_rows

    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT)")
    conn.execute("CREATE TABLE u (a INTEGER PRIMARY KEY, b TEXT)")
    for n in (1, 2, 3, 7, 9, 1000, 2048, 2049, 5000):
        conn.execute("DELETE FROM t")
        conn.execute("DELETE FROM u")
        rows = [(i, f"x{i}") for i in range(n)]
        _insert_rows(conn, "INSERT OR REPLACE INTO t (a, b) VALUES (?, ?)", rows)
        _insert_rows(conn, "INSERT INTO u (a, b) VALUES (?, ?)", rows)  # no padding: exact
        for table in ("t", "u"):
            assert conn.execute(f"SELECT COUNT(*), SUM(a), MAX(b) FROM {table}").fetchone() \
                == (n, sum(range(n)), max(f"x{i}" for i in range(n))), (table, n)
    conn.close()


def test_a_store_without_waiting_times_migrates(tmp_path: Path) -> None:
    """Schema 4 had no `attempts.waited`: its attempts load with no waiting, and new runs
    store theirs."""
    db = tmp_path / "runs.db"
    conn = _store_at_version(db, 4, "v4")
    conn.execute("INSERT INTO attempts (run_id, task_id, attempt, started_at, finished_at, "
                 "outcome) VALUES ('v4', 'a', 1, 1.0, 2.0, 'failed')")
    conn.close()
    store = RunStore(db)
    try:
        assert [(a.outcome, a.waited) for a in store.load_run("v4").attempts["a"]] == [
            ("failed", 0.0)]
        result = asyncio.run(pa.Executor(store=store).execute(_mixed_plan()))
        assert result.status == "partial"
        assert store._query("PRAGMA user_version")[0][0] == 5
    finally:
        store.close()
