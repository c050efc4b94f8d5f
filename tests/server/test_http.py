"""The gateway over real HTTP on loopback: auth, bad inputs, runs, SSE replay and resume."""

from __future__ import annotations

import sys

import httpx
import pytest
from http_support import ALICE, BOB, TOKEN, client_for, plan_of, read_sse, sleep_task, wait_finished


def start(client: httpx.Client, plan: dict, **extra) -> str:
    r = client.post("/api/execute-parallel", json={"plan": plan, **extra})
    assert r.status_code == 202, r.text
    return r.json()["execution_id"]


def assert_error(r: httpx.Response, status: int, type_: str, *words: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert err["type"] == type_, err
    for word in words:
        assert word in err["message"] or any(word in p["message"] or word in p["location"]
                                             for p in err.get("problems", [])), err
    return err


# -- auth -------------------------------------------------------------------------------
def test_healthz_needs_no_token_and_everything_else_does(server):
    with client_for(server, token=None) as anon:
        assert anon.get("/healthz").json()["status"] == "ok"
        for method, path in [("GET", "/api/executions"), ("GET", "/metrics"),
                             ("GET", "/api/execution/x"), ("GET", "/api/execution/x/events"),
                             ("POST", "/api/execution/x/cancel"), ("POST", "/api/chat"),
                             ("POST", "/api/execute-parallel")]:
            r = anon.request(method, path, json={"message": "hi"})
            assert_error(r, 401, "unauthorized", "Bearer")
            assert r.headers["www-authenticate"] == "Bearer"
    with client_for(server, token="wrong-token-123456") as wrong:
        assert_error(wrong.get("/api/executions"), 401, "unauthorized", "wrong token")
    r = httpx.get(server.url + "/api/executions", headers={"Authorization": "Basic abc"})
    assert_error(r, 401, "unauthorized", "malformed")


# -- a run, end to end ----------------------------------------------------------------------
def test_run_reports_results_speedup_and_every_event(client):
    plan = plan_of(sleep_task("a"), sleep_task("b"), sleep_task("c", depends_on=["a", "b"]))
    r = client.post("/api/execute-parallel", json={"plan": plan, "project": "p1"})
    assert r.status_code == 202
    started = r.json()
    assert started["status"] == "running"
    assert [t["id"] for t in started["tasks"]] == ["a", "b", "c"]
    assert started["estimated_duration"] == pytest.approx(2.0)  # two levels of 1 s estimates
    body = wait_finished(client, started["execution_id"])
    assert body["status"] == "succeeded"
    assert body["project"] == "p1"
    assert body["results"]["c"]["output"] == "done c"
    assert {t["id"]: t["status"] for t in body["tasks"]} == dict.fromkeys("abc", "succeeded")
    assert body["speedup"] > 1.0  # a and b ran side by side
    assert body["cost"] == {"usd": 0.0, "tokens": {}}
    with client.stream("GET", started["events_url"]) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        events = read_sse(stream)
    assert [e["seq"] for e in events] == list(range(1, body["events"] + 1))
    assert events[0]["kind"] == "run_started" and events[-1]["kind"] == "run_finished"
    assert sum(e["kind"] == "task_succeeded" for e in events) == 3
    listed = client.get("/api/executions", params={"limit": 200}).json()
    assert started["execution_id"] in [i["execution_id"] for i in listed["items"]]


def test_failed_task_reports_its_error_and_skips_dependents(client):
    fail = {"id": "bad", "command": [sys.executable, "-c", "import sys; sys.exit('boom 42')"]}
    eid = start(client, plan_of(fail, sleep_task("after", depends_on=["bad"]), sleep_task("ok")))
    body = wait_finished(client, eid)
    assert body["status"] == "partial"
    states = {t["id"]: t for t in body["tasks"]}
    assert states["bad"]["status"] == "failed" and "boom 42" in states["bad"]["error"]
    assert states["after"]["status"] == "skipped"
    assert states["ok"]["status"] == "succeeded"
    assert body["results"]["bad"]["history"][0]["outcome"] == "failed"


# -- SSE: replay then live, and resumption without gaps or duplicates ------------------------
def test_sse_resumes_with_last_event_id_without_gaps_or_duplicates(client):
    tasks = [sleep_task(f"t{i}", 0.3, pool="p") for i in range(6)]
    eid = start(client, plan_of(*tasks, pools={"p": {"max_concurrent": 2}}))
    url = f"/api/execution/{eid}/events"
    with client.stream("GET", url) as first:
        head = read_sse(first, stop_after=4)  # drop the stream mid-run
    assert [e["seq"] for e in head] == [1, 2, 3, 4]
    with client.stream("GET", url, headers={"Last-Event-ID": str(head[-1]["seq"])}) as second:
        rest = read_sse(second)
    seqs = [e["seq"] for e in head + rest]
    assert seqs == list(range(1, len(seqs) + 1))
    assert rest[-1]["kind"] == "run_finished"
    body = wait_finished(client, eid)
    assert body["events"] == len(seqs)
    # ?after= does the same for clients that cannot set headers; past the end: empty stream.
    with client.stream("GET", url, params={"after": 10}) as third:
        assert [e["seq"] for e in read_sse(third)] == seqs[10:]
    with client.stream("GET", url, headers={"Last-Event-ID": str(len(seqs))}) as done:
        assert read_sse(done) == []


def test_sse_live_subscriber_sees_the_same_events_as_the_replay(client):
    eid = start(client, plan_of(sleep_task("x", 0.5), sleep_task("y", 0.2, depends_on=["x"])))
    with client.stream("GET", f"/api/execution/{eid}/events") as live:
        live_events = read_sse(live)
    with client.stream("GET", f"/api/execution/{eid}/events") as replay:
        assert read_sse(replay) == live_events


# -- cancel -------------------------------------------------------------------------------
def test_cancel_stops_a_running_execution(client):
    eid = start(client, plan_of(*[sleep_task(f"long{i}", 30) for i in range(3)],
                                sleep_task("later", 1, depends_on=["long0"])))
    r = client.post(f"/api/execution/{eid}/cancel")
    assert r.status_code == 200 and r.json()["cancelled"] is True
    body = wait_finished(client, eid, timeout=30)
    assert body["status"] == "cancelled"
    assert {t["status"] for t in body["tasks"]} <= {"cancelled", "skipped"}
    again = client.post(f"/api/execution/{eid}/cancel").json()
    assert again["cancelled"] is False and "already ended" in again["message"]


# -- bad requests: 4xx with a JSON error, never 500 ------------------------------------------
def test_bad_json_and_bad_bodies(client):
    r = client.post("/api/execute-parallel", content=b'{"plan": ',
                    headers={"Content-Type": "application/json"})
    assert_error(r, 400, "invalid_json", "not valid JSON")
    deep = b'{"plan": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    assert_error(client.post("/api/execute-parallel", content=deep,
                             headers={"Content-Type": "application/json"}),
                 400, "invalid_json", "nested too deeply")
    assert_error(client.post("/api/execute-parallel", json=[1, 2]), 422, "invalid_request",
                 "JSON object")
    assert_error(client.post("/api/execute-parallel", json={"plan": {}, "bogus": 1}), 422,
                 "invalid_request", "body.bogus")
    assert_error(client.post("/api/execute-parallel", json={}), 422, "invalid_request",
                 "nothing to run")
    assert_error(client.post("/api/execute-parallel", json={"plan": {"tasks": [1]},
                                                           "message": "x"}),
                 422, "invalid_request", "not both")
    assert_error(client.post("/api/execute-parallel", json={"plan": {"tasks": []}}), 422,
                 "invalid_plan", "no tasks")
    assert_error(client.post("/api/execute-parallel",
                             json={"plan": plan_of(sleep_task("a")), "budget_usd": -1}),
                 422, "invalid_request", "budget_usd")


def test_invalid_plans_list_every_problem(client):
    plan = plan_of(sleep_task("a", depends_on=["nope"]), {"id": "b"}, sleep_task("a"))
    err = assert_error(client.post("/api/execute-parallel", json={"plan": plan}), 422,
                       "invalid_plan")
    text = str(err["problems"])
    assert "nothing to run" in text and "duplicate" in text and "nope" in text
    cycle = plan_of(sleep_task("a", depends_on=["b"]), sleep_task("b", depends_on=["a"]))
    assert_error(client.post("/api/execute-parallel", json={"plan": cycle}), 422,
                 "invalid_plan", "cycle")
    assert_error(client.post("/api/execute-parallel", json={"plan": {"tasks": [], "x": 1}}),
                 422, "invalid_plan", "unknown key")


def test_message_without_a_coordinator_asks_for_a_plan(client):
    err = assert_error(client.post("/api/execute-parallel", json={"message": "build a site"}),
                       422, "coordinator_unavailable", "send a `plan`")
    assert "tasks" in err["message"]
    chat = client.post("/api/chat", json={"message": "hello", "sessionKey": "s"})
    assert chat.status_code == 200
    assert chat.json()["mode"] == "serial" and "no coordinator" in chat.json()["message"]


def test_size_limits(client):
    huge = {"plan": {"tasks": [], "name": "x" * 70_000}}
    assert_error(client.post("/api/execute-parallel", json=huge), 413, "too_large", "bytes")
    many = plan_of(*[sleep_task(f"t{i}") for i in range(51)])
    assert_error(client.post("/api/execute-parallel", json={"plan": many}), 422,
                 "plan_too_large", "at most 50", "--max-tasks")


def test_unknown_ids_paths_and_parameters(client):
    assert_error(client.get("/api/execution/nope"), 404, "not_found", "nope")
    assert_error(client.get("/api/execution/nope/events"), 404, "not_found")
    assert_error(client.post("/api/execution/nope/cancel"), 404, "not_found")
    assert_error(client.get("/api/nothing"), 404, "not_found", "/openapi.json")
    assert_error(client.delete("/api/executions"), 405, "method_not_allowed")
    assert_error(client.get("/api/executions", params={"limit": 0}), 422, "invalid_request",
                 "query.limit")
    eid = start(client, plan_of(sleep_task("a", 0.01)))
    assert_error(client.get(f"/api/execution/{eid}/events", headers={"Last-Event-ID": "x"}),
                 400, "bad_request", "Last-Event-ID")


# -- sessions and secrets -------------------------------------------------------------------
def test_sessions_see_only_their_own_executions(server):
    with client_for(server, ALICE) as alice, client_for(server, BOB) as bob, \
            client_for(server, TOKEN) as operator:
        eid = start(alice, plan_of(sleep_task("a", 0.01)))
        wait_finished(alice, eid)
        assert alice.get(f"/api/execution/{eid}").json()["sessionKey"] == "alice"
        assert_error(bob.get(f"/api/execution/{eid}"), 404, "not_found")
        assert_error(bob.post(f"/api/execution/{eid}/cancel"), 404, "not_found")
        assert_error(bob.get(f"/api/execution/{eid}/events"), 404, "not_found")
        assert eid not in [i["execution_id"] for i in bob.get("/api/executions").json()["items"]]
        assert eid in [i["execution_id"] for i in alice.get("/api/executions").json()["items"]]
        assert operator.get(f"/api/execution/{eid}").status_code == 200
        assert_error(alice.get("/metrics"), 403, "forbidden", "operator token")
        r = alice.post("/api/execute-parallel",
                       json={"plan": plan_of(sleep_task("a")), "sessionKey": "bob"})
        assert_error(r, 403, "forbidden", "not your session")


def test_secrets_never_appear_in_responses_or_events(client):
    secret = "sk-live-0123456789abcdef"
    echo = {"id": "leak", "env": {"OPENAI_API_KEY": secret},
            "command": [sys.executable, "-c",
                        "import os, sys; print(os.environ['OPENAI_API_KEY']); "
                        "sys.stderr.write('key=' + os.environ['OPENAI_API_KEY']); sys.exit(3)"]}
    r = client.post("/api/execute-parallel", json={"plan": plan_of(echo)})
    assert secret not in r.text
    eid = r.json()["execution_id"]
    body = wait_finished(client, eid)
    assert body["tasks"][0]["env"] == ["OPENAI_API_KEY"]
    assert "key=***" in body["results"]["leak"]["error"]
    with client.stream("GET", f"/api/execution/{eid}/events") as s:
        events_text = "".join(s.iter_text())
    listed = client.get("/api/executions").text
    for text in (r.text, str(body), events_text, listed, client.get("/metrics").text):
        assert secret not in text
        assert TOKEN not in text


# -- metrics --------------------------------------------------------------------------------
def test_metrics_count_runs_tasks_pools_and_latency(client):
    eid = start(client, plan_of(sleep_task("m1", 2, pool="gpu"), sleep_task("m2", 2, pool="gpu"),
                                pools={"gpu": {"max_concurrent": 1}}))
    text = ""
    for _ in range(100):
        text = client.get("/metrics").text
        if 'parallel_agents_pool_running{pool="gpu"} 1.0' in text:
            break
    assert 'parallel_agents_pool_utilization{pool="gpu"} 1.0' in text
    assert "parallel_agents_queue_depth" in text
    client.post(f"/api/execution/{eid}/cancel")
    wait_finished(client, eid)
    text = client.get("/metrics").text
    for name in ("parallel_agents_runs_total{status=\"cancelled\"}",
                 "parallel_agents_task_outcomes_total", "parallel_agents_tasks{status=",
                 "parallel_agents_task_duration_seconds_bucket",
                 "parallel_agents_run_makespan_seconds_count", "parallel_agents_cost_usd_total",
                 'parallel_agents_http_request_duration_seconds_count{method="POST",'
                 'route="/api/execute-parallel",status="202"}'):
        assert name in text, name


def test_openapi_needs_the_token_and_no_docs_pages_load_a_cdn(server, client):
    spec = client.get("/openapi.json").json()
    assert "/api/execute-parallel" in spec["paths"] and "/openapi.json" not in spec["paths"]
    with client_for(server, token=None) as anon:
        assert_error(anon.get("/openapi.json"), 401, "unauthorized", "Bearer")
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        assert_error(client.get(path), 404, "not_found")
    page = client.get("/")
    assert page.status_code == 200 and "app.js" in page.text
    assert client.get("/static/app.js").status_code == 200
