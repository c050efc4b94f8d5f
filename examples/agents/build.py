"""A stand-in agent for the example plans: works for a time proportional to the task's
estimate, then writes an artifact.

It reads the task from stdin (as every command task does), sleeps
`estimated_seconds * PARALLEL_AGENTS_EXAMPLE_SCALE` seconds (default scale 0.02, so the
restaurant plan's 150 estimated seconds take about 3 s), then writes `<task id>.md` into
$PARALLEL_AGENTS_WORKSPACE when that is set, else prints the artifact.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def main() -> int:
    payload = json.load(sys.stdin)
    task = payload["task"]
    scale = float(os.environ.get("PARALLEL_AGENTS_EXAMPLE_SCALE", "0.02"))
    time.sleep(task.get("estimated_seconds", 1.0) * scale)
    inputs = ", ".join(sorted(payload.get("inputs") or {})) or "none"
    artifact = f"# {task['id']}\n\n{task.get('description', '')}\n\nbuilt on: {inputs}\n"
    workspace = os.environ.get("PARALLEL_AGENTS_WORKSPACE")
    if workspace:
        path = Path(workspace) / f"{task['id']}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(artifact, encoding="utf-8")
        print(f"wrote {path}")
    else:
        print(artifact)
    return 0


if __name__ == "__main__":
    sys.exit(main())
