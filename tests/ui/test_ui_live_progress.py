"""The live display, read from a real pseudo-terminal through a terminal emulator (pyte)."""

from __future__ import annotations

import json
import re
import sys

from ui_helpers import RESTAURANT, cli_env, run_cli, run_in_pty

COLS, ROWS = 120, 40


def _run_in_pty(*args: str, scale: str) -> tuple[list[str], str, str, int]:
    """The CLI with stderr on a COLS x ROWS pty (see `run_in_pty`)."""
    return run_in_pty(*args, cols=COLS, rows=ROWS,
                      env=cli_env(PARALLEL_AGENTS_EXAMPLE_SCALE=scale))


def test_live_display_shows_running_tasks_counts_pools_and_eta_then_the_summary() -> None:
    snapshots, final, stdout, code = _run_in_pty("run", str(RESTAURANT), "--json", scale="0.02")
    assert code == 0
    # While frontend, backend and schema run together, one screen shows all three rows with
    # their pools and agent kind, the counts, pool use, ETA, speedup and cost.
    during = [s for s in snapshots if "3 running" in s]
    assert during, "no screen showed the three first tasks running:\n" + snapshots[-1]
    screen = during[-1]
    for text in ("restaurant-website", "0/4 done", "1 queued", "0 failed", "0 skipped",
                 "codegen 2/3", "database 1/2", "security 0/2", "ETA", "speedup", "cost $0",
                 "command"):
        assert text in screen, f"{text!r} missing from the live screen:\n{screen}"
    rows = [line for line in screen.splitlines() if line.strip().startswith(
        ("frontend", "backend", "schema"))]
    assert len(rows) == 3, screen
    assert any("codegen" in r for r in rows) and any("database" in r for r in rows)
    # Later the audit runs alone, after the backend.
    assert any("security 1/2" in s and "3/4 done" in s for s in snapshots), snapshots[-1]
    # The live area is gone at the end; the summary table is what stays on screen.
    assert "success rate" in final and "100.0%" in final and "critical path" in final
    assert "done" not in final and "ETA" not in final
    # The ETA is an estimate of the time left: on some screen elapsed + ETA lands near the
    # real makespan (generous bounds: the machine may be loaded), and it counts down.
    makespan = json.loads(stdout)["makespan_seconds"]
    pairs = [(float(m.group(1)), float(m.group(2))) for s in snapshots
             for m in [re.search(r"elapsed ([0-9.]+)s\s+ETA ([0-9.]+)s", s)] if m]
    assert any(0.5 * makespan <= e + eta <= 2 * makespan for e, eta in pairs), (pairs, makespan)
    assert pairs[-1][1] < max(eta for _, eta in pairs)
    # stdout stayed clean JSON even though stderr was a terminal.
    record = json.loads(stdout)
    assert record["status"] == "succeeded" and set(record["tasks"]) == {
        "frontend", "backend", "schema", "security-audit"}


def test_failures_and_retries_stay_on_screen_above_the_summary(tmp_path) -> None:
    from test_ui_report import FLAKY_PLAN

    plan = tmp_path / "flaky.yaml"
    plan.write_text(FLAKY_PLAN)
    snapshots, final, _, code = _run_in_pty("run", str(plan), scale="0.02")
    assert code == 1
    assert "✗ broken failed: exit code 1: disk on fire" in final
    assert "↻ flaky failed, retrying as attempt 2: exit code 1" in final
    assert "run " in final and "partial" in final and "60.0%" in final
    assert "reason: 1 task(s) failed: broken" in final


def test_quiet_prints_nothing_on_the_terminal() -> None:
    snapshots, _, _, code = _run_in_pty("run", str(RESTAURANT), "--quiet", scale="0.005")
    assert code == 0
    assert "".join(snapshots).strip() == ""  # --quiet: nothing at all on the terminal


def test_not_a_terminal_gives_plain_lines() -> None:
    proc = run_cli("run", str(RESTAURANT), env=cli_env(PARALLEL_AGENTS_EXAMPLE_SCALE="0.005"))
    assert proc.returncode == 0, proc.stderr
    assert "\x1b[" not in proc.stderr  # no cursor movement or colour codes in a log
    for tid in ("frontend", "backend", "schema", "security-audit"):
        assert f"▶ {tid} started (attempt 1)" in proc.stderr
        assert f"✓ {tid} succeeded in" in proc.stderr
    assert "success rate" in proc.stderr and proc.stdout == ""


LIVE_SCRIPT = """
import asyncio, sys, time
from rich.console import Console
from parallel_agents import Executor, Plan, Task
from parallel_agents.agents import TaskOutput
from parallel_agents.progress import LiveProgress

def work(ctx):
    for i in range(1, 4):
        ctx.progress(f"step {i}/3 of {ctx.task.id}", i / 3)
        time.sleep(0.4)
    return TaskOutput(output="ok", cost_usd=0.25)

plan = Plan(name="priced", pools={"llm": {"max_concurrent": 2}},
            tasks=[Task(id=f"t{i}", pool="llm", run=work) for i in range(3)])
ex = Executor()
live = LiveProgress(plan, Console(stderr=True), refresh_per_second=10)
ex.subscribe(live)
live.start()
try:
    asyncio.run(ex.execute(plan))
finally:
    live.stop()
"""


def test_progress_messages_and_cost_so_far_on_the_live_screen(tmp_path) -> None:
    script = tmp_path / "live.py"
    script.write_text(LIVE_SCRIPT)
    snapshots, _, _, code = run_in_pty(cols=COLS, rows=ROWS, program=[sys.executable,
                                                                     str(script)])
    assert code == 0
    joined = "\n".join(snapshots)
    # Two slots in the pool: two rows with their latest progress message, one task queued.
    assert re.search(r"t0\s+llm\s+function\s+[0-9.]+s\s+step [123]/3 of t0", joined), joined
    assert "llm 2/2" in joined and "1 queued" in joined
    # Cost so far grows as priced tasks finish: $0.25 after the first two, $0.50 later.
    assert "cost $0.5000" in joined
    assert "cost $0.7500" not in joined or "3/3 done" in joined


def test_list_fits_an_80_column_terminal(tmp_path) -> None:
    """Ids and statuses are shown whole in a narrow terminal; a long plan name gives way."""
    plan = tmp_path / "p.yaml"
    plan.write_text("name: a-plan-name-long-enough-to-squeeze\n"
                    "tasks:\n  - {id: a, command: [python, -c, 'print(1)']}\n")
    env = cli_env(PARALLEL_AGENTS_STORE=str(tmp_path / "runs.db"))
    ran = run_cli("run", str(plan), "--json", "-q", env=env)
    run_id = json.loads(ran.stdout)["run_id"]
    _, screen, _, code = run_in_pty("list", cols=80, rows=10, env=env, on_pty="stdout")
    assert code == 0
    row = next(line for line in screen.splitlines() if run_id in line)
    assert "succeeded" in row and " a-plan-…" in row
