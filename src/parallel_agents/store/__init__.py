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
