"""What a reviewer found leaking or crashing, over real HTTP: each stays fixed."""

from __future__ import annotations

import sys

import pytest
from http_support import client_for, plan_of, wait_finished

from parallel_agents.server import ServerThread, create_app


# -- the server's own auth never reaches its tasks -------------------------------------------
def test_command_tasks_do_not_inherit_the_servers_token(monkeypatch) -> None:
    token = "server-env-token-987654"
    monkeypatch.setenv("PARALLEL_AGENTS_TOKEN", token)
    monkeypatch.setenv("DEPLOY_GATEWAY_CRED", token)  # any variable holding a server token
    monkeypatch.setenv("HARMLESS_SETTING", "kept")
    show = ("import os; print('|'.join(os.environ.get(n, 'absent')[::-1] for n in "
            "('PARALLEL_AGENTS_TOKEN', 'DEPLOY_GATEWAY_CRED', 'HARMLESS_SETTING')))")
    task = {"id": "peek", "command": [sys.executable, "-c", show]}
    with ServerThread(create_app(token=token)) as srv, client_for(srv, token) as client:
        r = client.post("/api/execute-parallel", json={"plan": plan_of(task)})
        assert r.status_code == 202, r.text
        body = wait_finished(client, r.json()["execution_id"])
    assert body["results"]["peek"]["output"] == "tnesba|tnesba|tpek"
