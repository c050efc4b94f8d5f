"""Coordinator test helpers: scripted planners (FunctionProvider) and a file-writing task runner."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from parallel_agents.agents import TaskContext, TaskOutput
from parallel_agents.providers.base import ChatRequest, FunctionProvider


def planner(*answers: str) -> FunctionProvider:
    """A provider that answers the planning request(s) with these texts, in order."""
    replies = list(answers)

    def handler(request: ChatRequest) -> str:
        return replies.pop(0) if len(replies) > 1 else replies[0]

    return FunctionProvider(handler)


def plan_json(*tasks: dict[str, Any]) -> str:
    return json.dumps({"tasks": list(tasks)})


RESTAURANT = "Build a restaurant website with booking"
#: The planner's answer for RESTAURANT: the seeds' four parts, the audit after the backend.
FOUR = plan_json(
    {"id": "frontend", "agent": "frontend", "description": "Build the pages", "depends_on": []},
    {"id": "backend", "agent": "backend", "description": "Build the booking API",
     "depends_on": []},
    {"id": "schema", "agent": "database", "description": "Design the tables", "depends_on": []},
    {"id": "audit", "agent": "security", "description": "Audit the API", "depends_on": ["backend"]},
)


class FileWriter:
    """run_task double: each task writes the files given for it and answers with a text.

    This stands in for the LLM agent kind at the boundary (tests of the coordinator must not
    depend on a model); it writes real files in the run's real workspace.
    """

    def __init__(self, files: dict[str, dict[str, str]] | None = None,
                 texts: dict[str, str] | None = None, fail: set[str] | None = None) -> None:
        self.files = files or {}
        self.texts = texts or {}
        self.fail = fail or set()
        self.started: list[str] = []

    def __call__(self, spec: dict[str, Any], ctx: TaskContext) -> Any:
        self.started.append(spec["id"])
        if spec["id"] in self.fail:
            raise RuntimeError(f"{spec['id']} broke on purpose")
        assert ctx.workspace is not None
        written = []
        for path, content in self.files.get(spec["id"], {}).items():
            target = Path(ctx.workspace) / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content, encoding="utf-8")
            written.append(path)
        text = self.texts.get(spec["id"], f"{spec['id']} done: {spec['description'][:40]}")
        return TaskOutput(output=text, files=written)


