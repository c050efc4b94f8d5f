"""The in-memory execution store behind the gateway (the seam the durable store plugs into)."""

from __future__ import annotations

from parallel_agents.server import ExecutionRecord, MemoryExecutionStore


def record(n: int, owner: str | None = None) -> ExecutionRecord:
    return ExecutionRecord(execution_id=f"e{n}", owner=owner, session_key=owner, project=None,
                           plan_name="p", tasks=[], created_at=float(n), estimated_duration=0)


def test_events_after_a_seq_and_listing_by_owner_newest_first() -> None:
    store = MemoryExecutionStore()
    for n in range(3):
        store.create(record(n, owner="alice" if n else None))
    store.append_events("e1", [{"seq": i, "kind": "x"} for i in range(1, 6)])
    assert [e["seq"] for e in store.events_after("e1", 2)] == [3, 4, 5]
    assert store.events_after("e1", 5) == [] and store.events_after("nope", 0) == []
    store.append_events("e2", [{"seq": i, "kind": "x"} for i in range(41, 44)])  # resumed run
    assert [e["seq"] for e in store.events_after("e2", 0)] == [41, 42, 43]
    assert [e["seq"] for e in store.events_after("e2", 42)] == [43]
    rows, total = store.list(owner="alice", all_owners=False, session_key=None, offset=0,
                             limit=10)
    assert [r.execution_id for r in rows] == ["e2", "e1"] and total == 2
    rows, total = store.list(owner=None, all_owners=True, session_key=None, offset=1, limit=1)
    assert [r.execution_id for r in rows] == ["e1"] and total == 3


def test_only_finished_executions_are_evicted_oldest_first() -> None:
    store = MemoryExecutionStore(max_finished=2)
    for n in range(4):
        store.create(record(n))
    for n in (0, 1, 2):
        store.finish(f"e{n}", "succeeded", 1.0, {})
    assert store.get("e0") is None
    assert store.get("e1") is not None and store.get("e2") is not None
    assert store.get("e3") is not None and not store.get("e3").finished  # running: kept
