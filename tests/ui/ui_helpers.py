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
