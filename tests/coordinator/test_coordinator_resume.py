"""A run started from a request survives a crash: `resume` finishes it and answers as `run`.

Through the real CLI, against a loopback OpenAI-compatible server: the runner is killed with
SIGKILL while one agent's call hangs, then `parallel-agents resume RUN_ID --json` finishes the
run, prints the coordinator's final response and record, calls no agent that had succeeded,
and keeps the model the run started with.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import parallel_agents as pa
from parallel_agents.coordinator import Coordinator
from parallel_agents.store import RunStore
from tests.fakes.openai_server import FakeLLMServer, Reply, user_prompt

REQUEST = "Build a todo API"
HANGS = "Implement the API endpoints"  # the prompt of the template's `backend` task
BEFORE_CRASH = {"architecture", "api_design", "database_models", "security"}


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARALLEL_AGENTS_")}
    env.update(PARALLEL_AGENTS_STORE=str(tmp_path / "runs.db"), FAKE_LLM_KEY="sk-fake-resume")
    env.update(extra)
    return env


def _committed(db: Path) -> set[str]:
    if not db.exists():
        return set()
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return {r[0] for r in conn.execute("SELECT task_id FROM outputs")}
        finally:
            conn.close()
    except sqlite3.Error:
        return set()


def _task_of(body: dict) -> str:
    """Which template task a chat request is for (its prompt starts with the task's text)."""
    text = user_prompt(body)
    for marker, task in (("service architecture", "architecture"),
                         ("Design the API", "api_design"),
                         ("database models", "database_models"),
                         (HANGS, "backend"), ("security layer", "security"),
                         ("API tests", "testing"), ("deployment", "deployment")):
        if marker in text:
            return task
    return "?"


@pytest.mark.timeout(120)
def test_a_request_run_killed_mid_run_is_resumed_to_its_final_response(tmp_path: Path) -> None:
    with FakeLLMServer() as srv:
        srv.handler = lambda body: (Reply.hang(15) if HANGS in user_prompt(body)
                                    else Reply.text(f"done: {_task_of(body)}"))
        (tmp_path / "parallel-agents.toml").write_text(srv.config_toml("model-of-the-run"))
        db = tmp_path / "runs.db"
        proc = subprocess.Popen(
            [sys.executable, "-m", "parallel_agents", "run", REQUEST, "--template", "api",
             "--json", "--quiet"], cwd=tmp_path, env=_env(tmp_path),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            while not BEFORE_CRASH <= _committed(db):
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the first tasks never committed"
                time.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
        assert "backend" not in _committed(db)
        run_id = sqlite3.connect(db).execute("SELECT id FROM runs").fetchone()[0]
        calls_before = len(srv.requests)

        srv.handler = lambda body: Reply.text(f"done: {_task_of(body)}")
        # Another shell: a default model of a provider nobody configured, no config file.
        (tmp_path / "parallel-agents.toml").unlink()
        resumed = subprocess.run(
            [sys.executable, "-m", "parallel_agents", "resume", run_id, "--json", "--quiet"],
            cwd=tmp_path, env=_env(tmp_path, PARALLEL_AGENTS_MODEL="bogus:another-model"),
            capture_output=True, text=True, timeout=90)
        assert resumed.returncode == 0, resumed.stderr
        record = json.loads(resumed.stdout)
        again = [(_task_of(r.body), r.body.get("model")) for r in srv.requests[calls_before:]]

    # The run finished, with the coordinator's answer, as `run --json` prints it.
    assert record["status"] == "succeeded"
    assert all(t["status"] == "succeeded" for t in record["tasks"].values())
    assert record["final_response"].strip()
    assert record["decision"]["template"] == "api"
    assert {t["id"] for t in record["plan"]["tasks"]} == set(record["tasks"])
    assert "answers/backend.md" in record["files"]
    assert "answers/architecture.md" in record["files"]
    workspace = Path(record["workspace"])
    assert (workspace / "FINAL_RESPONSE.md").read_text() == record["final_response"]
    # Nothing that had succeeded was asked again; the rest ran on the run's own model.
    assert {task for task, _ in again} == {"backend", "testing", "deployment"}
    assert {model for _, model in again} == {"model-of-the-run"}
    assert record["tasks"]["backend"]["attempts"] == 2  # the interrupted one counts


def test_resume_of_a_plan_run_is_unchanged_by_the_coordinators_path(tmp_path: Path) -> None:
    """A plan-file run has no decomposition: `resume` prints the run summary, as before."""
    plan = tmp_path / "p.yaml"
    plan.write_text("name: p\ntasks:\n  - {id: a, command: [python, -c, 'print(1)']}\n")
    env = _env(tmp_path)
    ran = subprocess.run([sys.executable, "-m", "parallel_agents", "run", str(plan), "--json",
                          "--quiet"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=60)
    assert ran.returncode == 0, ran.stderr
    run_id = json.loads(ran.stdout)["run_id"]
    resumed = subprocess.run([sys.executable, "-m", "parallel_agents", "resume", run_id,
                              "--json", "--quiet"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=60)
    assert resumed.returncode == 0, resumed.stderr
    record = json.loads(resumed.stdout)
    assert record["tasks"]["a"]["status"] == "succeeded"
    assert "final_response" not in record
    # The same record as `run --json`, with the plan and the limit the run ran under.
    first = json.loads(ran.stdout)
    assert set(record) == set(first)
    assert record["plan"] == first["plan"] and record["max_workers"] == first["max_workers"]





def _interrupted_run(store: RunStore, workspace: Path, calls: list[str]
                     ) -> tuple[str, Callable[..., Any]]:
    """A coordinated run of the `api` template stopped (cancelled) while `backend` runs.
    `architecture` and, once resumed, `backend` both write NOTES.md."""
    executor = pa.Executor(store=store, workspace=workspace)

    async def work(spec, ctx):  # noqa: ANN001, ANN202
        calls.append(spec["id"])
        if spec["id"] == "backend" and calls.count("backend") == 1:
            executor.cancel("stopped half-way")  # like Ctrl-C while it runs
            await asyncio.sleep(30)
        if spec["id"] in ("architecture", "backend"):
            (Path(ctx.workspace) / "NOTES.md").write_text(f"notes by {spec['id']}\n")
            return pa.TaskOutput(output=f"{spec['id']} done", files=["NOTES.md"])
        return f"{spec['id']} done"

    coordinator = Coordinator(run_task=work)
    decomposition = asyncio.run(coordinator.plan(REQUEST, template="api"))
    first = asyncio.run(coordinator.execute(decomposition, executor=executor))
    assert first.run.status == "cancelled"
    assert first.run.tasks["architecture"].status == "succeeded"
    return first.run.run_id, work


def test_the_python_api_resumes_a_coordinated_run(tmp_path: Path) -> None:
    """`Coordinator.resume`: what did not succeed runs (with `run_task`, the plan is rebuilt
    from the stored decomposition), what did is not run again, and the answer comes. A file
    a task wrote before the interruption and another overwrote after it is compared in both
    versions: the aggregator reads the first from the checkpoint taken after its task."""
    calls: list[str] = []
    with RunStore(tmp_path / "runs.db") as store:
        run_id, work = _interrupted_run(store, tmp_path / "ws", calls)
        before = list(calls)
        outcome = asyncio.run(Coordinator(run_task=work, executor_options={"store": store})
                              .resume(run_id))
    assert outcome.run.status == "succeeded"
    again = calls[len(before):]
    assert "backend" in again and not set(again) & {"architecture", "api_design",
                                                     "database_models"}
    assert outcome.final_response.strip() and outcome.workspace == tmp_path / "ws"
    assert outcome.decomposition.template == "api"
    assert (tmp_path / "ws" / "FINAL_RESPONSE.md").read_text() == outcome.final_response
    notes = [c for c in outcome.conflicts if c.subject == "NOTES.md"]
    assert notes and set(notes[0].tasks) == {"architecture", "backend"}
    merged = (tmp_path / "ws" / "NOTES.md").read_text()
    assert "notes by architecture" in merged and "notes by backend" in merged


def test_resuming_a_coordinated_run_needs_its_workspace_and_its_decomposition(
        tmp_path: Path) -> None:
    import shutil

    calls: list[str] = []
    with RunStore(tmp_path / "runs.db") as store:
        run_id, _ = _interrupted_run(store, tmp_path / "ws", calls)
        shutil.rmtree(tmp_path / "ws")
        with pytest.raises(pa.UsageError, match="its workspace .* is gone"):
            asyncio.run(Coordinator(executor_options={"store": store}).resume(run_id))
        plain = asyncio.run(pa.Executor(store=store).execute(
            pa.Plan(tasks=[pa.Task(id="a", command=[sys.executable, "-c", "print(1)"])])))
        with pytest.raises(pa.UsageError, match="was not started by the coordinator"):
            asyncio.run(Coordinator(executor_options={"store": store}).resume(plain.run_id))
        with pytest.raises(pa.UsageError, match="needs its store"):
            asyncio.run(Coordinator().resume(run_id))
