"""Durable runs: the SQLite run store, resume, the result cache and run workspaces.

    from parallel_agents import Executor
    from parallel_agents.store import RunStore

    store = RunStore(".parallel_agents/runs.db")
    result = await Executor(store=store).execute(plan)
    ...                                  # the process dies; later, in a new one:
    result = await Executor(store=store).resume(result.run_id)
"""

from __future__ import annotations

import os
from pathlib import Path

from .._exceptions import RunLockedError, StoreError
from .cache import cache_key
from .durable import DurableRun, RunOptions, plan_from_store
from .sqlite import SCHEMA_VERSION, RunStore, StoredAttempt, StoredRun
from .workspace import Workspace

__all__ = [
    "RunStore",
    "StoredRun",
    "StoredAttempt",
    "StoreError",
    "RunLockedError",
    "DurableRun",
    "RunOptions",
    "Workspace",
    "cache_key",
    "plan_from_store",
    "default_store_path",
    "SCHEMA_VERSION",
    "STORE_ENV",
    "store_run_loader",
]

#: Environment variable naming the store file (the `--store` option wins over it).
STORE_ENV = "PARALLEL_AGENTS_STORE"


def default_store_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """`explicit`, else $PARALLEL_AGENTS_STORE, else `.parallel_agents/runs.db` in the cwd."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(STORE_ENV)
    if env:
        return Path(env)
    return Path.cwd() / ".parallel_agents" / "runs.db"


def store_run_loader(path: str | None = None):  # noqa: ANN201 - report.RunLoader
    """A `report.register_run_loader` source: finished runs from the store at `path`.

    Returns (run_dict, plan_dict) for a finished run, None for an unknown id or no store.
    A run that has not finished (it crashed, or still runs) is an error that says to resume
    it, because its timeline is incomplete.
    """
    from .._exceptions import UsageError

    def load(run_id: str):  # noqa: ANN202
        target = default_store_path(path)
        if not target.exists():
            return None
        store = RunStore(target)
        try:
            try:
                saved = store.load_run(run_id)
            except StoreError:
                return None
        finally:
            store.close()
        if saved.result is None:
            raise UsageError(
                f"run {run_id} has not finished (status {saved.status}): finish it with "
                f"`parallel-agents resume {run_id}`, then report it")
        return saved.result, saved.plan

    return load
