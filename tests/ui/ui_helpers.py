"""Shared helpers for the UI tests: run the real CLI as a subprocess, from the project root."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESTAURANT = ROOT / "examples" / "restaurant.yaml"
# The CLI runs from the project root (the example's commands are relative to it); its run
# store goes to a scratch directory so the tests leave the checkout clean.
STORE = Path(tempfile.mkdtemp(prefix="pa-ui-store-")) / "runs.db"


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PARALLEL_AGENTS_") and k not in ("COLUMNS", "LINES")}
    env["PARALLEL_AGENTS_STORE"] = str(STORE)
    env.update(extra)
    return env


def run_in_pty(*args: str, cols: int = 120, rows: int = 40, env: dict[str, str] | None = None,
               cwd: Path = ROOT, on_pty: str = "stderr", timeout: float = 60,
               program: list[str] | None = None) -> tuple[list[str], str, str, int]:
    """Run the CLI (or `program`) with one stream (`on_pty`: stderr or stdout) on a cols x
    rows pseudo-terminal, read through a terminal emulator (pyte), the other on a pipe.
    Returns the screens seen while it ran, the final screen, the piped stream, and the
    exit code."""
    import pty
    import select
    import time

    import pyte

    master, slave = pty.openpty()
    env = {**(env or cli_env()), "TERM": "xterm-256color", "COLUMNS": str(cols),
           "LINES": str(rows)}
    streams = ({"stderr": slave, "stdout": subprocess.PIPE} if on_pty == "stderr"
               else {"stdout": slave, "stderr": subprocess.PIPE})
    argv = [*(program or [sys.executable, "-m", "parallel_agents"]), *args]
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, **streams)
    os.close(slave)
    screen = pyte.Screen(cols, rows)
    stream = pyte.ByteStream(screen)
    snapshots: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            stream.feed(chunk)
            snapshots.append("\n".join(screen.display))
        elif proc.poll() is not None:
            break
    os.close(master)
    piped = proc.stdout if on_pty == "stderr" else proc.stderr
    other = piped.read().decode() if piped else ""
    code = proc.wait(timeout=30)
    return snapshots, "\n".join(screen.display), other, code


def run_cli(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "parallel_agents", *args], cwd=cwd,
                          env=env or cli_env(), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def restaurant_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One real run of the README example with --json, shared by the report tests."""
    out = tmp_path_factory.mktemp("restaurant") / "run.json"
    proc = run_cli("run", str(RESTAURANT), "--json", "--quiet")
    assert proc.returncode == 0, proc.stderr
    out.write_text(proc.stdout)
    return out, json.loads(proc.stdout)
