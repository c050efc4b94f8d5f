"""`parallel-agents serve` as a user runs it: a subprocess, a real port, signals."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx

SERVE = [sys.executable, "-m", "parallel_agents", "serve"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_refuses_a_public_address_without_a_token() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PARALLEL_AGENTS_TOKEN"}
    proc = subprocess.run([*SERVE, "--host", "0.0.0.0", "--port", "0"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "refusing to listen on 0.0.0.0 without a token" in proc.stderr
    assert "Traceback" not in proc.stderr
    bad = subprocess.run([*SERVE, "--session", "nocolon"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "NAME:TOKEN" in bad.stderr


def test_serves_with_the_token_from_the_environment_and_stops_on_sigint(tmp_path) -> None:
    port = free_port()
    token = "env-token-abcdef123456"
    env = {**os.environ, "PARALLEL_AGENTS_TOKEN": token}
    env.pop("PARALLEL_AGENTS_STORE", None)
    proc = subprocess.Popen([*SERVE, "--port", str(port), "--log-level", "warning"], env=env,
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.1)
        assert httpx.get(base + "/api/executions").status_code == 401
        ok = httpx.get(base + "/api/executions", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200 and ok.json()["total"] == 0
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"dashboard: http://127.0.0.1:{port}/" in err
    assert token not in err
    # Durable by default: the store's default path, in the working directory.
    store = tmp_path / ".parallel_agents" / "runs.db"
    assert f"store:     {store}" in err and store.is_file()


def test_serve_refuses_a_file_that_is_not_a_store(tmp_path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("not a database")
    proc = subprocess.run([*SERVE, "--store", str(bad)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert "is not a parallel-agents store" in proc.stderr and "Traceback" not in proc.stderr
    assert bad.read_text() == "not a database"
    both = subprocess.run([*SERVE, "--store", str(bad), "--no-store"], capture_output=True,
                          text=True, timeout=60)
    assert both.returncode == 2 and "not both" in both.stderr


def test_serve_reports_a_bad_config_file(tmp_path) -> None:
    missing = subprocess.run([*SERVE, "--config", str(tmp_path / "nope.toml")],
                             capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert missing.returncode == 2 and "no such config file" in missing.stderr
    (tmp_path / "parallel-agents.toml").write_text('[defaults]\nmodel = "gpt-4o"\n')
    bad_model = subprocess.run([*SERVE], capture_output=True, text=True, timeout=60,
                               cwd=tmp_path)
    assert bad_model.returncode == 2 and "defaults.model" in bad_model.stderr
    assert "Traceback" not in missing.stderr + bad_model.stderr


def _wait_healthy(proc: subprocess.Popen, base: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.1)


def test_serve_plans_request_texts_with_the_coordinator(tmp_path) -> None:
    """`serve` plans like `run "..."` (here the keyword analysis). The tasks use a priced
    remote model under a zero budget, so none may start: nothing leaves the machine, and the
    answer still comes back, saying why nothing was delivered."""
    port = free_port()
    env = {**os.environ, "PARALLEL_AGENTS_PLANNER": "keywords",
           "PARALLEL_AGENTS_MODEL": "openai:gpt-4o-mini"}
    env.pop("PARALLEL_AGENTS_TOKEN", None)
    env.pop("PARALLEL_AGENTS_STORE", None)
    proc = subprocess.Popen([*SERVE, "--port", str(port), "--log-level", "warning"], env=env,
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(proc, base)
        r = httpx.post(base + "/api/execute-parallel", timeout=30, json={
            "message": "Build a restaurant website with booking", "budget_usd": 0})
        assert r.status_code == 202, r.text
        assert r.json()["decision"]["mode"] == "parallel"
        execution_id = r.json()["execution_id"]
        deadline = time.monotonic() + 60
        while (body := httpx.get(f"{base}/api/execution/{execution_id}").json())[
                "status"] == "running":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert body["status"] == "failed"
        assert body["reason"].startswith("budget exhausted ($0)")
        assert "Not delivered" in body["final_response"]
        assert (tmp_path / ".parallel_agents" / "runs" / execution_id /
                "FINAL_RESPONSE.md").is_file()
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


def test_serve_refuses_a_ray_address_without_the_ray_backend() -> None:
    proc = subprocess.run([*SERVE, "--ray-address", "127.0.0.1:6379"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert "--ray-address needs --backend ray" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_serve_refuses_short_and_shared_tokens() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PARALLEL_AGENTS_TOKEN"}
    for args, words in [
            (["--token", "ab"], "--token must be at least 8 characters, got 2"),
            (["--session", "a:optok"], "--session a: its token must be at least 8 characters"),
            (["--token", "same-token-123", "--session", "a:same-token-123"],
             "--session a has the same token as the operator token"),
            (["--session", "a:same-token-123", "--session", "b:same-token-123"],
             "--session b has the same token as --session a")]:
        proc = subprocess.run([*SERVE, "--port", "0", *args], env=env, capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 2, (args, proc.stderr)
        assert words in proc.stderr and "Traceback" not in proc.stderr
        assert "same-token-123" not in proc.stderr and "optok" not in proc.stderr
