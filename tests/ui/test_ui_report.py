"""`report` from a real run's JSON record: PNG decodes, HTML holds every task, what-ifs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib.image
import pytest

from ui_helpers import run_cli

FLAKY_PLAN = """
name: flaky
pools:
  work: {max_concurrent: 1, retry_backoff_sec: 0}
tasks:
  - id: flaky
    pool: work
    max_retries: 2
    estimated_seconds: 0.2
    command:
      - python
      - -c
      - >-
        import os, sys, time; time.sleep(0.15);
        sys.exit(1 if os.environ['PARALLEL_AGENTS_ATTEMPT'] == '1' else 0)
  - id: after-flaky
    pool: work
    depends_on: [flaky]
    estimated_seconds: 0.2
    command: [python, -c, "import time; time.sleep(0.2)"]
  - id: broken
    pool: work
    estimated_seconds: 0.2
    command: [python, -c, "import sys; sys.exit('disk on fire')"]
  - id: never
    pool: work
    depends_on: [broken]
    command: [python, -c, "pass"]
  - id: side
    pool: work
    estimated_seconds: 0.2
    command: [python, -c, "import time; time.sleep(0.2)"]
"""


@pytest.fixture(scope="module")
def flaky_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("flaky")
    plan = tmp / "flaky.yaml"
    plan.write_text(FLAKY_PLAN)
    proc = run_cli("run", str(plan), "--json", "--quiet")
    assert proc.returncode == 1, proc.stderr  # one task failed for good: a partial run
    record = tmp / "run.json"
    record.write_text(proc.stdout)
    return record, json.loads(proc.stdout)


def test_run_json_embeds_the_plan_for_reports(restaurant_run) -> None:
    _, record = restaurant_run
    assert [t["id"] for t in record["plan"]["tasks"]] == [
        "frontend", "backend", "schema", "security-audit"]
    assert record["plan"]["pools"]["codegen"]["max_concurrent"] == 3


def test_html_and_png_for_a_real_run(restaurant_run, tmp_path) -> None:
    record, data = restaurant_run
    html_file, png_file = tmp_path / "report.html", tmp_path / "report.png"
    proc = run_cli("report", str(record), "--html", str(html_file), "--png", str(png_file))
    assert proc.returncode == 0, proc.stderr
    image = matplotlib.image.imread(png_file)
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 600
    assert image.std() > 0.05  # not a blank canvas
    html = html_file.read_text()
    for tid in data["tasks"]:
        assert f"/ {tid}</text>" in html  # a timeline lane each
        assert f"<td>{tid}</td>" in html  # and a row in the task table
    # One self-contained file: no scripts, stylesheets or images fetched from anywhere.
    assert not re.search(r"<(script|link|img)\b", html)
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in html
    # The critical path is drawn highlighted, the rest not.
    assert html.count('stroke-width="3"') == len(data["critical_path"]) == 2


def test_report_marks_retries_failures_and_skips(flaky_run, tmp_path) -> None:
    record, data = flaky_run
    html_file = tmp_path / "flaky.html"
    proc = run_cli("report", str(record), "--html", str(html_file))
    assert proc.returncode == 0, proc.stderr
    html = html_file.read_text()
    assert data["tasks"]["flaky"]["attempts"] == 2
    assert 'class="attempt failed"' in html  # flaky's first attempt and broken
    assert "flaky attempt 2: succeeded" in html and "#2" in html
    assert "disk on fire" in html
    assert "<td>never</td><td>work</td><td>skipped</td>" in html
    assert "skipped, never started" in html
    for tid in data["tasks"]:
        assert f"<td>{tid}</td>" in html


def test_what_if_predicts_more_workers_help_a_saturated_pool(flaky_run) -> None:
    record, data = flaky_run
    proc = run_cli("report", str(record))
    assert proc.returncode == 0, proc.stderr
    assert "success rate" in proc.stdout and "what if" in proc.stdout
    replay = float(re.search(r"replay of recorded durations: ([0-9.]+)s", proc.stdout).group(1))
    # The replay of what happened lands near the measured makespan...
    assert abs(replay - data["makespan_seconds"]) <= 0.35 * data["makespan_seconds"]
    # ...and one worker -> two is predicted to be faster in this single-slot pool.
    two = re.search(r"work: 1 → 2 workers\s*│\s*([0-9.]+)s", proc.stdout)
    assert two and float(two.group(1)) < replay * 0.85, proc.stdout
    doubled = re.search(r"every pool: twice the workers\s*│\s*([0-9.]+)s", proc.stdout)
    assert doubled and float(doubled.group(1)) == float(two.group(1))


def test_report_errors_are_clear(tmp_path) -> None:
    proc = run_cli("report", str(tmp_path / "nope.json"))
    assert proc.returncode == 2 and "no run file or known run" in proc.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    proc = run_cli("report", str(bad))
    assert proc.returncode == 2 and "invalid JSON" in proc.stderr
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"run_id": "x", "tasks": {}, "makespan_seconds": 1}))
    proc = run_cli("report", str(old))
    assert proc.returncode == 2 and "has no `plan`" in proc.stderr
    assert "Traceback" not in proc.stderr
