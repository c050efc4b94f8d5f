"""Helpers for the gateway tests: a real server on loopback (uvicorn in a thread, port 0),
httpx clients for it, plans of command tasks, and an SSE reader."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from parallel_agents.server import Limits, ServerThread, create_app

TOKEN = "operator-token-0123456789"
ALICE = "alice-token-0123456789"
BOB = "bob-token-0123456789"


def sleep_task(task_id: str, seconds: float = 0.2, **extra: Any) -> dict[str, Any]:
    code = f"import time; time.sleep({seconds}); print('done {task_id}')"
    return {"id": task_id, "command": [sys.executable, "-c", code], **extra}


def plan_of(*tasks: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": "test", "tasks": list(tasks), **extra}


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    app = create_app(token=TOKEN, session_tokens={"alice": ALICE, "bob": BOB},
                     limits=Limits(max_body_bytes=64 * 1024, max_tasks=50))
    with ServerThread(app) as srv:
        yield srv


def client_for(server: ServerThread, token: str | None = TOKEN) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=30)


@pytest.fixture()
def client(server: ServerThread) -> Iterator[httpx.Client]:
    with client_for(server) as c:
        yield c


def wait_finished(client: httpx.Client, execution_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/api/execution/{execution_id}").json()
        if body["status"] != "running":
            return body
        time.sleep(0.05)
    raise AssertionError(f"execution {execution_id} did not finish in {timeout}s")


def read_sse(response: httpx.Response, stop_after: int | None = None) -> list[dict]:
    """Parse an SSE stream into the events' JSON data (with the SSE id checked)."""
    events: list[dict] = []
    event_id = None
    data: list[str] = []
    for line in response.iter_lines():
        if line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip(" "))
        elif line == "" and data:
            event = json.loads("\n".join(data))
            assert event_id == str(event["seq"])
            events.append(event)
            data, event_id = [], None
            if stop_after is not None and len(events) >= stop_after:
                break
    return events
