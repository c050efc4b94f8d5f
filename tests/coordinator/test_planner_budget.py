"""The planner's own LLM call is a paid call of the run: counted in its cost and tokens, and
checked against its budget before it is made.

Through the Coordinator with a scripted planner (priced as gpt-4o-mini), and through the CLI
against a loopback OpenAI-compatible server.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from coord_helpers import FOUR, RESTAURANT, FileWriter

from parallel_agents.coordinator import Coordinator
from parallel_agents.providers.base import ChatRequest, ChatResponse, FunctionProvider, Usage
from tests.fakes.openai_server import FakeLLMServer

PLANNING = Usage(1000, 500)
PLANNING_USD = (1000 * 0.15 + 500 * 0.60) / 1_000_000  # gpt-4o-mini's list price


def priced_planner(usage: Usage = PLANNING) -> FunctionProvider:
    async def answer(request: ChatRequest) -> ChatResponse:
        return ChatResponse(FOUR, usage=usage)

    return FunctionProvider(answer)


def test_the_planning_call_counts_in_the_runs_cost_and_tokens(tmp_path: Path) -> None:
    coordinator = Coordinator(priced_planner(), planner_model="gpt-4o-mini",
                              workspace=tmp_path / "ws", run_task=FileWriter())
    outcome = asyncio.run(coordinator.run(RESTAURANT))
    run = outcome.run
    assert run.status == "succeeded" and outcome.decomposition.source == "llm"
    assert abs(run.cost_usd - PLANNING_USD) < 1e-12
    assert run.usage["input_tokens"] == 1000 and run.usage["output_tokens"] == 500
    assert run.cost_by_agent == {"planner": run.cost_usd}
    record = outcome.to_dict()
    assert record["cost_usd"] > 0 and record["usage"]["input_tokens"] == 1000
    assert record["prepaid"]["label"] == "planner"
    assert record["decision"]["planning"]["model"] == "function:gpt-4o-mini"
    assert outcome.decomposition.planning == {
        "model": "function:gpt-4o-mini", "calls": 1, "usage": PLANNING.to_dict(),
        "cost_usd": PLANNING_USD}
    assert (f"- cost ${PLANNING_USD:.4f}; tokens in 1000, out 500 (planning: "
            f"${PLANNING_USD:.4f}, tokens in 1000, out 500)") in outcome.final_response


def test_a_budget_that_cannot_afford_the_planning_call_uses_the_keyword_plan(
        tmp_path: Path) -> None:
    for budget in (0.0, 0.0001):
        provider = priced_planner()
        coordinator = Coordinator(provider, planner_model="gpt-4o-mini",
                                  workspace=tmp_path / f"ws{budget}", run_task=FileWriter(),
                                  executor_options={"budget_usd": budget})
        outcome = asyncio.run(coordinator.run(RESTAURANT))
        assert provider.requests == []  # the model was never asked
        d = outcome.decomposition
        assert d.source == "keywords" and d.planning is None
        [repair] = [r for r in d.repairs if r.kind == "budget"]
        assert f"the budget is ${budget:g}" in repair.message
        assert "used the keyword plan" in repair.message
        assert outcome.run.cost_usd == 0.0 and outcome.run.prepaid is None
        assert "[budget]" in outcome.final_response
    # A price nobody knows cannot be checked against a budget either.
    provider = priced_planner()
    unknown = Coordinator(provider, planner_model="mystery-model", run_task=FileWriter(),
                          executor_options={"budget_usd": 5.0})
    d = asyncio.run(unknown.plan(RESTAURANT))
    assert provider.requests == [] and d.source == "keywords"
    assert "no price is known for the planner 'function:mystery-model'" in d.repairs[0].message


def test_what_the_planning_call_cost_leaves_less_budget_for_the_tasks(tmp_path: Path) -> None:
    """Its worst case fits the budget, so it is made; the answer costs more than the whole
    budget (a model billing far beyond the estimate): no task can start after it."""
    async def tasks(request: ChatRequest) -> ChatResponse:
        return ChatResponse("done", usage=Usage(10, 5))

    coordinator = Coordinator(priced_planner(Usage(100_000, 0)), planner_model="gpt-4o-mini",
                              model="scripted:gpt-4o-mini", workspace=tmp_path / "ws",
                              executor_options={"budget_usd": 0.01, "providers": {
                                  "scripted": FunctionProvider(tasks)}})
    outcome = asyncio.run(coordinator.run(RESTAURANT))
    run = outcome.run
    assert outcome.decomposition.source == "llm" and run.prepaid is not None
    assert abs(run.cost_usd - 0.015) < 1e-12 and run.budget_usd == 0.01
    assert all(t.status == "skipped" and "budget exhausted" in (t.error or "")
               for t in run.tasks.values())
    assert run.reason and run.reason.startswith("budget exhausted")


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARALLEL_AGENTS_")}
    env.update(FAKE_LLM_KEY="sk-fake-planner", PARALLEL_AGENTS_STORE=str(tmp_path / "runs.db"))
    return env


def test_the_cli_counts_and_budgets_the_planning_call(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "parallel_agents", "run", RESTAURANT,
                               "--json", "--no-store", *args], cwd=tmp_path, env=_env(tmp_path),
                              capture_output=True, text=True, timeout=120)

    with FakeLLMServer() as srv:
        (tmp_path / "parallel-agents.toml").write_text(srv.config_toml("gpt-4o-mini"))
        # --budget 0: no paid planning call, and it says so.
        p = run("--budget", "0")
        assert p.returncode == 1, p.stderr  # the tasks cannot afford their calls either
        assert srv.requests == []
        assert "planner: the planning call on openai:gpt-4o-mini may cost up to $" in p.stderr
        record = json.loads(p.stdout)
        assert record["decision"]["source"] == "keywords"
        assert [r["kind"] for r in record["repairs"]] == ["budget"]
        assert record["cost_usd"] == 0 and "prepaid" not in record
        # No budget: the planner is asked (its answer is no plan: the keyword plan runs),
        # and its tokens and cost are the run's. The run keeps to --max-workers 2.
        p = run("--max-workers", "2")
        assert p.returncode == 0, p.stderr
        planning = [r for r in srv.requests if "response_format" in r.body]
        assert len(planning) == 1
    record = json.loads(p.stdout)
    paid = record["prepaid"]
    assert paid["label"] == "planner" and paid["usage"]["input_tokens"] > 0
    tasks_in = sum(t["usage"]["input_tokens"] for t in record["tasks"].values())
    assert record["usage"]["input_tokens"] == tasks_in + paid["usage"]["input_tokens"]
    assert record["cost_usd"] > sum(t["cost_usd"] for t in record["tasks"].values())
    assert record["cost_by_agent"]["planner"] == round(paid["cost_usd"], 8)
    assert "(planning: $" in record["final_response"]
    assert record["max_workers"] == 2 and record["max_parallel"] <= 2
    assert "up to 2 at once under max_workers 2" in record["final_response"]
    assert "up to 3 at once" not in record["final_response"]
