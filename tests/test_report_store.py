"""`report RUN_ID` finds finished runs in the durable store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "parallel_agents", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_report_by_run_id_from_the_store(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"tasks": [
        {"id": "alpha", "command": ["python", "-c", "print('a')"]},
        {"id": "beta", "depends_on": ["alpha"], "command": ["python", "-c", "print('b')"]},
    ]}))
    store = tmp_path / "runs.db"
    ran = cli("run", str(plan), "--json", "--quiet", "--store", str(store), cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    run_id = json.loads(ran.stdout)["run_id"]

    html = tmp_path / "report.html"
    rep = cli("report", run_id, "--store", str(store), "--html", str(html), cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr
    text = html.read_text()
    assert run_id in text and "alpha" in text and "beta" in text

    missing = cli("report", "no-such-run", "--store", str(store), cwd=tmp_path)
    assert missing.returncode == 2
    assert "no run file or known run" in missing.stderr and "Traceback" not in missing.stderr
