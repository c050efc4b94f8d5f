"""What a reviewer found leaking or crashing, over real HTTP: each stays fixed."""

from __future__ import annotations

import sys

import pytest
from http_support import TOKEN, client_for, plan_of, wait_finished

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


# -- credentials inside provider URLs ---------------------------------------------------------
def test_a_password_in_the_providers_url_stays_out_of_errors_events_and_the_store(
        monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://u:cred-pass-777@127.0.0.1:9/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-url-key-0001")
    store = tmp_path / "runs.db"
    task = {"id": "ask", "prompt": "hi", "model": "openai:gpt-4o-mini"}
    with ServerThread(create_app(token=TOKEN, run_store=store)) as srv, \
            client_for(srv) as client:
        r = client.post("/api/execute-parallel", json={"plan": plan_of(task)})
        assert r.status_code == 202, r.text
        eid = r.json()["execution_id"]
        body = wait_finished(client, eid)
        with client.stream("GET", f"/api/execution/{eid}/events") as stream:
            events = "".join(stream.iter_text())
    error = body["results"]["ask"]["error"]
    # Masked by the provider itself (the server's redactor would leave `u:***@`).
    assert "connection failed talking to http://***@127.0.0.1:9/v1" in error
    assert "cred-pass-777" not in str(body) + events
    assert b"cred-pass-777" not in b"".join(p.read_bytes() for p in tmp_path.rglob("runs.db*"))


@pytest.mark.parametrize("url", ["http://u:cred-pass-777@127.0.0.1:9/v1",
                                 "http://127.0.0.1:9/v1?api_key=cred-pass-777"])
def test_plans_with_credentials_in_a_base_url_are_refused(client, url) -> None:
    plan = plan_of({"id": "a", "prompt": "hi", "model": "openai:m"},
                   providers={"openai": {"base_url": url}})
    r = client.post("/api/execute-parallel", json={"plan": plan})
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_plan"
    assert err["problems"][0]["location"] == "plan.providers.openai.base_url"
    assert "OPENAI_BASE_URL" in err["problems"][0]["message"]
    assert "cred-pass-777" not in r.text
    clean = plan_of({"id": "a", "prompt": "hi", "model": "openai:m"},
                    providers={"openai": {"base_url": "http://u@127.0.0.1:9/v1?model=x"}})
    ok = client.post("/api/execute-parallel", json={"plan": clean})
    assert ok.status_code == 202, ok.text


# -- event seqs out of range --------------------------------------------------------------------
def test_event_seqs_beyond_sqlites_range_are_a_clear_400(tmp_path) -> None:
    with ServerThread(create_app(token=TOKEN, run_store=tmp_path / "runs.db")) as srv, \
            client_for(srv) as client:
        r = client.post("/api/execute-parallel", json={"plan": plan_of(
            {"id": "a", "command": [sys.executable, "-c", "print(1)"]})})
        eid = r.json()["execution_id"]
        wait_finished(client, eid)
        url = f"/api/execution/{eid}/events"
        huge = "99999999999999999999999999999"
        asked = [client.get(url, headers={"Last-Event-ID": v})
                 for v in (huge, str(2**63), "-1", "1e3", "x")]
        asked += [client.get(url, params={"after": v})
                  for v in (huge, str(2**63), "-1", "1e3", "x", "", "\u0663")]
        for r in asked:
            assert r.status_code == 400, (r.request.url, r.request.headers, r.text)
            err = r.json()["error"]
            assert err["type"] == "bad_request"
            assert "integer from 0 to 9223372036854775807" in err["message"]
        with client.stream("GET", url, params={"after": str(2**63 - 1)}) as last:
            assert last.status_code == 200 and list(last.iter_lines()) == []
        with client.stream("GET", url, headers={"Last-Event-ID": "2"}) as rest:
            assert rest.status_code == 200


# -- names and errors are masked like outputs ------------------------------------------------
def test_names_project_session_key_and_errors_are_masked(monkeypatch, tmp_path) -> None:
    secret = "sk-test-XYZ123"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    app = create_app(token=TOKEN, run_store=tmp_path / "runs.db")
    with ServerThread(app) as srv, client_for(srv) as client:
        plan = {**plan_of({"id": "a", "command": [sys.executable, "-c", "print(1)"]}),
                "name": f"plan-{secret}"}
        r = client.post("/api/execute-parallel", json={
            "plan": plan, "project": f"project {secret}", "sessionKey": f"s-{secret}"})
        assert r.status_code == 202, r.text
        eid = r.json()["execution_id"]
        body = wait_finished(client, eid)
        assert (body["plan"], body["project"], body["sessionKey"]) == (
            "plan-***", "project ***", "s-***")
        listed = client.get("/api/executions", params={"sessionKey": f"s-{secret}"})
        assert [i["execution_id"] for i in listed.json()["items"]] == [eid]
        bad = plan_of({"id": "b", "command": ["true"], "depends_on": [secret]})
        refused = client.post("/api/execute-parallel", json={"plan": bad})
        assert refused.status_code == 422 and "unknown task '***'" in refused.text
        texts = [r.text, str(body), listed.text, refused.text]
    for text in texts:
        assert secret not in text
    stored = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "project_state.yaml" for p in stored)
    for path in stored:
        assert secret.encode() not in path.read_bytes(), path


@pytest.mark.parametrize("token, sessions, words", [
    ("ab", {}, "--token must be at least 8 characters, got 2"),
    (TOKEN, {"a": "optok"}, "--session a: its token must be at least 8 characters, got 5"),
    (TOKEN, {"a": TOKEN}, "--session a has the same token as the operator token"),
    (None, {"a": "same-token-123", "b": "same-token-123"},
     "--session b has the same token as --session a"),
])
def test_short_and_shared_tokens_are_refused(token, sessions, words) -> None:
    from parallel_agents._exceptions import UsageError

    with pytest.raises(UsageError, match=words):
        create_app(token=token, session_tokens=sessions)


# -- request fields are what they say --------------------------------------------------------
def test_force_parallel_must_be_a_boolean_and_budgets_finite(client) -> None:
    plan = plan_of({"id": "a", "command": [sys.executable, "-c", "print(1)"]})
    for extra, where in [({"force_parallel": "yes"}, "body.force_parallel"),
                         ({"force_parallel": 1}, "body.force_parallel"),
                         ({"budget_usd": "1e999"}, "body.budget_usd"),
                         ({"budget_usd": -0.5}, "body.budget_usd")]:
        r = client.post("/api/execute-parallel", json={"plan": plan, **extra})
        assert r.status_code == 422, (extra, r.text)
        err = r.json()["error"]
        assert err["type"] == "invalid_request" and err["problems"][0]["location"] == where
    # JSON has no infinity, but Python's parser reads 1e999 as one.
    r = client.post("/api/execute-parallel", content=b'{"plan": {"tasks": [{"id": "a", '
                    b'"command": ["true"]}]}, "budget_usd": 1e999}',
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and "finite" in r.text, r.text
    ok = client.post("/api/execute-parallel", json={"plan": plan, "force_parallel": True,
                                                    "budget_usd": 0.5})
    assert ok.status_code == 202, ok.text
    wait_finished(client, ok.json()["execution_id"])
