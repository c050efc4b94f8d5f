"""The coordinator seam: request texts become plans through a `Planner`, over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from http_support import plan_of, sleep_task, wait_finished

from parallel_agents import Plan
from parallel_agents.server import ServerThread, create_app

calls: list[dict] = []


async def keyword_planner(message: str, *, session_key: str | None, project: str | None,
                          force_parallel: bool) -> Plan | None:
    """Plans one task per comma-separated item; declines single items unless forced."""
    calls.append({"message": message, "session_key": session_key, "project": project,
                  "force_parallel": force_parallel})
    items = [i.strip() for i in message.split(",") if i.strip()]
    if len(items) < 2 and not force_parallel:
        return None
    return Plan.from_dict(plan_of(*[sleep_task(f"item{n}", 0.05) for n in range(len(items))]))


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with ServerThread(create_app(planner=keyword_planner)) as srv, \
            httpx.Client(base_url=srv.url, timeout=30) as c:
        yield c


def test_chat_routes_to_a_parallel_execution_when_the_planner_plans(client) -> None:
    r = client.post("/api/chat", json={"message": "a, b, c", "sessionKey": "s1",
                                       "project": "web"})
    body = r.json()
    assert r.status_code == 200 and body["mode"] == "parallel"
    done = wait_finished(client, body["execution_id"])
    assert done["status"] == "succeeded" and len(done["tasks"]) == 3
    assert done["sessionKey"] == "s1" and done["project"] == "web"
    assert calls[-1] == {"message": "a, b, c", "session_key": "s1", "project": "web",
                         "force_parallel": False}


def test_chat_answers_serially_when_the_planner_declines(client) -> None:
    body = client.post("/api/chat", json={"message": "just one"}).json()
    assert body["mode"] == "serial" and body["execution_id"] is None
    assert "not worth running in parallel" in body["message"]


def test_execute_parallel_with_a_message(client) -> None:
    declined = client.post("/api/execute-parallel", json={"message": "one"})
    assert declined.status_code == 422
    assert declined.json()["error"]["type"] == "not_parallel"
    forced = client.post("/api/execute-parallel", json={"message": "one",
                                                         "force_parallel": True})
    assert forced.status_code == 202
    assert calls[-1]["force_parallel"] is True
    assert wait_finished(client, forced.json()["execution_id"])["status"] == "succeeded"
