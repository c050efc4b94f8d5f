"""The gateway over the durable store: executions, events and answers survive a restart;
secrets never reach the file; the CLI's `list`/`status` see server runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from http_support import plan_of, read_sse, sleep_task, wait_finished

from parallel_agents.coordinator import Coordinator
from parallel_agents.providers.base import FunctionProvider
from parallel_agents.server import CoordinatorPlanner, ServerThread, create_app

PLAN_SECRET = "plan-secret-value-8d1f2a"
TOKEN = "durable-operator-token-123456"


def _echo_secret_task(task_id: str) -> dict:
    code = ("import os, sys; print('key', os.environ['SERVICE_API_KEY']); "
            "print('warn', os.environ['SERVICE_API_KEY'], file=sys.stderr)")
    return {"id": task_id, "command": [sys.executable, "-c", code],
            "env": {"SERVICE_API_KEY": PLAN_SECRET}}


def _server(store: Path, **options) -> ServerThread:
    return ServerThread(create_app(token=TOKEN, run_store=store, **options))


def _client(srv: ServerThread) -> httpx.Client:
    return httpx.Client(base_url=srv.url, timeout=60,
                        headers={"Authorization": f"Bearer {TOKEN}"})


def test_executions_and_events_survive_a_restart(tmp_path: Path) -> None:
    store = tmp_path / "runs.db"
    plan = plan_of(sleep_task("a", 0.05), _echo_secret_task("b"),
                   sleep_task("c", 0.05, depends_on=["a", "b"]))
    with _server(store) as srv, _client(srv) as c:
        r = c.post("/api/execute-parallel", json={"plan": plan, "sessionKey": "s1",
                                                  "project": "p"})
        assert r.status_code == 202, r.text
        execution_id = r.json()["execution_id"]
        before = wait_finished(c, execution_id)
        assert before["status"] == "succeeded"
        with c.stream("GET", f"/api/execution/{execution_id}/events") as s:
            live_events = read_sse(s)
    assert live_events[-1]["kind"] == "run_finished"

    with _server(store) as srv, _client(srv) as c:
        after = c.get(f"/api/execution/{execution_id}").json()
        for key in ("status", "sessionKey", "project", "plan", "estimated_duration",
                    "makespan_seconds", "speedup", "cost", "results"):
            assert after[key] == before[key], key
        assert [t["id"] for t in after["tasks"]] == ["a", "b", "c"]
        assert after["events"] == len(live_events)
        assert "key ***" in str(after["results"]["b"])
        # Replay after restart: the same events, in order; Last-Event-ID resumes mid-way.
        with c.stream("GET", f"/api/execution/{execution_id}/events") as s:
            replayed = read_sse(s)
        assert replayed == live_events
        with c.stream("GET", f"/api/execution/{execution_id}/events",
                      headers={"Last-Event-ID": "3"}) as s:
            tail = read_sse(s)
        assert tail == live_events[3:]
        page = c.get("/api/executions").json()
        assert page["total"] == 1 and page["items"][0]["execution_id"] == execution_id
        assert page["items"][0]["counts"]["succeeded"] == 3
        assert c.get("/api/executions", params={"sessionKey": "other"}).json()["total"] == 0

    # Nothing in the store file (or its WAL) holds the secret or the token.
    for path in tmp_path.glob("runs.db*"):
        data = path.read_bytes()
        assert PLAN_SECRET.encode() not in data, path
        assert TOKEN.encode() not in data, path

    # The CLI sees the server's run like any other durable run.
    env = {**os.environ}
    listed = subprocess.run([sys.executable, "-m", "parallel_agents", "list", "--store",
                             str(store)], capture_output=True, text=True, env=env, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert execution_id in listed.stdout
    status = subprocess.run([sys.executable, "-m", "parallel_agents", "status", execution_id,
                             "--store", str(store)], capture_output=True, text=True, env=env,
                            timeout=60)
    assert status.returncode == 0, status.stderr
    assert "succeeded" in status.stdout
    assert PLAN_SECRET not in status.stdout + listed.stdout


def test_a_coordinated_answer_survives_a_restart(tmp_path: Path) -> None:
    store = tmp_path / "runs.db"
    provider = FunctionProvider(lambda request: "Delivered.")
    options = {"planner": CoordinatorPlanner(Coordinator(model="scripted:gpt-4o-mini")),
               "executor_options": {"providers": {"scripted": provider}}}
    with _server(store, **options) as srv, _client(srv) as c:
        r = c.post("/api/execute-parallel", json={"message": "Create index.html and app.js"})
        assert r.status_code == 202, r.text
        execution_id = r.json()["execution_id"]
        before = wait_finished(c, execution_id)
    assert before["status"] == "succeeded" and before["final_response"]
    # The workspace lives next to the store, like plain durable runs.
    assert (tmp_path / "runs" / execution_id / "FINAL_RESPONSE.md").is_file()
    with _server(store, **options) as srv, _client(srv) as c:
        after = c.get(f"/api/execution/{execution_id}").json()
    assert after["final_response"] == before["final_response"]
    assert after["decision"] == before["decision"] and after["conflicts"] == before["conflicts"]


def _serve(store: Path, cwd: Path) -> tuple[subprocess.Popen, str]:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "PARALLEL_AGENTS_TOKEN"}
    proc = subprocess.Popen([sys.executable, "-m", "parallel_agents", "serve", "--port",
                             str(port), "--store", str(store), "--log-level", "warning"],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.1)


def _wait_for_tasks(base: str, execution_id: str,
                    done: Callable[[dict[str, str]], bool], timeout: float = 60) -> None:
    """Poll the execution until `done({task: status})` holds."""
    deadline = time.monotonic() + timeout
    while True:
        tasks = {t["id"]: t["status"] for t in
                 httpx.get(f"{base}/api/execution/{execution_id}").json()["tasks"]}
        if done(tasks):
            return
        assert time.monotonic() < deadline, tasks
        time.sleep(0.1)


def _stop(proc: subprocess.Popen) -> None:
    import signal

    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err


def test_a_run_cut_off_by_a_server_crash_is_resumed_by_the_cli(tmp_path: Path) -> None:
    store = tmp_path / "runs.db"
    gate = tmp_path / "go"
    wait_for_gate = (f"import os, time\nfor _ in range(600):\n    if os.path.exists({str(gate)!r}):"
                     f" break\n    time.sleep(0.1)\nelse:\n    raise SystemExit('no gate')\n"
                     f"print('through the gate')")
    plan = plan_of(sleep_task("quick", 0.05),
                   # The crashed attempt counts against max_retries (docs/durability.md).
                   {"id": "gated", "command": [sys.executable, "-c", wait_for_gate],
                    "max_retries": 1})
    proc, base = _serve(store, tmp_path)
    try:
        execution_id = httpx.post(base + "/api/execute-parallel",
                                  json={"plan": plan}).json()["execution_id"]
        # `quick` has succeeded (committed) and `gated` runs
        _wait_for_tasks(base, execution_id,
                        lambda tasks: tasks == {"quick": "succeeded", "gated": "running"})
    finally:
        proc.kill()  # a crash: no shutdown, no final write
        proc.wait(timeout=30)

    proc, base = _serve(store, tmp_path)
    try:
        body = httpx.get(f"{base}/api/execution/{execution_id}").json()
        assert body["status"] == "interrupted"
        # What the store knows: the committed task and the one the crash cut off.
        assert {t["id"]: t["status"] for t in body["tasks"]} == {
            "quick": "succeeded", "gated": "interrupted"}
        assert body["results"]["quick"]["output"].strip()
        listed = httpx.get(f"{base}/api/executions").json()
        mine = next(e for e in listed["items"] if e["execution_id"] == execution_id)
        assert mine["counts"] == {"succeeded": 1, "interrupted": 1}
    finally:
        _stop(proc)

    gate.write_text("open")
    resumed = subprocess.run([sys.executable, "-m", "parallel_agents", "resume", execution_id,
                              "--store", str(store)], capture_output=True, text=True,
                             cwd=tmp_path, timeout=120)
    assert resumed.returncode == 0, resumed.stderr

    proc, base = _serve(store, tmp_path)
    try:
        body = httpx.get(f"{base}/api/execution/{execution_id}").json()
        assert body["status"] == "succeeded", body
        assert body["results"]["quick"]["attempts"] == 1  # not run again
    finally:
        _stop(proc)


def test_a_request_cut_off_by_a_server_crash_gets_its_answer_from_the_cli_resume(
        tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """`serve` takes the config file's model and provider for request texts; after a crash,
    `parallel-agents resume` finishes the request and the gateway then shows the
    coordinator's final response."""
    import sqlite3
    from tests.fakes.openai_server import FakeLLMServer, Reply, user_prompt

    store = tmp_path / "runs.db"
    with FakeLLMServer() as llm:
        llm.handler = lambda body: (Reply.hang(15) if "Audit the backend" in user_prompt(body)
                                    else Reply.text("built"))
        (tmp_path / "parallel-agents.toml").write_text(llm.config_toml("served-model"))
        monkeypatch.setenv("PARALLEL_AGENTS_PLANNER", "keywords")
        monkeypatch.setenv("FAKE_LLM_KEY", "sk-fake-served")
        proc, base = _serve(store, tmp_path)
        try:
            execution_id = httpx.post(base + "/api/execute-parallel", json={
                "message": "Build a restaurant website with booking"}).json()["execution_id"]
            # the three first tasks committed, the audit hangs
            _wait_for_tasks(base, execution_id, lambda tasks: (
                tasks.get("security_audit") == "running"
                and list(tasks.values()).count("succeeded") == 3))
        finally:
            proc.kill()  # a crash: no shutdown, no final write
            proc.wait(timeout=30)
        assert {r.body["model"] for r in llm.requests} == {"served-model"}
        llm.handler = lambda body: Reply.text("audited")
        resumed = subprocess.run(
            [sys.executable, "-m", "parallel_agents", "resume", execution_id, "--store",
             str(store), "--json", "--quiet"], capture_output=True, text=True,
            cwd=tmp_path, timeout=120)
        assert resumed.returncode == 0, resumed.stderr
        answer = json.loads(resumed.stdout)["final_response"]
        proc, base = _serve(store, tmp_path)
        try:
            body = httpx.get(f"{base}/api/execution/{execution_id}").json()
        finally:
            _stop(proc)
    assert body["status"] == "succeeded", body
    assert body["final_response"] == answer and answer.strip()
    assert body["decision"]["source"] == "keywords"
    row = sqlite3.connect(store).execute("SELECT result_json FROM runs").fetchone()[0]
    assert json.loads(row)["final_response"] == answer


def test_added_result_fields_keep_nulls_and_are_masked_as_values(tmp_path: Path) -> None:
    """`add_to_result` sets top-level keys (a null stays a null), and the gateway's store
    masks the values before they are encoded: a secret that only appears in the JSON text
    (here after the escape of a newline) cannot break the stored JSON."""
    import asyncio

    import parallel_agents as pa
    from parallel_agents.server._durable import RedactingRunStore
    from parallel_agents.server._redact import Redactor

    plan = pa.Plan(tasks=[pa.Task(id="a", command=[sys.executable, "-c", "print(1)"])])
    store = RedactingRunStore(tmp_path / "runs.db", redactor=Redactor(["ntoken-42",
                                                                       "sk-real-secret"]))
    try:
        run_id = asyncio.run(pa.Executor(store=store).execute(plan)).run_id
        store.add_to_result(run_id, {"final_response": "line one\ntoken-42 sk-real-secret",
                                     "decision": {"template": None}, "files": None})
        other = asyncio.run(pa.Executor(store=store).execute(plan))  # same batch or after
        store.flush()
        saved = store.load_run(run_id)
    finally:
        store.close()
    assert other.status == "succeeded"
    assert saved.result["final_response"] == "line one\ntoken-42 ***"
    assert saved.result["decision"] == {"template": None} and saved.result["files"] is None
    assert saved.result["status"] == "succeeded" and "a" in saved.result["tasks"]


def test_once_the_stream_says_run_finished_the_execution_is_finished(tmp_path: Path) -> None:
    """The dashboard asks for the execution when it sees run_finished: it must find the
    result there, not a still-running execution (the event came while the store was still
    committing the run's end)."""
    with _server(tmp_path / "runs.db") as srv, _client(srv) as client:
        for _ in range(5):
            eid = client.post("/api/execute-parallel", json={
                "plan": plan_of(sleep_task("x", 0.05))}).json()["execution_id"]
            with client.stream("GET", f"/api/execution/{eid}/events") as live:
                for line in live.iter_lines():  # asked the moment the event arrives
                    if line.startswith("data:") and '"run_finished"' in line:
                        body = client.get(f"/api/execution/{eid}").json()
                        break
            assert body["status"] == "succeeded" and body["makespan_seconds"] is not None


def test_a_run_the_server_stopped_is_resumed_and_the_gateway_shows_its_end(
        tmp_path: Path) -> None:
    """A graceful shutdown cancels running executions: the reason says how to finish one,
    its cancelled attempt does not use up the task's only try, and once `resume` finished it
    the gateway shows the run's end, not the shutdown."""
    store = tmp_path / "runs.db"
    slow = ("import os, time\n"
            "if os.environ['PARALLEL_AGENTS_ATTEMPT'] == '1': time.sleep(30)\n"
            "print('finished')\n")
    plan = plan_of({"id": "slow", "command": [sys.executable, "-c", slow], "max_retries": 0})
    with _server(store) as srv, _client(srv) as c:
        eid = c.post("/api/execute-parallel", json={"plan": plan}).json()["execution_id"]
        deadline = time.monotonic() + 30
        while c.get(f"/api/execution/{eid}").json()["tasks"][0]["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
    # (leaving the block shut the server down)
    with _server(store) as srv, _client(srv) as c:
        stopped = c.get(f"/api/execution/{eid}").json()
    assert stopped["status"] == "cancelled"
    assert f"parallel-agents resume {eid}" in stopped["reason"]
    res = subprocess.run([sys.executable, "-m", "parallel_agents", "resume", eid, "--store",
                          str(store), "-q"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    with _server(store) as srv, _client(srv) as c:
        after = c.get(f"/api/execution/{eid}").json()
    assert after["status"] == "succeeded"
    assert after["results"]["slow"]["output"] == "finished"
