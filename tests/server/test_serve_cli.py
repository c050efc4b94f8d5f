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


def test_serves_with_the_token_from_the_environment_and_stops_on_sigint() -> None:
    port = free_port()
    token = "env-token-abcdef123456"
    env = {**os.environ, "PARALLEL_AGENTS_TOKEN": token}
    proc = subprocess.Popen([*SERVE, "--port", str(port), "--log-level", "warning"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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
