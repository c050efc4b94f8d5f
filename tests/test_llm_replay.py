"""--record / --replay through the LLM agent: a recorded run replays offline, identically."""

from __future__ import annotations

from pathlib import Path

import pytest

import parallel_agents as pa
from parallel_agents.providers.base import (
    ChatRequest,
    ChatResponse,
    FunctionProvider,
    ToolCall,
    Usage,
)

# providers/replay.py comes from the llm-providers branch; once merged this always runs.
pytest.importorskip("parallel_agents.providers.replay",
                    reason="providers/replay.py is not in this build")


def _plan() -> pa.Plan:
    return pa.Plan(prices={"scripted:m": {"input_per_mtok": 1, "output_per_mtok": 1}}, tasks=[
        pa.Task(id="a", agent="backend", prompt="Write app.py", model="scripted:m"),
        pa.Task(id="b", agent="docs", prompt="Document it", model="scripted:m",
                depends_on=["a"]),
    ])


def test_a_recorded_run_replays_without_the_provider(tmp_path: Path) -> None:
    def live(request: ChatRequest) -> ChatResponse:
        if request.tools and not any(m.role == "tool" for m in request.messages):
            return ChatResponse("", [ToolCall("1", "write_file",
                                              {"path": "app.py", "content": "x = 1\n"})],
                                Usage(50, 5))
        return ChatResponse(f"done after {len(request.messages)} messages", usage=Usage(60, 6))

    cassettes = tmp_path / "cassettes"
    first = pa.run(_plan(), providers={"scripted": FunctionProvider(live)},
                   workspace=tmp_path / "ws1", record_dir=cassettes)
    assert first.status == "succeeded"
    assert len(list(cassettes.glob("*.json"))) == 4

    def offline(request: ChatRequest) -> ChatResponse:
        raise AssertionError("replay must not call the provider")

    second = pa.run(_plan(), providers={"scripted": FunctionProvider(offline)},
                    workspace=tmp_path / "ws2", replay_dir=cassettes)
    assert second.status == "succeeded", {k: v.error for k, v in second.tasks.items()}
    for tid in ("a", "b"):
        assert second.tasks[tid].output == first.tasks[tid].output
        assert second.tasks[tid].usage == first.tasks[tid].usage
    assert (tmp_path / "ws2/app.py").read_text() == "x = 1\n"
