"""End to end on the REAL embedded model (SmolLM2-135M via llama.cpp), fully offline.

A request becomes a plan of >= 3 tasks in >= 2 pools (planned by the local model, repaired,
or replaced by the keyword plan when the tiny model's plan is unusable: all recorded), the
tasks run in parallel as LLM tasks on `local:`, and the run yields files and a final response.

Needs the LLM agent kind (Task.agent/prompt, agents/llm.py) and the `local:` provider
(providers/local.py, providers/registry.py); on a tree without them this module is skipped
with that reason, and it runs as soon as they are there.
"""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

from parallel_agents import Task

HAVE_LLM_STACK = "agent" in Task.model_fields and all(
    importlib.util.find_spec(m) is not None
    for m in ("parallel_agents.providers.local", "parallel_agents.providers.registry",
              "parallel_agents.agents.llm"))

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1200),
    pytest.mark.skipif(not HAVE_LLM_STACK, reason="needs the LLM agent kind and the local: "
                       "provider (issue 4) in this tree"),
]

MODEL = "local:smollm2"


def test_request_to_final_response_on_the_local_model(tmp_path, monkeypatch):
    from parallel_agents.coordinator import Coordinator
    from parallel_agents.providers.registry import get_provider

    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY",
                "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    provider = get_provider(MODEL, {})
    coordinator = Coordinator(
        provider, planner_model=MODEL.split(":", 1)[1], model=MODEL,
        workspace=tmp_path / "ws",
    )  # the coordinator's own budgets for local: tasks (LOCAL_TASK_DEFAULTS)
    out = asyncio.run(coordinator.run("Build a restaurant website with booking"))

    tasks = out.decomposition.tasks
    assert len(tasks) >= 3
    assert len({t["pool"] for t in tasks}) >= 2
    assert out.decomposition.decision == "parallel"
    assert set(out.run.tasks) == {t["id"] for t in tasks}
    assert out.run.max_parallel >= 2  # tasks overlapped in time
    assert out.run.count("succeeded") >= 1
    written = [p for p in out.aggregation.files if not p.startswith(".coordinator/")]
    assert written, out.final_response
    for path in written:
        assert (out.workspace / path).exists()
    for tid, r in out.run.tasks.items():  # every delivered answer is also a file
        if r.status == "succeeded":
            assert (out.workspace / "answers" / f"{tid}.md").read_text().strip()
    # answers are prose, never the local provider's action JSON; each task has its own file
    for tid, r in out.run.tasks.items():
        if r.status == "succeeded":
            assert isinstance(r.output, str) and '"action"' not in r.output, (tid, r.output)
            assert r.usage.get("calls", 0) <= 3  # 2 iterations, at most one re-ask
    assert not [c for c in out.conflicts if c.kind == "same_file"], out.conflicts
    assert out.final_response.startswith(("# Done", "# Partial delivery"))
    for t in tasks:
        assert f"| {t['id']} |" in out.final_response
    assert (out.workspace / "FINAL_RESPONSE.md").read_text() == out.final_response
    assert sum(r.usage.get("output_tokens", 0) for r in out.run.tasks.values()) > 0
    data = out.to_dict()
    assert {"final_response", "conflicts", "plan", "workspace", "repairs",
            "decision"} <= set(data)
