"""Each task's version of each file it wrote, kept for the aggregator.

All tasks of a coordinated run share one workspace, so the file on disk is whoever wrote it
last: when two tasks write `schema.sql` at overlapping times, the first to finish may already
find the other's content there. A same-file conflict must compare what each task *wrote*, so
the versions are taken at write time (`TaskOutput.contents`, which the LLM agent's
`write_file` tool fills); only for agents that do not report them (a `run_task` function) is
the file read when the task ends.

A durable run also keeps them in the workspace (`.coordinator/versions/TASK.json`, written
before the task's success is committed, so the checkpoint taken after the task holds it): a
resumed run's aggregator gets the versions of the tasks that succeeded before the
interruption from there, not from a checkpoint that may hold another task's overwrite.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..agents import Agent, TaskContext, TaskOutput
from ..store.workspace import relative_in

__all__ = ["VERSIONS_DIR", "Snapshotting", "load_versions", "save_versions"]

VERSIONS_DIR = ".coordinator/versions"

#: task id -> workspace-relative path -> the task's version of the file
Snapshots = dict[str, dict[str, str]]


def _versions_file(workspace: Path, task_id: str) -> Path:
    # Any task id is a safe file name once quoted (coordinator ids are [a-z0-9_-] anyway).
    return Path(workspace) / VERSIONS_DIR / f"{quote(task_id, safe='-_.')}.json"


def save_versions(workspace: Path, run_id: str, task_id: str, files: dict[str, str]) -> None:
    """Keep `files` (path -> text) as `task_id`'s versions in run `run_id`'s workspace."""
    target = _versions_file(workspace, task_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps({"run_id": run_id, "task": task_id, "files": files},
                              ensure_ascii=False), encoding="utf-8")
    tmp.replace(target)


def load_versions(workspace: Path, run_id: str, task_id: str) -> dict[str, str]:
    """The versions `save_versions` kept for this run's task; {} if none (a workspace from
    before, another run's task of the same id, an unreadable file)."""
    try:
        data = json.loads(_versions_file(workspace, task_id).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("run_id") != run_id:
        return {}
    files = data.get("files")
    if not isinstance(files, dict):
        return {}
    return {k: v for k, v in files.items() if isinstance(k, str) and isinstance(v, str)}


class Snapshotting(Agent):
    """Wraps an agent: records each task's version of each file it wrote (see the module).

    `persist`: also keep them in the workspace, for a resumed run (durable runs only).
    """

    def __init__(self, inner: Agent, snapshots: Snapshots, *, persist: bool = False) -> None:
        self.inner = inner
        self.snapshots = snapshots
        self.persist = persist

    def close(self) -> None:
        self.inner.close()

    async def run(self, task: Any, ctx: TaskContext) -> Any:
        out = await self.inner.run(task, ctx)
        if isinstance(out, TaskOutput) and out.files and ctx.workspace is not None:
            root = Path(ctx.workspace)
            written = {rel: text for name, text in out.contents.items()
                       if (rel := relative_in(root, name)) is not None}
            seen: dict[str, str] = {}
            for name in out.files:
                rel = relative_in(root, name)
                if rel is None:
                    continue
                if rel in written:
                    seen[rel] = written[rel]
                    continue
                try:  # not reported at write time: as the task left it
                    seen[rel] = (root / rel).read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError):
                    continue
            self.snapshots[task.id] = seen
            if self.persist and seen:
                try:
                    save_versions(root, ctx.run_id, task.id, seen)
                except OSError:  # the versions help a later resume; the task's work stands
                    pass
        return out
