"""`report` on every kind of run record: runs of LLM tasks (a file and a stored run),
records written from Python, damaged records, and runs too big to draw one lane per task."""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from pathlib import Path
from typing import Any

import matplotlib.image
import pytest

import parallel_agents as pa
from parallel_agents.providers.base import ChatResponse, FunctionProvider, Usage
from parallel_agents.report import run_record
from parallel_agents.store import RunStore
from ui_helpers import run_cli

PRICES = {"scripted:m": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}


def _llm_plan() -> pa.Plan:
    """Tasks like the coordinator's: an agent role and a prompt, no command."""
    return pa.Plan(name="llm-report", prices=PRICES,
                   pools={"codegen": pa.Pool(max_concurrent=2)}, tasks=[
        pa.Task(id="frontend", agent="frontend", prompt="Build the pages.", model="scripted:m",
                pool="codegen", output_file="answers/frontend.md"),
        pa.Task(id="backend", agent="backend", prompt="Build the API.", model="scripted:m",
                pool="codegen"),
        pa.Task(id="audit", prompt="Audit the API.", model="scripted:m", depends_on=["backend"]),
    ])


def _run_llm_plan(tmp_path: Path, store: RunStore | None = None) -> tuple[pa.Plan, Any]:
    provider = FunctionProvider(lambda request: ChatResponse(text="done", usage=Usage(300, 50)))
    plan = _llm_plan()
    result = asyncio.run(pa.Executor(providers={"scripted": provider}, store=store,
                                     workspace=tmp_path / "ws").execute(plan))
    assert result.status == "succeeded", result
    return plan, result


@pytest.fixture(scope="module")
def llm_record(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("llm")
    plan, result = _run_llm_plan(tmp)
    record = run_record(result, plan)
    path = tmp / "run.json"
    path.write_text(json.dumps(record))
    return path, record


def test_report_of_a_run_of_llm_tasks(llm_record: tuple[Path, dict], tmp_path: Path) -> None:
    path, record = llm_record
    html, png = tmp_path / "r.html", tmp_path / "r.png"
    proc = run_cli("report", str(path), "--html", str(html), "--png", str(png))
    assert proc.returncode == 0, proc.stderr
    text = html.read_text()
    for tid in ("frontend", "backend", "audit"):
        assert f"/ {tid}</text>" in text and f"<td>{tid}</td>" in text
    assert "Cost per agent" in text and "frontend" in text
    assert matplotlib.image.imread(png).shape[0] > 300
    proc = run_cli("report", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "what if" in proc.stdout and "codegen: 2 → 3 workers" in proc.stdout
    assert "cost per agent" in proc.stdout


def test_report_of_a_stored_run_of_llm_tasks(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    try:
        _, result = _run_llm_plan(tmp_path, store)
    finally:
        store.close()
    proc = run_cli("report", result.run_id, "--store", str(tmp_path / "runs.db"))
    assert proc.returncode == 0, proc.stderr
    assert f"run {result.run_id}: succeeded" in proc.stdout and "what if" in proc.stdout


def test_a_record_written_from_python_without_the_plan_says_how_to_get_one(
        llm_record: tuple[Path, dict], tmp_path: Path) -> None:
    _, record = llm_record
    bare = tmp_path / "to_dict.json"
    bare.write_text(json.dumps({k: v for k, v in record.items()
                                if k not in ("plan", "max_workers")}))  # = result.to_dict()
    proc = run_cli("report", str(bare))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "has no `plan`" in proc.stderr and "older version" not in proc.stderr
    assert "run PLAN --json" in proc.stderr and "run_record(result, plan)" in proc.stderr
    assert "--store" in proc.stderr


def _damaged(record: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    copy = json.loads(json.dumps(record))
    target = copy
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return copy


@pytest.mark.parametrize(("path", "value", "named"), [
    (("makespan_seconds",), "abc", "makespan_seconds: must be a number (got 'abc')"),
    (("max_workers",), "lots", "max_workers: must be a whole number (got 'lots')"),
    (("tasks", "backend", "history"), ["x"], "tasks.backend.history[0]: must be a JSON object"),
    (("tasks", "backend", "history", 0, "started_at"), "x",
     "tasks.backend.history[0].started_at: must be a number"),
    (("tasks", "backend", "history", 0, "finished_at"), math.inf,
     "tasks.backend.history[0].finished_at: must be a finite number"),
    (("started_at",), 1e300, "started_at: must be at most 1e+12 (got 1e+300)"),
    (("plan",), "nope", "plan: must be a JSON object"),
    (("plan", "tasks"), 3, "plan is invalid"),
])
def test_a_damaged_record_is_refused_naming_the_field(
        restaurant_run: tuple[Path, dict], tmp_path: Path, path: tuple[Any, ...], value: Any,
        named: str) -> None:
    _, record = restaurant_run  # (a command plan: nothing else in the record is unusual)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_damaged(record, path, value)))  # (inf is written as Infinity)
    proc = run_cli("report", str(bad), "--html", str(tmp_path / "r.html"),
                   "--png", str(tmp_path / "r.png"))
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and named in proc.stderr, proc.stderr
    assert not (tmp_path / "r.html").exists()


def test_a_change_that_rounds_to_nothing_is_not_negative(tmp_path: Path) -> None:
    """One slot, a 1 s task and a 3 ms one: a second slot saves 3 ms, shown as 0.00s."""
    t0 = 1_800_000_000.0
    tasks = {tid: {"status": "succeeded", "pool": "work", "attempts": 1, "started_at": start,
                   "finished_at": end, "history": [{"attempt": 1, "started_at": start,
                                                    "finished_at": end, "outcome": "succeeded"}]}
             for tid, start, end in (("long", t0, t0 + 1.0), ("short", t0 + 1.0, t0 + 1.003))}
    record = {"run_id": "r1", "status": "succeeded", "strategy": "dependency",
              "started_at": t0, "finished_at": t0 + 1.003, "makespan_seconds": 1.003,
              "serial_seconds": 1.003, "critical_path_seconds": 1.0, "critical_path": ["long"],
              "speedup": 1.0, "efficiency": 1.0, "max_parallel": 1,
              "pool_utilization": {"work": 1.0}, "tasks": tasks,
              "plan": {"pools": {"work": {"max_concurrent": 1}}, "tasks": [
                  {"id": "long", "pool": "work", "command": ["true"]},
                  {"id": "short", "pool": "work", "command": ["true"]}]}}
    path = tmp_path / "run.json"
    path.write_text(json.dumps(record))
    proc = run_cli("report", str(path), "--html", str(tmp_path / "r.html"))
    assert proc.returncode == 0, proc.stderr
    html = (tmp_path / "r.html").read_text()
    proc = run_cli("report", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "work: 1 → 2 workers" in proc.stdout
    for shown in (proc.stdout, html):
        assert "-0.00s" not in shown and "0.00s" in shown


def test_the_timeline_of_a_big_run_stays_a_reasonable_size(tmp_path: Path) -> None:
    chain = [pa.Task(id=f"t{i}", run=lambda: time.sleep(0.05), pool="a",
                     depends_on=[f"t{i - 1}"] if i else []) for i in range(5)]
    rest = [pa.Task(id=f"t{i}", run=lambda: None, pool="a") for i in range(5, 400)]
    plan = pa.Plan(pools={"a": pa.Pool(max_concurrent=8)}, tasks=chain + rest)
    path = tmp_path / "run.json"
    path.write_text(json.dumps(run_record(pa.run(plan), plan), default=str))
    html, png = tmp_path / "r.html", tmp_path / "r.png"
    proc = run_cli("report", str(path), "--html", str(html), "--png", str(png))
    assert proc.returncode == 0, proc.stderr
    assert matplotlib.image.imread(png).shape[0] <= 3000
    text = html.read_text()
    assert "more tasks not drawn" in text
    assert len(re.findall(r"<td>t\d+</td>", text)) == 400  # the table lists every task
    for tid in ("t0", "t1", "t2", "t3", "t4"):  # the critical path is always drawn
        assert f"/ {tid}</text>" in text
