"""`parallel-agents run "REQUEST"`: through the CLI, as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from parallel_agents.coordinator import TEMPLATES

RESTAURANT = "Build a restaurant website with booking"


def cli(*args: str, cwd: Path, **env_vars: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PARALLEL_AGENTS_PLANNER": "keywords", **env_vars}
    return subprocess.run([sys.executable, "-m", "parallel_agents", "run", *args],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def test_show_plan_prints_plan_and_timeline_and_runs_nothing(tmp_path):
    p = cli(RESTAURANT, "--show-plan", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    for word in ("frontend", "backend", "database_schema", "security_audit", "timeline",
                 "predicted: 150s"):
        assert word in p.stdout
    assert not (tmp_path / ".parallel_agents").exists()


def test_show_plan_json(tmp_path):
    p = cli(RESTAURANT, "--show-plan", "--json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    tasks = data["plan"]["tasks"]
    assert len(tasks) >= 3 and len({t["pool"] for t in tasks}) >= 2
    assert data["decision"] == "parallel"
    spans = {s["task"]: (s["start"], s["end"]) for s in data["timeline"]}
    assert spans["security_audit"][0] == spans["backend"][1]  # starts when backend ends
    assert data["predicted_makespan_seconds"] < data["predicted_serial_seconds"]


def test_template_full_stack_plan_matches_the_template(tmp_path):
    p = cli(RESTAURANT, "--template", "full_stack", "--show-plan", "--json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    expected = TEMPLATES["full_stack"](RESTAURANT)
    # the template's tasks exactly; the coordinator adds the prompt, the answer file and
    # (on the local model) its budgets
    added = ("prompt", "output_file", "max_iterations", "max_tokens")
    got = [{k: v for k, v in t.items() if k not in added}
           for t in data["plan"]["tasks"]]
    assert got == expected
    assert all(t["output_file"] == f"answers/{t['id']}.md" for t in data["plan"]["tasks"])
    assert data["template"] == "full_stack" and data["repairs"] == []


def test_small_request_is_serial(tmp_path):
    p = cli("Write a haiku about the sea", "--show-plan", "--json", cwd=tmp_path)
    data = json.loads(p.stdout)
    assert data["decision"] == "serial" and len(data["plan"]["tasks"]) == 1
    assert "only 1 part" in data["reason"]


def test_bad_template_and_missing_plan_file_are_clear_errors(tmp_path):
    p = cli(RESTAURANT, "--template", "fullstack", cwd=tmp_path)
    assert p.returncode == 2
    assert "unknown template 'fullstack'" in p.stderr and "Traceback" not in p.stderr
    p = cli("plan.yaml", cwd=tmp_path)  # a plan file name, not a request
    assert p.returncode == 2 and "no such plan file" in p.stderr
    (tmp_path / "p.yaml").write_text('tasks: [{id: a, command: ["true"]}]\n')
    p = cli("p.yaml", "--show-plan", cwd=tmp_path)
    assert p.returncode == 2 and "--show-plan" in p.stderr


def test_a_request_run_is_stored_and_no_store_keeps_it_in_memory(tmp_path):
    from parallel_agents.store import RunStore

    store_file = tmp_path / "elsewhere" / "runs.db"
    p = cli("Write a haiku about the sea", "--store", str(store_file), "--quiet",
            cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    with RunStore(store_file) as store:
        runs = store.list_runs()
        assert [(r["status"], r["tasks"], r["succeeded"]) for r in runs] == [("succeeded", 1, 1)]
        # resumable from the CLI: the stored plan is the coordinator's LLM tasks
        assert not store.load_run(runs[0]["run_id"]).has_callables
    p = cli("Write a haiku about the sea", "--no-store", "--quiet", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert not (tmp_path / ".parallel_agents" / "runs.db").exists()


def test_an_empty_request_says_so(tmp_path):
    for request in ("", "   "):
        p = cli(request, "--no-store", cwd=tmp_path)
        assert p.returncode == 2, (request, p.stderr)
        assert "the request is empty" in p.stderr and "directory" not in p.stderr
        assert "Traceback" not in p.stderr
    assert not (tmp_path / ".parallel_agents").exists()


def test_an_unknown_planner_choice_is_an_error_naming_the_valid_ones(tmp_path):
    for extra in ((), ("--template", "api")):
        p = cli(RESTAURANT, "--show-plan", *extra, cwd=tmp_path,
                PARALLEL_AGENTS_PLANNER="bogus")
        assert p.returncode == 2, p.stderr
        assert "unknown PARALLEL_AGENTS_PLANNER='bogus'" in p.stderr
        assert "'model'" in p.stderr and "'keywords'" in p.stderr
        assert "Traceback" not in p.stderr and not p.stdout
    p = cli(RESTAURANT, "--show-plan", cwd=tmp_path, PARALLEL_AGENTS_PLANNER=" Keywords ")
    assert p.returncode == 0, p.stderr


def test_show_plan_predicts_under_max_workers_and_strategy(tmp_path):
    p = cli(RESTAURANT, "--show-plan", "--json", "--max-workers", "1", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    assert data["max_workers"] == 1
    assert data["decision"] == "serial" and "max_workers 1" in data["reason"]
    assert data["predicted_makespan_seconds"] == data["predicted_serial_seconds"] == 240
    p = cli(RESTAURANT, "--show-plan", "--max-workers", "2", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "up to 2 at once" in p.stdout and "--max-workers 2" in p.stdout
    p = cli(RESTAURANT, "--show-plan", "--json", "--strategy", "sequential", cwd=tmp_path)
    assert json.loads(p.stdout)["decision"] == "serial"
    p = cli(RESTAURANT, "--show-plan", "--strategy", "pipeline", cwd=tmp_path)
    assert p.returncode == 2 and "pipeline strategy needs a stage" in p.stderr
    # The environment's limit counts like the option (as for a plan file).
    p = cli(RESTAURANT, "--show-plan", "--json", cwd=tmp_path, PARALLEL_AGENTS_MAX_WORKERS="1")
    assert json.loads(p.stdout)["max_workers"] == 1
