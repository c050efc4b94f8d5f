"""Request texts over HTTP through the real coordinator (keyword planning, scripted LLM tasks).

The coordinator plans without a model (`Coordinator()` = the keyword analysis, what
`PARALLEL_AGENTS_PLANNER=keywords` selects); its LLM tasks run on the gateway's executor
against a scripted provider, so every answer is known and nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from http_support import read_sse, sleep_task, wait_finished

from parallel_agents.coordinator import Coordinator
from parallel_agents.providers.base import ChatRequest, ChatResponse, FunctionProvider, Usage
from parallel_agents.server import CoordinatorPlanner, ServerThread, create_app

MODEL = "scripted:gpt-4o-mini"  # priced (built-in table), so budgets apply
SECRET = "sk-test-secret-value-42"


async def answer(request: ChatRequest) -> ChatResponse:
    """Answers each task with its first line; echoes a secret to prove redaction."""
    await asyncio.sleep(0.05)
    prompt = request.messages[-1].content
    first = prompt.strip().splitlines()[0][:60]
    return ChatResponse(text=f"Delivered: {first} (key {SECRET})", usage=Usage(20, 10))


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, monkeypatch_module) -> Iterator[httpx.Client]:
    monkeypatch_module.setenv("SERVICE_API_KEY", SECRET)  # the server masks env secrets
    runs = tmp_path_factory.mktemp("runs")
    planner = CoordinatorPlanner(Coordinator(model=MODEL), runs_dir=runs)
    app = create_app(planner=planner,
                     executor_options={"providers": {"scripted": FunctionProvider(answer)}})
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        c.runs_dir = runs  # type: ignore[attr-defined]
        yield c


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_a_message_is_planned_run_and_answered(client: httpx.Client) -> None:
    r = client.post("/api/execute-parallel",
                    json={"message": "Build a restaurant website with booking",
                          "sessionKey": "s1", "project": "bistro"})
    assert r.status_code == 202, r.text
    started = r.json()
    assert started["decision"]["mode"] == "parallel"
    assert started["decision"]["source"] == "keywords"
    ids = {t["id"] for t in started["tasks"]}
    assert ids == {"frontend", "backend", "database_schema", "security_audit"}
    assert started["estimated_duration"] > 0
    done = wait_finished(client, started["execution_id"])
    assert done["status"] == "succeeded", done
    assert done["final_response"].startswith("# Done")
    assert "Delivered: " in done["final_response"]
    assert isinstance(done["conflicts"], list)
    assert done["decision"]["mode"] == "parallel"
    assert set(done["results"]) == ids
    assert done["cost"]["usd"] > 0 and done["cost"]["tokens"]
    # The run's workspace is under the planner's runs_dir, named by the execution id.
    workspace = Path(client.runs_dir) / started["execution_id"]  # type: ignore[attr-defined]
    assert (workspace / "FINAL_RESPONSE.md").read_text().startswith("# Done")
    # Secrets echoed by a model never reach clients.
    shown = client.get(f"/api/execution/{started['execution_id']}").text
    assert SECRET not in shown and "(key ***)" in shown
    with client.stream("GET", f"/api/execution/{started['execution_id']}/events") as s:
        events = read_sse(s)
    assert events[-1]["kind"] == "run_finished"
    assert SECRET not in str(events)


def test_chat_routes_a_beneficial_request_to_a_parallel_execution(client: httpx.Client) -> None:
    body = client.post("/api/chat", json={"message": "Create index.html and app.js",
                                          "sessionKey": "s2"}).json()
    assert body["mode"] == "parallel" and body["execution_id"]
    assert "predicted" in body["reason"]
    done = wait_finished(client, body["execution_id"])
    assert done["status"] == "succeeded" and len(done["tasks"]) == 3
    assert done["final_response"]


def test_chat_answers_a_small_request_serially_in_the_response(client: httpx.Client) -> None:
    body = client.post("/api/chat", json={"message": "Fix the login bug"}).json()
    assert body["mode"] == "serial", body
    assert body["status"] == "succeeded"
    assert "Delivered: Fix the login bug" in body["response"]
    assert SECRET not in body["response"]
    assert "1 part" in body["reason"]
    # It ran as a one-task execution, visible like any other.
    done = client.get(f"/api/execution/{body['execution_id']}").json()
    assert [t["id"] for t in done["tasks"]] == ["main"]


def test_force_parallel_keeps_the_parts(client: httpx.Client) -> None:
    message = "Write a backend API with tests"
    serial = client.post("/api/execute-parallel", json={"message": message}).json()
    assert serial["decision"]["mode"] == "serial" and len(serial["tasks"]) == 1
    forced = client.post("/api/execute-parallel",
                         json={"message": message, "force_parallel": True}).json()
    assert forced["decision"]["mode"] == "parallel"
    assert forced["decision"]["reason"].startswith("forced parallel")
    assert len(forced["tasks"]) == 2
    for execution in (serial, forced):
        assert wait_finished(client, execution["execution_id"])["status"] == "succeeded"


def test_a_zero_budget_ends_partial_with_the_reason(client: httpx.Client) -> None:
    """A plan of a command task and a priced LLM task: the command runs, the LLM is skipped."""
    plan = {"tasks": [sleep_task("prepare", 0.05),
                      {"id": "write", "prompt": "Write the summary.", "model": MODEL}]}
    r = client.post("/api/execute-parallel", json={"plan": plan, "budget_usd": 0})
    assert r.status_code == 202, r.text
    done = wait_finished(client, r.json()["execution_id"])
    assert done["status"] == "partial", done
    assert done["reason"].startswith("budget exhausted ($0): 1 task(s) not run")
    states = {t["id"]: t["status"] for t in done["tasks"]}
    assert states == {"prepare": "succeeded", "write": "skipped"}
    assert done["cost"]["usd"] == 0


def test_a_zero_budget_on_a_message_delivers_nothing_and_says_why(
        client: httpx.Client) -> None:
    """Every planned task is a priced LLM task: none may start, so the run fails (nothing
    delivered) with the budget as its reason, and the answer says so."""
    r = client.post("/api/execute-parallel",
                    json={"message": "Build a restaurant website with booking",
                          "budget_usd": 0})
    assert r.status_code == 202, r.text
    done = wait_finished(client, r.json()["execution_id"])
    assert done["status"] == "failed", done
    assert done["reason"].startswith("budget exhausted ($0): 3 task(s) not run")
    assert all(t["status"] == "skipped" for t in done["tasks"])
    assert done["cost"]["usd"] == 0
    assert "Not delivered" in done["final_response"]


def test_an_unpriced_model_under_a_budget_is_refused_up_front(
        tmp_path: Path) -> None:
    planner = CoordinatorPlanner(Coordinator(model="scripted:mystery"), runs_dir=tmp_path)
    app = create_app(planner=planner,
                     executor_options={"providers": {"scripted": FunctionProvider(answer)}})
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        r = c.post("/api/execute-parallel", json={"message": "Fix the login bug",
                                                  "budget_usd": 1})
        assert r.status_code == 422, r.text
        assert "no price known for 'scripted:mystery'" in r.text
        assert c.get("/api/executions").json()["total"] == 0
