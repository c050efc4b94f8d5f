"""Two LLM tasks write the same file at overlapping times in the run's shared workspace.

The tasks run as real LLM tasks (the `llm` agent kind, its `write_file` tool, the executor)
against a scripted provider that orders the calls: `database_schema` writes `schema.sql`,
then `frontend` writes its own `schema.sql` over it, and only then does `database_schema`
finish. When it finishes, the file on disk is the frontend's; the coordinator must still
compare the two versions each task wrote, resolve the conflict by its rules (`.sql` belongs
to the database role) and keep the losing version, in a plain run and in a resumed one.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from coord_helpers import plan_json, planner

import parallel_agents as pa
from parallel_agents.coordinator import Coordinator
from parallel_agents.providers.base import (
    ChatRequest,
    ChatResponse,
    FunctionProvider,
    ToolCall,
    Usage,
)
from parallel_agents.store import RunStore

RESTAURANT = "Build a restaurant website with booking"
MODEL = "scripted:gpt-4o-mini"
DB_SCHEMA = "CREATE TABLE booking(id serial primary key);"
FRONTEND_GUESS = "-- frontend guess\nCREATE TABLE b(x int);"
PLAN = plan_json(
    {"id": "frontend", "agent": "frontend", "description": "Build the booking pages",
     "depends_on": []},
    {"id": "backend", "agent": "backend", "description": "Build the booking API",
     "depends_on": []},
    {"id": "database_schema", "agent": "database", "description": "Design the SQL schema",
     "depends_on": []},
    {"id": "security_audit", "agent": "security", "description": "Audit the backend",
     "depends_on": ["backend"]},
)


class Script:
    """The scripted model. `backend_gate`, when set, is awaited by backend's first call (the
    test interrupts the run there)."""

    def __init__(self) -> None:
        self.db_wrote = asyncio.Event()
        self.frontend_wrote = asyncio.Event()
        self.backend_gate: asyncio.Future[None] | None = None

    async def __call__(self, request: ChatRequest) -> ChatResponse:
        prompt = " ".join(m.content for m in request.messages if m.role == "user")
        found = re.search(r"write_file to `([^`]+)\.md`", prompt)
        task = found.group(1) if found else "?"
        turns = sum(1 for m in request.messages if m.role == "tool")
        if task == "database_schema":
            if turns == 0:
                return _write("schema.sql", DB_SCHEMA)
            self.db_wrote.set()  # its write is on disk: the frontend's may come now
            await self.frontend_wrote.wait()  # ... and lands before this task ends
            return ChatResponse("Schema designed.", usage=Usage(20, 5))
        if task == "frontend":
            if turns == 0:
                await self.db_wrote.wait()
                return _write("schema.sql", FRONTEND_GUESS)
            self.frontend_wrote.set()
            return ChatResponse("Booking pages built.", usage=Usage(20, 5))
        if task == "backend" and self.backend_gate is not None:
            await self.backend_gate
        return ChatResponse(f"{task} done.", usage=Usage(20, 5))


def _write(path: str, content: str) -> ChatResponse:
    return ChatResponse("", tool_calls=[ToolCall(f"call-{path}", "write_file",
                                                 {"path": path, "content": content})],
                        usage=Usage(20, 10), finish_reason="tool_calls")


def _check_schema_conflict(outcome, workspace: Path) -> None:  # noqa: ANN001
    [conflict] = [c for c in outcome.conflicts if c.subject == "schema.sql"]
    assert "identical" not in conflict.details, conflict
    assert set(conflict.tasks) == {"database_schema", "frontend"}
    assert conflict.winner == "database_schema"
    assert ".sql files belong to the database role" in conflict.rationale
    assert (workspace / "schema.sql").read_text() == DB_SCHEMA
    kept = workspace / ".coordinator" / "conflicts" / "frontend" / "schema.sql"
    assert kept.read_text() == FRONTEND_GUESS
    assert ".coordinator/conflicts/frontend/schema.sql" in conflict.resolution
    assert "kept database_schema's version" in outcome.final_response


def test_overlapping_writes_are_compared_as_each_task_wrote_them(tmp_path: Path) -> None:
    script = Script()
    coordinator = Coordinator(planner(PLAN), model=MODEL, workspace=tmp_path / "ws",
                              executor_options={"providers": {
                                  "scripted": FunctionProvider(script)}})
    outcome = asyncio.run(coordinator.run(RESTAURANT))
    assert outcome.run.status == "succeeded", outcome.run.reason
    # The database task ended after the frontend's write: on disk it found the other's file.
    db, fe = outcome.run.tasks["database_schema"], outcome.run.tasks["frontend"]
    assert db.finished_at is not None and fe.finished_at is not None
    assert db.finished_at > fe.history[0].started_at
    _check_schema_conflict(outcome, tmp_path / "ws")


def test_a_resumed_run_compares_the_versions_written_before_the_interruption(
        tmp_path: Path) -> None:
    """Both writers succeed before the run is interrupted; after `resume`, their versions
    come from what they wrote, not from the checkpoint after the database task (which
    already holds the frontend's overwrite)."""
    workspace = tmp_path / "ws"
    script = Script()
    providers = {"scripted": FunctionProvider(script)}
    done: set[str] = set()

    with RunStore(tmp_path / "runs.db") as store:
        async def first_run() -> str:
            both_done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            script.backend_gate = asyncio.get_running_loop().create_future()

            def on_event(event: pa.Event) -> None:
                if event.kind == "task_succeeded" and event.task_id:
                    done.add(event.task_id)
                    if {"frontend", "database_schema"} <= done and not both_done.done():
                        both_done.set_result(None)

            executor = pa.Executor(store=store, workspace=workspace, providers=providers,
                                   on_event=on_event)
            coordinator = Coordinator(planner(PLAN), model=MODEL)
            decomposition = await coordinator.plan(RESTAURANT)
            running = asyncio.ensure_future(coordinator.execute(decomposition,
                                                                executor=executor))
            await both_done  # both writers' successes are committed
            executor.cancel("stopped half-way")  # like Ctrl-C while backend runs
            first = await running
            assert first.run.status == "cancelled"
            assert first.run.tasks["backend"].status != "succeeded"
            return first.run.run_id

        run_id = asyncio.run(first_run())
        script.backend_gate = None
        resumed = asyncio.run(Coordinator(executor_options={
            "store": store, "providers": providers}).resume(run_id))
    assert resumed.run.status == "succeeded", resumed.run.reason
    _check_schema_conflict(resumed, workspace)
    # The planning call of the first process is still the run's (tokens, and budget).
    paid = resumed.run.prepaid
    assert paid is not None and paid.label == "planner" and paid.usage["input_tokens"] > 0
    tasks_in = sum(t.usage.get("input_tokens", 0) for t in resumed.run.tasks.values())
    assert resumed.run.usage["input_tokens"] == tasks_in + paid.usage["input_tokens"]
