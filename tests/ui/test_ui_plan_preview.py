"""`plan`: a preview in virtual time, no agent runs; and its prediction against a real run."""

from __future__ import annotations

import json

from ui_helpers import RESTAURANT, cli_env, run_cli

SCALE = 0.02  # examples/agents/build.py sleeps estimated_seconds x this


def test_plan_json_preview_of_the_example(tmp_path) -> None:
    proc = run_cli("plan", str(RESTAURANT), "--json",
                   env=cli_env(PARALLEL_AGENTS_WORKSPACE=str(tmp_path)))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["levels"] == [["frontend", "backend", "schema"], ["security-audit"]]
    assert data["predicted_makespan_seconds"] == 150  # backend 90 then the audit 60
    assert data["serial_seconds"] == 240
    assert data["critical_path"] == ["backend", "security-audit"]
    assert data["phases"] == 2
    assert data["predicted_cost_usd"] is None and "no LLM tasks" in data["cost_note"]
    starts = {row["task"]: (row["start"], row["end"]) for row in data["timeline"]}
    assert starts["security-audit"] == (90, 150) and starts["frontend"] == (0, 45)
    assert list(tmp_path.iterdir()) == []  # no agent ran: no artifact written


def test_plan_text_preview_with_limits_and_show_plan() -> None:
    proc = run_cli("plan", str(RESTAURANT), "--max-workers", "1", "--show-plan")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "valid, 4 tasks" in out and "level 2:" in out and "<- backend" in out
    assert "predicted makespan" in out and "240.00s" in out  # one worker: fully serial
    assert "serial baseline" in out and "n/a (no LLM tasks" in out
    assert "estimated_seconds: 90" in out  # --show-plan prints the validated plan


def test_plan_rejects_bad_input_clearly(tmp_path) -> None:
    proc = run_cli("plan", str(RESTAURANT), "--strategy", "fastest")
    assert proc.returncode == 2 and "unknown strategy 'fastest'" in proc.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks:\n  - id: a\n    command: [x]\n    depends_on: [b]\n")
    proc = run_cli("plan", str(bad))
    assert proc.returncode == 2 and "unknown task 'b'" in proc.stderr
    proc = run_cli("plan", str(RESTAURANT), "--strategy", "pipeline")
    assert proc.returncode == 2 and "needs a stage" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_predicted_makespan_is_within_15_percent_of_the_measured_one() -> None:
    plan = run_cli("plan", str(RESTAURANT), "--json")
    assert plan.returncode == 0, plan.stderr
    predicted = json.loads(plan.stdout)["predicted_makespan_seconds"] * SCALE
    run = run_cli("run", str(RESTAURANT), "--json", "--quiet",
                  env=cli_env(PARALLEL_AGENTS_EXAMPLE_SCALE=str(SCALE)))
    assert run.returncode == 0, run.stderr
    measured = json.loads(run.stdout)["makespan_seconds"]
    assert abs(measured - predicted) <= 0.15 * measured, (predicted, measured)


def test_text_preview_of_a_big_plan_stays_short(tmp_path) -> None:
    tasks = "".join(f"  - {{id: t{i}, command: [x], estimated_seconds: 2}}\n" for i in range(100))
    plan = tmp_path / "big.yaml"
    plan.write_text("pools:\n  default: {max_concurrent: 10}\ntasks:\n" + tasks)
    proc = run_cli("plan", str(plan))
    assert proc.returncode == 0, proc.stderr
    assert "… and 60 more (--json lists all)" in proc.stdout
    assert "… and 60 more attempts" in proc.stdout
    assert "20.00s" in proc.stdout  # 100 tasks x 2 s over 10 slots
    assert len(proc.stdout.splitlines()) < 120


LLM_PLAN = """
name: priced
prices:
  # $1 per output token and free input: a task's worst first call costs max_tokens dollars
  openai:gpt-4o-mini: {input_per_mtok: 0, output_per_mtok: 1000000}
tasks:
  - {id: one, agent: backend, prompt: "Write a haiku", model: "openai:gpt-4o-mini",
     max_tokens: 100, max_iterations: 3}
  - {id: two, prompt: "Write another", model: "openai:gpt-4o-mini", max_tokens: 50,
     max_iterations: 2, depends_on: [one]}
"""


def test_plan_predicts_the_worst_case_cost_of_llm_tasks(tmp_path) -> None:
    plan = tmp_path / "llm.yaml"
    plan.write_text(LLM_PLAN)
    proc = run_cli("plan", str(plan), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["predicted_cost_usd"] == 150.0  # 100 + 50 output tokens at $1
    assert "worst case of each LLM task's first call" in data["cost_note"]
    assert "up to 5 calls in all" in data["cost_note"]
    proc = run_cli("plan", str(plan))
    assert proc.returncode == 0, proc.stderr
    assert "$150.0000 *" in proc.stdout and "* predicted cost: worst case" in proc.stdout

    # A model with no known price is named, with how to add one; priced tasks still count.
    plan.write_text(LLM_PLAN + '  - {id: three, prompt: "x", model: "openai:mystery"}\n')
    data = json.loads(run_cli("plan", str(plan), "--json").stdout)
    assert data["predicted_cost_usd"] == 150.0
    assert "no price known for 'openai:mystery' (task three)" in data["cost_note"]
    assert "`prices:`" in data["cost_note"]
    plan.write_text('tasks:\n  - {id: three, prompt: "x", model: "openai:mystery"}\n')
    proc = run_cli("plan", str(plan))
    assert proc.returncode == 0, proc.stderr
    assert "n/a *" in proc.stdout and "no price known for 'openai:mystery'" in proc.stdout
