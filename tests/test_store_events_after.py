"""`RunStore.events_after`: the paged event read the HTTP gateway replays SSE streams from."""

from __future__ import annotations

import sys
from pathlib import Path

import parallel_agents as pa
from parallel_agents.store import RunStore


def test_events_after_pages_through_a_runs_events_in_order(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    try:
        plan = pa.Plan(tasks=[pa.Task(id=f"t{i}", command=[sys.executable, "-c", "pass"])
                              for i in range(3)])
        result = pa.run(plan, store=store)
        store.flush()
        every = store.events(result.run_id)
        assert [e["seq"] for e in every] == list(range(1, len(every) + 1))
        pages, seq = [], 0
        while batch := store.events_after(result.run_id, seq, limit=4):
            assert len(batch) <= 4
            pages.append(batch)
            seq = batch[-1]["seq"]
        assert [e for page in pages for e in page] == every
        assert store.events_after(result.run_id, 2, limit=1) == every[2:3]
        assert store.events_after(result.run_id, len(every)) == []
        assert store.events_after("no-such-run", 0) == []
    finally:
        store.close()
